"""serving.Client and the README's TF Serving calls against a live local endpoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from serving import Client, ClientError, Sampler

ROOT = Path(__file__).resolve().parents[1]


def test_status_metadata_sample(live_server, onnx_path):
    c = Client(live_server, "rocket")
    assert c.status()["model_version_status"][0]["state"] == "AVAILABLE"
    assert set(c.metadata()["metadata"]["signature_def"]["signature_def"]) == {"serving_default", "sample"}
    got = c.sample(seed=11, batch=2, scale_h=2.0, start_scale=1)
    np.testing.assert_array_equal(got, Sampler(onnx_path).sample(seed=11, n=2, scale_h=2.0, start_scale=1))
    assert Client(live_server, "rocket", version=1).sample(seed=11).shape[0] == 1


@pytest.mark.parametrize("row_form", [False, True])
def test_generate_on_client_noise_is_the_tf_sample(live_server, pyramid, row_form):
    c = Client(live_server, "rocket")
    image = c.generate(c.noise(seed=4, batch=2, scale_v=0.5, start_scale=1), row_form=row_form)
    want = pyramid.sample(2, seed=4, scale_v=0.5, start_scale=1)
    assert image.shape == want.shape and np.abs(image - want).max() <= 1e-4


def test_noise_from_a_metadata_file(live_server, onnx_path):
    """Against TF Serving the pyramid metadata comes from the exported NAME.json."""
    meta_file = onnx_path.with_suffix(".json")
    from_file = Client(live_server, "rocket", metadata=meta_file).noise(seed=2, scale_h=1.5)
    from_server = Client(live_server, "rocket").noise(seed=2, scale_h=1.5)
    assert from_file.keys() == from_server.keys()
    for k in from_file:
        np.testing.assert_array_equal(from_file[k], from_server[k])


def test_errors(live_server):
    with pytest.raises(ClientError) as err:
        Client(live_server, "nope").status()
    assert err.value.status == 404 and "nope" in err.value.message
    with pytest.raises(ClientError) as err:
        Client(live_server, "rocket").sample(batch=99)
    assert err.value.status == 400 and "batch must be in 1..8" in err.value.message
    with pytest.raises(ClientError) as err:
        Client(live_server, "rocket", version=7).sample()
    assert err.value.status == 404
    port = _free_port()  # closed again: nothing listens there
    with pytest.raises(ClientError, match="cannot reach") as err:
        Client(f"http://127.0.0.1:{port}", "rocket", timeout=5).status()
    assert err.value.status is None


def readme_curl_calls() -> list[str]:
    """The curl commands of README's TF Serving section, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### TF Serving", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.strip().startswith("curl ")]
    return commands


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_tf_serving_calls_work_locally(live_server, onnx_path):
    calls = readme_curl_calls()
    assert len(calls) >= 3 and any(":predict" in c for c in calls)
    host = live_server.removeprefix("http://")
    for call in calls:
        call = call.replace("localhost:8501", host).replace("/models/photo", "/models/rocket")
        r = subprocess.run(["bash", "-c", call], capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        answer = json.loads(r.stdout)
        assert "error" not in answer, (call, answer)
        if ":predict" in call:
            image = np.asarray(answer["outputs"])
            assert image.shape == (1, *Sampler(onnx_path).output_size(scale_h=2.0), 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_m_serving_runs_without_tensorflow(onnx_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--models", str(onnx_path.parent), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        c = Client(f"http://127.0.0.1:{port}", "rocket", timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert c.status()["model_version_status"][0]["state"] == "AVAILABLE"
                break
            except ClientError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        assert c.sample(seed=1).shape == (1, *Sampler(onnx_path).output_size(), 3)
        maps = Path(f"/proc/{proc.pid}/maps")
        if maps.exists():  # no TensorFlow library was ever loaded into the server
            assert "tensorflow" not in maps.read_text()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "rocket v1" in out


def test_bad_models_folder_is_one_line_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for folder in (tmp_path / "missing", tmp_path):
        r = subprocess.run(
            [sys.executable, "-m", "serving", "--models", str(folder)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "serving: error:" in r.stderr, r.stderr
