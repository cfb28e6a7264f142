"""Training many images (singan_tf/batch.py), exporting the batch, serving every model."""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from singan_tf import batch
from singan_tf.cli import command_main
from singan_tf.images import bundled_image
from singan_tf.rundir import load_pyramid

TINY = ["--preset", "quick", "--max-size", "40", "--iters", "20"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Two real photos (the bundled ones) and a file that is not an image."""
    folder = tmp_path_factory.mktemp("images")
    shutil.copy(bundled_image("rocket.jpg"), folder / "rocket.jpg")
    shutil.copy(bundled_image("hubble_deep_field.jpg"), folder / "hubble.jpg")
    (folder / "broken.png").write_text("not an image\n")
    return folder


def _files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_names_are_unique_and_kept(tmp_path):
    a, b = tmp_path / "a" / "x y.jpg", tmp_path / "b" / "x y.jpg"
    runs = batch.plan_runs([a, b], tmp_path / "runs")
    assert [r.name for r in runs] == ["x_y", "x_y-2"]
    again = batch.plan_runs([b, tmp_path / "c.png", a], tmp_path / "runs")  # other order, one more
    assert [r.name for r in again] == ["x_y-2", "c", "x_y"]
    assert batch.train_arguments("quick", iters=5, deterministic=True, seed=None) == [
        "--preset",
        "quick",
        "--iters",
        "5",
        "--deterministic",
    ]


def test_one_bad_image_does_not_stop_the_batch(images, tmp_path, capsys):
    out = tmp_path / "runs"
    code = command_main(
        "train-many", [str(images), "--out", str(out), *TINY, "--workers", "2", "--no-progress"]
    )
    assert code == batch.EXIT_PARTIAL
    summary = json.loads((out / "summary.json").read_text())
    runs = {e["name"]: e for e in summary["runs"]}
    assert {name: e["status"] for name, e in runs.items()} == {
        "broken": "failed",
        "hubble": "finished",
        "rocket": "finished",
    }
    assert (
        runs["broken"]["error"] == f"singan-tf: error: {images / 'broken.png'}: not an image Pillow can read"
    )
    assert summary["counts"] == {"failed": 1, "finished": 2}
    for name in ("hubble", "rocket"):
        pyramid = load_pyramid(out / name)
        assert pyramid.num_scales == runs[name]["scales"] >= 2
        assert pyramid.sample(2, seed=0).shape[0] == 2
    table = capsys.readouterr().out
    assert "broken  failed" in table and "not an image Pillow can read" in table

    # One export for the batch: every finished run, one models.config listing them all.
    from export.__main__ import main as export_main

    exported = tmp_path / "exported"
    assert export_main([str(out), "--out", str(exported), "--format", "savedmodel,onnx"]) == 0
    config = (exported / "savedmodel" / "models.config").read_text()
    assert config.count("config {") == 2 and 'name: "hubble"' in config and 'name: "rocket"' in config
    assert export_main([str(out), "--out", str(exported), "--name", "x"]) == 2  # a batch names its models

    # ... and one endpoint serves them all.
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.models import discover

    client = TestClient(create_app(discover(exported)))
    for name in ("hubble", "rocket"):
        status = client.get(f"/v1/models/{name}").json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE", status


def test_a_killed_batch_resumes_without_retraining(images, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for name in ("hubble.jpg", "rocket.jpg"):
        shutil.copy(images / name, good / name)
    out = tmp_path / "runs"
    args = [str(good), "--out", str(out), "--preset", "quick", "--max-size", "40", "--iters", "60"]
    args += ["--checkpoint-every", "10", "--workers", "1", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "singan_tf", "train-many", *args], start_new_session=True)
    deadline = time.monotonic() + 300
    try:  # hubble trains first (names in order, one at a time); kill during rocket's training
        while not _has_checkpoint(out / "rocket"):
            assert proc.poll() is None and time.monotonic() < deadline, (
                "the batch ended before rocket trained"
            )
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = _files(out / "hubble")
    assert json.loads((out / "hubble" / "pyramid.json").read_text())["scales"]
    rocket_before = {k: v for k, v in _files(out / "rocket").items() if k.startswith("scales/")}

    assert command_main("train-many", [*args, "--evaluate", "4"]) == 0
    entries = json.loads((out / "summary.json").read_text())["runs"]
    assert {e["name"]: e["status"] for e in entries} == {"hubble": "skipped", "rocket": "resumed"}
    for e in entries:  # --evaluate scores finished runs, skipped ones too
        report = json.loads((out / e["name"] / "eval" / "batch_num4.json").read_text())
        assert e["bandpass_swd"] == report["bandpass_swd"] > 0 and e["diversity"] == report["diversity"] > 0
    after = _files(out / "hubble")
    assert all(after.get(k) == v for k, v in finished.items())  # byte-identical, nothing retrained
    added = set(after) - set(finished)  # evaluate's report and its TensorBoard scalars only
    assert added and all(k.startswith(("eval/", "logs/events.out.tfevents")) for k in added), added
    rocket_after = _files(out / "rocket")
    assert all(rocket_after[k] == v for k, v in rocket_before.items())  # its finished scales kept
    assert "resuming from the checkpoint" in (out / "logs" / "rocket.log").read_text()
    assert load_pyramid(out / "rocket").num_scales == 2


@pytest.mark.slow
def test_ray_engine_retries_a_run_whose_worker_died(images, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway head of this test only (no token to share)
    good = tmp_path / "good"
    good.mkdir()
    for name in ("hubble.jpg", "rocket.jpg"):
        shutil.copy(images / name, good / name)
    ray_cli = str(Path(sys.executable).parent / "ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    # A head on this machine. Ray resolves 127.0.0.1 in a cluster address to the node's own IP, so the
    # head keeps that IP (a head told --node-ip-address=127.0.0.1 is unreachable for a driver here).
    head = [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2"]
    subprocess.run([*head, "--include-dashboard=false", "--disable-usage-stats"], check=True, env=env)
    out = tmp_path / "runs"
    result: dict = {}
    args = ["--preset", "quick", "--max-size", "40", "--iters", "60", "--checkpoint-every", "10"]
    worker = threading.Thread(
        target=lambda: result.update(
            batch.train_many(
                [good], out, args, engine="ray", workers=2, address=f"127.0.0.1:{port}", progress=False
            )
        )
    )
    try:
        worker.start()
        killed = _kill_the_worker_training(out / "rocket", deadline=time.monotonic() + 300)
        worker.join(timeout=600)
        assert not worker.is_alive()
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True)
    statuses = {e["name"]: e["status"] for e in result["runs"]}
    assert statuses["rocket"] == "resumed", (killed, result)  # the retry found the killed run's checkpoint
    assert statuses["hubble"] in ("finished", "resumed")
    for name in ("hubble", "rocket"):
        assert load_pyramid(out / name).num_scales >= 2
    assert "resuming from the checkpoint" in (out / "logs" / "rocket.log").read_text()


def _has_checkpoint(run_dir: Path) -> bool:
    """A published checkpoint: while one is being written, only its hidden temp file exists, and a
    kill then leaves the run nothing to resume from."""
    return any((run_dir / "checkpoints").glob("scale_*.npz"))


def _kill_the_worker_training(run_dir: Path, deadline: float) -> int:
    """SIGKILL the Ray worker whose training process writes ``run_dir``, once it checkpointed."""
    while time.monotonic() < deadline:
        if _has_checkpoint(run_dir):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    continue
                if b"singan_tf.train" in cmdline and str(run_dir).encode() in cmdline:
                    parent = int(stat.rsplit(")", 1)[1].split()[1])
                    os.kill(parent, signal.SIGKILL)
                    return parent
        time.sleep(0.2)
    raise AssertionError(f"{run_dir} never checkpointed")
