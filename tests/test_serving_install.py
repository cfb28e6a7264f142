"""singan-serving as its own install: a fresh venv from the repository's ``serving/`` folder.

The serving side must install where TensorFlow does not belong. This builds
that install the way a user's slim inference image would (``pip install
./serving``, nothing else), checks that TensorFlow, Keras and singan_tf are
not importable there, and that ``python -m serving`` answers a sample that
``serving.Client`` in the same venv reads back.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

from serving import Sampler

ROOT = Path(__file__).resolve().parents[1]


def _python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@pytest.fixture(scope="module")
def serving_venv(tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("serving-venv")
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    # A copy of the repository's serving/ folder: building in place would leave build/ in the clone.
    source = tmp_path_factory.mktemp("source") / "serving"
    skip = shutil.ignore_patterns("build", "*.egg-info", "node_modules", "__pycache__")
    shutil.copytree(ROOT / "serving", source, ignore=skip)
    result = subprocess.run(
        [_python(env_dir), "-m", "pip", "install", "-q", "--disable-pip-version-check", source],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"pip install ./serving failed:\n{result.stderr[-3000:]}"
    return env_dir


def _in_venv(env_dir: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    # cwd is outside the repository so that its folders are not importable by accident.
    return subprocess.run(
        [_python(env_dir), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_serving_install_has_no_tensorflow(serving_venv, tmp_path):
    probe = (
        "import importlib.util, json; "
        "print(json.dumps({m: importlib.util.find_spec(m) is not None "
        "for m in ('tensorflow', 'keras', 'singan_tf', 'export', 'serving', 'onnxruntime', 'fastapi')}))"
    )
    result = _in_venv(serving_venv, probe, tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found == {
        "tensorflow": False,
        "keras": False,
        "singan_tf": False,
        "export": False,
        "serving": True,
        "onnxruntime": True,
        "fastapi": True,
    }


def test_the_serving_install_answers_samples(serving_venv, onnx_path, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [_python(serving_venv), "-m", "serving", "--models", str(onnx_path.parent), "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client_code = (
            "import sys, time, numpy as np\n"
            "from serving import Client, ClientError\n"
            f"c = Client('http://127.0.0.1:{port}', 'rocket')\n"
            "deadline = time.monotonic() + 60\n"
            "while True:\n"
            "    try:\n"
            "        c.status(); break\n"
            "    except ClientError:\n"
            "        if time.monotonic() > deadline: raise\n"
            "        time.sleep(0.2)\n"
            "images = c.sample(seed=5, batch=2, scale_h=1.5)\n"
            "np.save(sys.argv[1] if len(sys.argv) > 1 else 'out.npy', images)\n"
        )
        result = _in_venv(serving_venv, client_code, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        images = np.load(tmp_path / "out.npy")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    # The same noise recipe on this side (the repository's serving, this test's onnxruntime):
    # the fresh install may hold another onnxruntime release, so allow one level of rounding.
    expected = Sampler(onnx_path).sample(seed=5, n=2, scale_h=1.5)
    assert images.shape == expected.shape
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1


def test_the_training_install_pins_the_serving_release():
    import tomllib

    import serving
    import singan_tf

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert f"singan-serving=={serving.__version__}" in project["project"]["optional-dependencies"]["serving"]
    assert serving.__version__ == singan_tf.__version__
