"""The benchmarks' own tools: coarse-screen's stopped and resumed runs, fast-preset's earlier rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from bench import coarse_screen
from singan_tf.rundir import RunDir

SETTING = "preset=quick,iters=30,concurrent=2,jit_compile=off"
RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


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


def _report(path, rows):
    path.write_text(json.dumps({"machine": {"cpu": "a CPU", "commit": "abc1234"}, "rows": rows}))
    return str(path)


def _row(setting, seed, bands, diversity):
    metrics = {"bandpass_swd_bands": bands, "patch_swd": 0.1, "diversity": diversity}
    row = {"image": "rocket", "setting": setting, "seed": seed, "run": "/gone", "metrics": metrics}
    return {**row, "wall_s": None, "logged_s": 3600.0}


def test_fast_preset_compares_rows_of_earlier_reports_when_the_runs_are_gone(tmp_path):
    """An anchor of another precision stands in by its own setting's name (FILE:SETTING), and the
    candidates' seeds from an earlier report; the means and ratios are over all of them."""
    from bench import fast_preset

    anchor, bf16, fast = (
        "preset=paper,iters=400",
        "preset=paper,iters=400,precision=mixed_bfloat16",
        "preset=fast",
    )
    anchors = _report(tmp_path / "a.json", [_row(bf16, 0, [0.2, 0.1], 0.4), _row(anchor, 0, [9.0, 9.0], 9.0)])
    fasts = _report(tmp_path / "f.json", [_row(fast, 0, [0.1, 0.1], 0.3), _row(fast, 1, [0.3, 0.1], 0.5)])
    result = fast_preset.main(
        [
            *("--runs", str(tmp_path / "runs"), "--images", "rocket", "--seeds", "0", "1", "--score-only"),
            *("--settings", anchor, fast, "--anchor-scores", f"{anchors}:{bf16}", "--earlier-scores", fasts),
            *("--out", str(tmp_path / "out.json")),
        ]
    )
    first = result["rows"][0]
    assert (first["setting"], first["scores_from"]["setting"], first["wall_s"]) == (anchor, bf16, None)
    assert len(result["rows"]) == 3  # anchor seed 0 (seed 1 nowhere), fast seeds 0 and 1
    candidate = result["summary"][1]
    assert candidate["seeds"] == 2 and candidate["band_ratios"] == [1.0, 1.0]
    assert candidate["diversity_ratio"] == 1.0


def test_the_speed_report_gives_each_scale_s_first_call_over_one_iteration():
    """Recomputed from a report measured on the AMX Xeon (2160ead): the first call less auto's
    steady iteration, the issue's first-call cost, in the table beside the first call."""
    from bench.speed_report import per_scale_markdown, per_scale_table

    result = json.loads((RESULTS / "speed_report_xeon_amx_2160ead.json").read_text())
    rows = per_scale_table(result["fixed"], result["torch"], result["peak"]["per_scale"], result["auto"])
    first = [r["first_call_auto_s"] for r in rows]
    steady = [r["auto_ms"] / 1e3 for r in rows]
    over = [r["first_call_over_iter_s"] for r in rows]
    assert over == pytest.approx([f - s for f, s in zip(first, steady, strict=True)], abs=1e-3)
    assert over[0] == pytest.approx(1.393, abs=1e-3) and over[8] == pytest.approx(1.433, abs=1e-3)
    table = per_scale_markdown({**result, "per_scale": rows})
    assert table[0].endswith("| first call (auto) | over one iteration |")
    assert table[2].endswith("| 1.4 s | 1.39 s |") and table[10].endswith("| 5.6 s | 1.43 s |")
