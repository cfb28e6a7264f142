"""Scoring a run directory (singan_tf/evaluation.py) with the metric registry (singan_tf/metrics.py)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from singan_tf import metrics
from singan_tf.errors import ConfigError, InputError
from singan_tf.evaluation import default_report_path, evaluate, scalars, write_report
from singan_tf.rundir import RunDir


def test_evaluate_scores_the_runs_own_samples(trained_run, pyramid):
    report = evaluate(trained_run, num=6, seed=4)
    samples = pyramid.sample(6, seed=4)
    image = RunDir(trained_run).read_image()
    # The report holds what the metric functions give on the run's samples with that seed.
    levels = metrics.patch_swd_levels(samples, image, seed=4)
    assert report["patch_swd_levels"] == pytest.approx(levels, rel=1e-5)
    assert report["patch_swd"] == pytest.approx(np.mean(levels), rel=1e-5)
    bands = metrics.bandpass_swd(samples, image, seed=4)
    assert report["bandpass_swd_bands"] == pytest.approx(bands, rel=1e-5)
    assert report["bandpass_swd_band0"] == pytest.approx(bands[0], rel=1e-5)
    assert report["diversity"] == pytest.approx(metrics.diversity(samples, image), rel=1e-5)
    assert report["reconstruction_rmse"] < 0.1
    assert (report["run"], report["num"], report["seed"], report["start_scale"]) == (trained_run, 6, 4, 0)
    # Scalars first (printed, logged), per-level lists last.
    keys = list(report)
    assert keys.index("reconstruction_rmse") < keys.index("patch_swd_levels")
    assert "patch_swd_levels" not in scalars(report) and "diversity" in scalars(report)


def test_fixing_the_layout_lowers_diversity(trained_run):
    free = evaluate(trained_run, num=6, metrics=["diversity"])
    fixed = evaluate(trained_run, num=6, start_scale=2, metrics=["diversity"])
    assert set(free) == {"run", "num", "start_scale", "seed", "diversity"}
    assert fixed["diversity"] < 0.8 * free["diversity"]


def test_a_registered_metric_is_run_by_name(trained_run, monkeypatch):
    seen = {}
    monkeypatch.setitem(metrics.METRICS, "mean_brightness", None)  # removed again after the test

    @metrics.register_metric("mean_brightness")
    def mean_brightness(inputs: metrics.MetricInputs):
        seen["shapes"] = inputs.samples.shape, inputs.image.shape, inputs.reconstruction.shape
        return {"mean_brightness": float(inputs.samples.mean())}

    report = evaluate(trained_run, num=3, metrics=["mean_brightness"])
    assert seen["shapes"] == ((3, 43, 64, 3), (43, 64, 3), (1, 43, 64, 3))
    assert -1 < report["mean_brightness"] < 1


def test_bad_requests_are_refused_before_sampling(trained_run, tmp_path):
    with pytest.raises(ConfigError, match="--num must be >= 2"):
        evaluate(trained_run, num=1)
    with pytest.raises(ConfigError, match="unknown metric fid"):
        evaluate(trained_run, num=4, metrics=["fid"])
    with pytest.raises(ConfigError, match="start scale must be in 0..2"):
        evaluate(trained_run, num=4, start_scale=3)
    with pytest.raises(InputError, match="no such Inception-V3 weights file"):
        evaluate(trained_run, num=4, inception_weights=tmp_path / "missing.h5")
    with pytest.raises(ConfigError, match="SIFID needs Inception-V3 weights"):
        evaluate(trained_run, num=4, metrics=["sifid"])


def test_write_report_is_json_and_tensorboard(tmp_path):
    report = {"run": "r", "num": 4, "start_scale": 1, "seed": 0, "diversity": 0.25, "patch_swd_levels": [0.1]}
    path = write_report(report, tmp_path / "eval" / "m.json", logs=tmp_path / "logs")
    assert json.loads(path.read_text()) == report
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temp file left
    values = {
        v.tag: (e.step, float(tf.make_ndarray(v.tensor)))
        for f in (tmp_path / "logs").glob("events.out.tfevents.*")
        for e in tf.compat.v1.train.summary_iterator(str(f))
        for v in e.summary.value
    }
    assert values == {"eval/diversity": (1, 0.25)}
    assert default_report_path("runs/x", 2, 7).as_posix() == "runs/x/eval/metrics_start2_seed7.json"


def test_evaluate_cli(trained_run, tmp_path, capsys):
    import json

    from singan_tf.cli import command_main

    out = tmp_path / "m.json"
    assert command_main("evaluate", [trained_run, "--num", "6", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["num"] == 6
    assert (
        0 < report["patch_swd"] < 1.0 and report["diversity"] > 0.05 and report["reconstruction_rmse"] < 0.1
    )
    assert "patch_swd" in capsys.readouterr().out
    assert report["patch_swd"] == pytest.approx(np.mean(report["patch_swd_levels"]))
    bands = report["bandpass_swd_bands"]
    assert len(bands) == 2 and report["bandpass_swd"] == pytest.approx(np.mean(bands))  # 43x64: 2 bands
    assert report["bandpass_swd_band0"] == bands[0] > 0
    assert command_main("evaluate", [trained_run, "--num", "6", "--start-scale", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["diversity"] < report["diversity"]
    assert command_main("evaluate", [trained_run, "--inception-weights", str(tmp_path / "none.h5")]) == 2
