"""bench coarse-screen: runs stopped after scale K, scored there, resumed past it later."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from bench import coarse_screen
from singan_tf.rundir import RunDir

SETTING = "preset=quick,iters=30,concurrent=2,jit_compile=off"


def _digests(run: RunDir, scale: int) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.scale_dir(scale).iterdir())
    }


def _screen(tmp_path, scales: int) -> dict:
    return coarse_screen.main(
        [
            *("--runs", str(tmp_path / "runs"), "--images", "rocket", "--settings", SETTING),
            *("--seeds", "0", "--scales", str(scales), "--max-size", "40", "--num", "4"),
            *("--cpu-threads", "tf", "--out", str(tmp_path / f"screen{scales}.json")),
        ]
    )


def test_screen_stops_after_scale_k_and_a_later_screen_resumes_the_run(tmp_path):
    first = _screen(tmp_path, 0)
    run = RunDir(first["rows"][0]["run"])
    assert run.finished_scales() == 1  # of 2 (25x38, 27x40): stopped after scale 0
    kept = _digests(run, 0)
    bands = first["rows"][0]["metrics"]["bandpass_swd_bands"]
    assert bands and np.all(np.isfinite(bands)) and min(bands) > 0
    # the samples of a 30-iteration coarsest scale are far from the image, yet not constant
    assert first["rows"][0]["metrics"]["diversity"] > 0.01

    second = _screen(tmp_path, 1)
    assert run.finished_scales() == 2
    # resumed, not retrained: scale 0's generator is G_0 as refined along with G_1
    # (concurrent 2) in the refined-coarser file; its own files stay as they were
    assert _digests(run, 0) == kept
    assert second["rows"][0]["metrics"]["bandpass_swd_bands"] != bands
    assert json.loads((tmp_path / "screen1.json").read_text())["summary"][0]["seeds"] == 1
