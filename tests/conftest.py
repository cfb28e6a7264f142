"""Shared fixtures: real images and one small pyramid trained once per session."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tuning timings of the tests (and of the CLIs they start) stay out of the user's cache.
os.environ["SINGAN_TF_CACHE_DIR"] = tempfile.mkdtemp(prefix="singan-tf-test-cache-")

import numpy as np
import pytest

from singan_tf.images import bundled_image, load_image

# Small enough to train in about a minute on 2 CPU cores, big enough for
# three scales (25x37, 33x49, 43x64) with the paper's formulas.
TINY_ARGS = ["--preset", "quick", "--max-size", "64", "--iters", "150", "--seed", "3", "--num-samples", "4"]


@pytest.fixture(scope="session")
def rocket() -> np.ndarray:
    """The bundled training image (SpaceX, public domain), [427, 640, 3] in [-1, 1]."""
    return load_image(bundled_image("rocket.jpg"))


@pytest.fixture(scope="session")
def hubble() -> np.ndarray:
    return load_image(bundled_image("hubble_deep_field.jpg"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> str:
    """A run directory trained end to end through the CLI on the bundled image."""
    from singan_tf.cli import command_main

    out = tmp_path_factory.mktemp("runs") / "rocket"
    code = command_main("train", [*TINY_ARGS, "--out", str(out), "--no-progress"])
    assert code == 0
    return str(out)


@pytest.fixture(scope="session")
def pyramid(trained_run):
    from singan_tf.rundir import load_pyramid

    return load_pyramid(trained_run)


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
    """The session's pyramid through ``export_run`` (SavedModel + ONNX): (folder, paths)."""
    from export import export_run

    out = tmp_path_factory.mktemp("export")
    return out, export_run(trained_run, out, name="rocket")


@pytest.fixture(scope="session")
def onnx_path(trained_run, tmp_path_factory):
    """The session's pyramid exported to ONNX as model "rocket" (alone in its folder)."""
    from export import to_onnx

    return to_onnx(trained_run, tmp_path_factory.mktemp("exported"), name="rocket")


@pytest.fixture(scope="session")
def live_server(onnx_path):
    """``python -m serving``'s app on a free loopback port, in a thread; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    from serving.app import create_app
    from serving.models import discover
    from serving.rest import Limits

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(
        discover(onnx_path.parent), Limits(max_batch=8, max_pixels=200_000, max_body_bytes=2**20)
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "test server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def run_cli():
    """Run ``python -m MODULE ARGS...`` in a subprocess, quiet TensorFlow; its CompletedProcess."""
    import subprocess
    import sys

    def run(*args, timeout=120, env=None):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    return run
