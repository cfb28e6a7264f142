"""Scoring a run directory: samples drawn, every requested metric run, one report.

``evaluate`` is the library side of ``singan-tf evaluate``; the CLI prints
and writes its report, the benchmarks call it directly. The metrics
themselves are the registry in ``singan_tf.metrics`` (docs/design.md §12).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from singan_tf.errors import ConfigError
from singan_tf.images import atomic_write_bytes
from singan_tf.metrics import DEFAULT_METRICS, METRICS, MetricInputs, check_inception_weights
from singan_tf.preflight import check_start_scale, trained_scales


def check_evaluation(
    run_dir: str | os.PathLike,
    num: int,
    start_scale: int = 0,
    metrics: Sequence[str] | None = None,
    inception_weights: str | os.PathLike | None = None,
) -> None:
    """``evaluate``'s arguments, checked without TensorFlow (the CLI asks before it loads it)."""
    if num < 2:
        raise ConfigError("--num must be >= 2 (diversity compares samples)")
    unknown = sorted(set(metrics or ()) - set(METRICS))
    if unknown:
        raise ConfigError(f"unknown metric {', '.join(unknown)} (known: {', '.join(METRICS)})")
    check_start_scale(start_scale, trained_scales(run_dir))
    if inception_weights is not None:
        check_inception_weights(inception_weights)


def evaluate(
    run_dir: str | os.PathLike,
    num: int = 50,
    seed: int = 0,
    start_scale: int = 0,
    metrics: Sequence[str] | None = None,
    inception_weights: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Score ``num`` samples of a trained run against its training image.

    Args:
        run_dir: a run directory whose training finished.
        num: samples to draw (>= 2: diversity compares them).
        seed: the samples' seed (``Pyramid.sample``) and the metrics' own.
        start_scale: scales below it follow the reconstruction (layout fixed),
            so the scores rate the finer scales alone.
        metrics: names in ``singan_tf.metrics.METRICS``; default
            ``DEFAULT_METRICS``, plus ``sifid`` when ``inception_weights`` is given.
        inception_weights: a Keras InceptionV3 (no top) weights file for SIFID.

    Returns:
        The report: ``run``, ``num``, ``start_scale``, ``seed``, then each
        metric's floats, then its per-level lists (finest first).

    Example::

        report = evaluate("runs/rocket", num=20)
        report["bandpass_swd_bands"][0]  # the finest octave's SWD
    """
    check_evaluation(run_dir, num, start_scale, metrics, inception_weights)
    from singan_tf.rundir import RunDir, load_pyramid  # TensorFlow loads here

    run = RunDir(run_dir)
    pyramid = load_pyramid(run.path)
    if metrics is None:
        metrics = [*DEFAULT_METRICS, *(["sifid"] if inception_weights is not None else [])]
    inputs = MetricInputs(
        samples=pyramid.sample(num, seed, start_scale=start_scale),
        image=run.read_image(),
        reconstruction=pyramid.reconstruct(),
        seed=seed,
        inception_weights=inception_weights,
    )
    results: dict[str, Any] = {}
    for name in metrics:
        results.update(METRICS[name](inputs))
    scalars = {k: v for k, v in results.items() if not isinstance(v, list)}
    per_level = {k: v for k, v in results.items() if isinstance(v, list)}
    return {
        "run": str(run.path),
        "num": num,
        "start_scale": start_scale,
        "seed": seed,
        **scalars,
        **per_level,
    }


def scalars(report: dict[str, Any]) -> dict[str, float]:
    """The report's metric values that are single numbers (what is printed and logged)."""
    settings = {"run", "num", "start_scale", "seed"}
    return {k: v for k, v in report.items() if k not in settings and isinstance(v, float)}


def default_report_path(run_dir: str | os.PathLike, start_scale: int, seed: int) -> Path:
    return Path(run_dir) / "eval" / f"metrics_start{start_scale}_seed{seed}.json"


def write_report(
    report: dict[str, Any], path: str | os.PathLike, logs: str | os.PathLike | None = None
) -> Path:
    """The report as JSON at ``path`` (atomically); with ``logs``, its scalars to TensorBoard
    as ``eval/<name>`` at step ``start_scale``."""
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(report, indent=2) + "\n").encode())
    if logs is not None:
        import tensorflow as tf

        with tf.summary.create_file_writer(str(logs)).as_default(step=report["start_scale"]):
            for name, value in scalars(report).items():
                tf.summary.scalar(f"eval/{name}", value)
    return path
