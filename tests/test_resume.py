"""Training you can trust: resume after kill -9, guards, determinism (issue: trust)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from singan_tf import runtime, training
from singan_tf.cli import command_main
from singan_tf.config import TrainConfig
from singan_tf.errors import ConfigError, InputError, NonFiniteLossError
from singan_tf.pyramid import geometry_for
from singan_tf.rundir import RunDir, load_pyramid
from singan_tf.training import train_pyramid

# Two scales (25x37, 33x48); the second long enough to be killed in the middle.
KILL_ARGS = [
    "--preset",
    "quick",
    "--max-size",
    "48",
    "--iters",
    "120",
    "--checkpoint-every",
    "20",
    "--seed",
    "5",
    "--num-samples",
    "2",
    "--no-progress",
    "--jit",
    "off",
]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scale_files(run: RunDir, scale: int) -> dict[str, str]:
    return {p.name: digest(p) for p in sorted(run.scale_dir(scale).iterdir())}


@pytest.mark.slow
def test_kill_minus_9_then_resume(tmp_path):
    run = RunDir(tmp_path / "run")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "singan_tf.train", *KILL_ARGS, "--out", str(run.path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    try:
        # Wait until scale 0 is finished and scale 1 has a checkpoint at iteration 40 or later.
        while time.monotonic() < deadline:
            ck = run.read_checkpoint(1) if run.exists() and run.finished_scales() == 1 else None
            if ck is not None and ck[0] >= 40:
                break
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no mid-scale checkpoint appeared")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = scale_files(run, 0)
    manifest_before = run.read_manifest()["scales"][0]
    killed_at, _ = run.read_checkpoint(1)
    assert 40 <= killed_at < 120

    # Without --resume, the user is told what to do.
    r = subprocess.run(
        [sys.executable, "-m", "singan_tf.train", *KILL_ARGS, "--out", str(run.path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2
    assert "(1 of 2 scales finished); add --resume" in r.stderr

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "singan_tf.train",
            "--out",
            str(run.path),
            "--resume",
            "--no-progress",
            "--num-samples",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert f"scale 1: resuming from the checkpoint at iteration {killed_at}" in r.stderr
    assert scale_files(run, 0) == before  # finished scales are never rewritten
    assert run.read_manifest()["scales"][0] == manifest_before
    assert run.finished_scales() == 2
    assert not run.checkpoint_path(1).exists()
    samples = load_pyramid(run.path).sample(2, seed=0)
    assert samples.shape == (2, 33, 48, 3) and np.isfinite(samples).all()


def _tiny_config(**kw) -> TrainConfig:
    base = {"max_size": 40, "iters": 20, "log_every": 5, "checkpoint_every": 10, "jit_compile": "off"}
    return TrainConfig(**{**base, **kw})


def _interrupted_in_scale_1(monkeypatch, config, image, out, checkpoint_at: int = 0) -> None:
    """Train into ``out`` and stop with Ctrl-C at the start of scale 1 (after its
    checkpoint at iteration ``checkpoint_at``, when that is > 0)."""
    original = training.ScaleTrainer.run

    def interrupted(self, start, stop, on_metrics=None, on_checkpoint=None):
        if self.scale == 1 and start == 0:
            if checkpoint_at:
                original(self, 0, checkpoint_at, on_metrics, on_checkpoint)
                on_checkpoint(checkpoint_at)
            raise KeyboardInterrupt
        return original(self, start, stop, on_metrics, on_checkpoint)

    monkeypatch.setattr(training.ScaleTrainer, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_pyramid(config, image, out)
    monkeypatch.setattr(training.ScaleTrainer, "run", original)


def test_resumed_scale_equals_uninterrupted_scale(rocket, tmp_path, monkeypatch):
    config = _tiny_config(seed=2)
    full = train_pyramid(config, rocket, tmp_path / "full")
    _interrupted_in_scale_1(monkeypatch, config, rocket, tmp_path / "part", checkpoint_at=10)
    assert RunDir(tmp_path / "part").read_checkpoint(1)[0] == 10
    resumed = train_pyramid(config, None, tmp_path / "part", resume=True)
    for a, b in zip(
        full.pyramid.generators[1].get_weights(), resumed.pyramid.generators[1].get_weights(), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_resumed_scale_counts_the_seconds_before_the_stop(rocket, tmp_path, monkeypatch):
    """The checkpoint carries the scale's training seconds so far; the finished scale's
    ``seconds`` in pyramid.json are both sessions', not only the last one's."""
    config = _tiny_config(seed=2)
    _interrupted_in_scale_1(monkeypatch, config, rocket, tmp_path / "part", checkpoint_at=10)
    run = RunDir(tmp_path / "part")
    recorded = run.read_checkpoint_runtime(1)
    assert 0 < recorded["seconds"] < 60 and recorded["precision"] == "float32"
    iteration, state = run.read_checkpoint(1)  # as if the first session had taken an hour
    run.write_checkpoint(1, iteration, state, {**recorded, "seconds": 3600.0})
    train_pyramid(config, None, run.path, resume=True)
    first, second = (s["seconds"] for s in run.read_manifest()["scales"])
    assert 3600.0 < second < 3600.0 + 60 and first < 60
    assert "seconds" not in run.read_manifest()["scales"][1]["runtime"]


def test_a_concurrent_run_keeps_what_each_scale_left_and_resumes_to_it(rocket, tmp_path, monkeypatch):
    """``concurrent=2``: scale n trains G_{n-1} too. The run directory keeps G_{n-1} as scale n
    left it, the pyramid loads it from there, and an interruption loses only the scale in
    training: the resumed run ends with the uninterrupted one's generators."""
    from singan_tf.losses import reconstruction_loss
    from singan_tf.models import build_generator
    from singan_tf.pyramid import build_pyramid

    config = _tiny_config(seed=2, max_size=56, concurrent=2)
    full = train_pyramid(config, rocket, tmp_path / "full")
    run = RunDir(tmp_path / "full")
    scales = run.read_manifest()["scales"]
    assert [s.get("refines_coarser", False) for s in scales] == [False, True, True]
    loaded = load_pyramid(run.path)
    for n in (0, 1):  # G_n as scale n+1 left it: neither its own file's weights, nor untrained
        own, refined = build_generator(32), build_generator(32)
        own.load_weights(run.generator_path(n))
        refined.load_weights(run.refined_coarser_path(n + 1))
        for a, b in zip(loaded.generators[n].get_weights(), refined.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        assert any(
            not np.array_equal(a, b) for a, b in zip(own.get_weights(), refined.get_weights(), strict=True)
        )
    for g_trained, g_loaded in zip(full.pyramid.generators, loaded.generators, strict=True):
        for a, b in zip(g_trained.get_weights(), g_loaded.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    # The finest scale's recorded reconstruction is the loaded pyramid's.
    real = build_pyramid(run.read_image(), loaded.geometry)[-1]
    rmse = float(np.sqrt(reconstruction_loss(loaded.reconstruct(), real)))
    assert rmse == pytest.approx(scales[-1]["rec_rmse"], rel=1e-4)

    _interrupted_in_scale_1(monkeypatch, config, rocket, tmp_path / "part", checkpoint_at=10)
    part = RunDir(tmp_path / "part")
    assert part.read_checkpoint(1)[0] == 10 and "coarser" in part.read_checkpoint(1)[1]
    assert not part.refined_coarser_path(1).exists()
    resumed = train_pyramid(config, None, tmp_path / "part", resume=True)
    for g_full, g_resumed in zip(full.pyramid.generators, resumed.pyramid.generators, strict=True):
        for a, b in zip(g_full.get_weights(), g_resumed.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)


def _train_cli(out, seed: int) -> None:
    """``python -m singan_tf.train --deterministic`` in a fresh process (it must choose
    TensorFlow's kernels before TensorFlow is imported)."""
    args = ["--preset", "quick", "--max-size", "40", "--iters", "20", "--jit", "off", "--no-progress"]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "singan_tf.train",
            *args,
            "--seed",
            str(seed),
            "--deterministic",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"},
    )
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_same_seed_same_model_and_samples(tmp_path):
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        _train_cli(tmp_path / name, seed)
    a, b, c = (load_pyramid(tmp_path / name) for name in "abc")
    for ga, gb in zip(a.generators, b.generators, strict=True):
        for wa, wb in zip(ga.get_weights(), gb.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(a.sample(3, seed=1), b.sample(3, seed=1))
    assert not np.array_equal(a.generators[0].get_weights()[0], c.generators[0].get_weights()[0])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(rocket, tmp_path, monkeypatch):
    original = training.ScaleTrainer.iterate

    def poisoned(self, iteration):
        metrics = dict(original(self, iteration))
        if self.scale == 1 and iteration >= 15:  # from iteration 15 of scale 1 on, the critic loss is NaN
            metrics["d_loss"] = metrics["d_loss"] * np.nan
        return metrics

    monkeypatch.setattr(training.ScaleTrainer, "iterate", poisoned)
    run = RunDir(tmp_path / "nan")
    with pytest.raises(NonFiniteLossError, match="scale 1, iteration 19: d_loss=nan"):
        train_pyramid(_tiny_config(), rocket, run)
    assert run.finished_scales() == 1
    assert run.read_checkpoint(1)[0] == 10  # the last good one (15 was never checkpointed)


def test_nan_guard_exit_code_from_cli(tmp_path, monkeypatch, capsys):
    def explode(self, start, stop, on_metrics=None, on_checkpoint=None):
        raise NonFiniteLossError(self.scale, 7, {"g_loss": float("inf")})

    monkeypatch.setattr(training.ScaleTrainer, "run", explode)
    code = command_main(
        "train", ["--preset", "quick", "--max-size", "40", "--out", str(tmp_path / "r"), "--no-progress"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "non-finite loss at scale 0, iteration 7: g_loss=inf" in err
    assert "Traceback" not in err


def test_resume_with_different_settings_is_refused(rocket, tmp_path, capsys):
    config = _tiny_config()
    run = RunDir(tmp_path / "r")
    run.initialise(config, geometry_for(config, rocket.shape[:2]), rocket[:27, :40], np.zeros((1, 25, 37, 1)))
    code = command_main("train", ["--out", str(run.path), "--resume", "--iters", "50"])
    assert code == 2
    assert "--iters 50 differs from the run's 20; a resumed run keeps its settings" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="alpha"):
        train_pyramid(config.replace(alpha=3.0), None, run, resume=True)


def test_resume_rejects_another_image(rocket, hubble, tmp_path):
    config = _tiny_config(iters=2)
    train_pyramid(config, rocket, tmp_path / "r")
    with pytest.raises(InputError, match="not the one"):
        train_pyramid(config, hubble, tmp_path / "r", resume=True)


def test_complete_run_has_nothing_to_resume(trained_run, capsys):
    assert command_main("train", ["--out", trained_run, "--resume"]) == 2
    assert "is complete (3 scales); nothing to resume" in capsys.readouterr().err


def test_memory_estimate_is_printed_and_refuses_what_cannot_fit(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(runtime, "available_memory", lambda: 256 * 2**20)
    code = command_main("train", ["--out", str(tmp_path / "r")])
    assert code == 2
    assert not (tmp_path / "r").exists()
    assert "estimated peak memory" in caplog.text
    big = runtime.estimate_memory(
        TrainConfig(max_size=1000), geometry_for(TrainConfig(max_size=1000), (1000, 1500))
    )
    small = runtime.estimate_memory(TrainConfig(), geometry_for(TrainConfig(), (1000, 1500)))
    assert big > 8 * (small - runtime.RUNTIME_BASE_BYTES)


def test_a_run_that_recorded_one_precision_resumes_with_auto(rocket, tmp_path, monkeypatch):
    """Runs written before per-scale choices stored what auto chose in config.json;
    ``--precision auto`` resumes them in that precision."""
    config = _tiny_config(iters=6, precision="mixed_bfloat16")
    _interrupted_in_scale_1(monkeypatch, config, rocket, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    resumed = train_pyramid(config.replace(precision="auto"), None, run, resume=True)
    assert run.read_config().precision == "mixed_bfloat16" == resumed.pyramid.config.precision
    records = [s["runtime"]["precision"] for s in run.read_manifest()["scales"]]
    assert records == ["mixed_bfloat16"] * len(run.read_manifest()["geometry"]["sizes"])
