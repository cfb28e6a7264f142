"""Run directories the benchmarks make, train, score and compare (shared by several scripts).

* settings: ``parse_setting`` reads ``key=value,...`` overrides, ``label_of``
  names a run folder after one;
* making runs: ``train_command`` (``bench.train_run`` in a child process, for
  ``common.run_timed``), ``complete``, ``random_run`` (untrained weights, for
  the speed benchmarks);
* scoring: ``evaluate_run`` (``singan_tf.evaluation`` with a report cache);
* comparing settings: ``earlier_rows`` (a setting's scores from an earlier
  report), ``summarise``, ``quality_table``, ``contact_sheets``.

Runs are read through ``singan_tf.rundir.RunDir``. TensorFlow and singan_tf
load inside the functions, as in ``bench.common``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bench.common import image_path

BAND_TARGET = 1.10  # every band's SWD at most this times the anchor's
DIVERSITY_TOLERANCE = 0.15  # diversity within this fraction of the anchor's


# -- settings ----------------------------------------------------------------------
def parse_setting(text: str) -> dict:
    """``iters=500,max_channels=64`` -> {"iters": 500, "max_channels": 64}."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def label_of(setting: str) -> str:
    """A setting as a folder name: ``preset=paper,iters=400`` -> ``preset-paper_iters-400``."""
    return setting.replace("=", "-").replace(",", "_").replace(".", "p")


# -- making runs -------------------------------------------------------------------
def train_command(overrides: dict, image: str, run: Path) -> list[str]:
    """The command that trains a new run directory ``run`` on ``image`` (a name of
    ``common.IMAGES`` or a path) with ``overrides`` (``bench.train_run``)."""
    return [sys.executable, "-m", "bench.train_run", json.dumps(overrides), image_path(image), str(run)]


def complete(run: Path) -> bool:
    """Whether ``run`` is a run directory whose every scale is trained."""
    from singan_tf.rundir import RunDir

    rundir = RunDir(run)
    return rundir.exists() and rundir.finished_scales() == len(rundir.read_manifest()["geometry"]["sizes"])


def random_run(path: Path) -> Path:
    """A run directory with untrained weights and the paper geometry of a 186x248 image."""
    import keras

    from singan_tf.config import TrainConfig
    from singan_tf.models import build_critic, build_generator
    from singan_tf.pyramid import pyramid_geometry
    from singan_tf.rundir import RunDir
    from singan_tf.training import draw_rec_noise

    config = TrainConfig()
    geometry = pyramid_geometry((186, 248))
    run = RunDir(path)
    keras.utils.set_random_seed(0)
    image = np.zeros((186, 248, 3), np.float32)
    run.initialise(config, geometry, image, draw_rec_noise(config, geometry.sizes[0]))
    for n in range(geometry.num_scales):
        ch = config.channels(n)
        run.write_scale(n, build_generator(ch), build_critic(ch), 0.1 if n else 1.0, {})
    return path


# -- scoring -----------------------------------------------------------------------
def evaluate_run(run: Path, num: int, seed: int = 0, start_scale: int = 0, reuse: bool = False) -> dict:
    """``singan_tf.evaluation.evaluate`` on a run directory, its report written to the run's
    ``eval/`` (and its scalars to the run's TensorBoard logs). With ``reuse``, the report
    written there earlier for the same settings, if it has the band-pass SWD."""
    from singan_tf.evaluation import evaluate, write_report
    from singan_tf.rundir import RunDir

    out = Path(run) / "eval" / f"sweep_start{start_scale}_seed{seed}.json"
    if reuse and out.is_file():
        report = json.loads(out.read_text())
        if report.get("num") == num and "bandpass_swd_bands" in report:
            return report
    report = evaluate(run, num=num, seed=seed, start_scale=start_scale)
    write_report(report, out, logs=RunDir(run).logs)
    return report


# -- comparing settings ------------------------------------------------------------
def earlier_rows(source: str | Path, setting: str, image: str, seed: int) -> list[dict]:
    """A setting's rows from an earlier report (``speed-report`` or ``fast-preset`` JSON),
    where its run is not on this disk.

    Mostly the anchor's: an anchor is hours of training on 2 cores, and its samples' quality
    does not depend on the machine that trained it; its time does, so callers estimate that
    here. Each row says where it came from (file, CPU, commit)."""
    earlier = json.loads(Path(source).read_text())
    rows = earlier.get("fast_vs_anchor", {}).get("rows") or earlier.get("rows", [])
    cpu = earlier.get("machine", {}).get("cpu")
    origin = {"file": str(source), "cpu": cpu, "commit": earlier.get("commit")}
    return [
        {**row, "scores_from": origin}
        for row in rows
        if row["image"] == image and row["setting"] == setting and row["seed"] == seed
    ]


def summarise(rows: list[dict], settings: list[str]) -> list[dict]:
    """Per image and setting: means over seeds, and the ratios to the anchor (settings[0])."""
    out = []
    images = list(dict.fromkeys(r["image"] for r in rows))
    for image in images:
        means = {}
        for setting in settings:
            runs = [r for r in rows if r["image"] == image and r["setting"] == setting]
            if not runs:
                continue
            bands = np.mean([r["metrics"]["bandpass_swd_bands"] for r in runs], axis=0)
            walls = [w for w in (r["wall_s"] or r["logged_s"] for r in runs) if w]
            means[setting] = {
                "seeds": len(runs),
                "bands": [round(float(b), 4) for b in bands],
                "patch_swd": round(float(np.mean([r["metrics"]["patch_swd"] for r in runs])), 4),
                "diversity": round(float(np.mean([r["metrics"]["diversity"] for r in runs])), 4),
                "wall_s": round(float(np.mean(walls)), 1) if walls else None,
                "wall_s_max": round(float(np.max(walls)), 1) if walls else None,
            }
        anchor = means.get(settings[0])
        for setting, m in means.items():
            row = {"image": image, "setting": setting, **m}
            if anchor and setting != settings[0]:
                ratios = [
                    b / a if a else float("inf") for b, a in zip(m["bands"], anchor["bands"], strict=False)
                ]
                row["band_ratios"] = [round(x, 3) for x in ratios]
                row["diversity_ratio"] = round(m["diversity"] / anchor["diversity"], 3)
                row["bands_ok"] = all(x <= BAND_TARGET for x in ratios)
                row["diversity_ok"] = abs(row["diversity_ratio"] - 1) <= DIVERSITY_TOLERANCE
                if anchor["wall_s"] and m["wall_s"]:
                    row["speedup"] = round(anchor["wall_s"] / m["wall_s"], 2)
            out.append(row)
    return out


def _minutes(seconds: float | None) -> str:
    return f"{seconds / 60:.1f} min" if seconds else "not timed here"


def quality_table(summary: list[dict]) -> str:
    """``summarise``'s rows as a Markdown table."""
    lines = [
        "| image | setting | seeds | band SWD, finest first (x anchor) | diversity (x anchor) | patch SWD "
        "| time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        if "band_ratios" in r:
            bands = ", ".join(
                f"{b:.3f} ({x:.2f}x)" for b, x in zip(r["bands"], r["band_ratios"], strict=True)
            )
            div = f"{r['diversity']:.3f} ({r['diversity_ratio']:.2f}x)"
            verdict = ("" if r["bands_ok"] else " **bands over**") + (
                "" if r["diversity_ok"] else " **diversity off**"
            )
        else:
            bands, div, verdict = ", ".join(f"{b:.3f}" for b in r["bands"]), f"{r['diversity']:.3f}", ""
        lines.append(
            f"| {r['image']} | {r['setting']}{verdict} | {r['seeds']} | {bands} | {div} "
            f"| {r['patch_swd']:.3f} | {_minutes(r['wall_s'])} |"
        )
    return "\n".join(lines) + "\n"


def contact_sheets(
    rows: list[dict], settings: list[str], folder: Path, count: int = 6, suffix: str = ""
) -> list[Path]:
    """Per image: the training image, then ``count`` samples of each setting's first seed, one
    row each (settings whose run is not on this disk are left out), in
    ``folder/fast_preset_{image}{suffix}.png``."""
    from singan_tf.images import contact_sheet, save_image, to_uint8
    from singan_tf.rundir import RunDir, load_pyramid

    written = []
    for image in dict.fromkeys(r["image"] for r in rows):
        tiles, names = [], []
        for setting in settings:
            run = next(
                (
                    r
                    for r in rows
                    if r["image"] == image and r["setting"] == setting and Path(r["run"]).is_dir()
                ),
                None,
            )
            if run is None:
                continue
            samples = load_pyramid(run["run"]).sample(count, seed=100)
            real = RunDir(run["run"]).read_image()
            tiles += [to_uint8(real)] + [to_uint8(s) for s in samples]
            names.append(setting)
        if not tiles:
            continue
        path = folder / f"fast_preset_{image}{suffix}.png"
        save_image(contact_sheet(tiles, columns=count + 1), path)
        (folder / f"fast_preset_{image}{suffix}.txt").write_text(
            "rows: " + " | ".join(names) + "; first column: the training image\n"
        )
        written.append(path)
    return written
