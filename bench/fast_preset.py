"""The fast preset against the paper preset at 400 iterations per scale, on several images.

For every image of ``bench.common.IMAGES`` (or ``--images``), every setting
(``key=value,...`` overrides, as ``preset-sweep``) and every seed, one run
directory ``RUNS/IMAGE/LABEL_sSEED``: trained unless it is already
complete (an unfinished one is resumed), then scored by
``singan_tf.evaluate`` (50 samples): band-pass SWD per Laplacian band,
patch SWD, diversity. The first setting is the anchor; every other one
is compared with it per image, on means over seeds:

* every band's SWD <= 1.1x the anchor's,
* diversity within 15% of the anchor's,
* training time (the run's own wall time, measured around its process).

    python -m bench fast-preset --runs bench/runs \\
        --settings preset=paper,iters=400,precision=auto preset=fast \\
        --seeds 0 1 [--images rocket china gravel hubble] [--sheets]

Writes ``results/fast_preset.json`` and ``.md`` (and contact sheets with ``--sheets``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import IMAGES, git_commit, image_path, machine_info, write_result
from bench.preset_sweep import TRAIN, evaluate_run, parse_setting

BAND_TARGET = 1.10  # every band's SWD at most this times the anchor's
DIVERSITY_TOLERANCE = 0.15  # diversity within this fraction of the anchor's


def label_of(setting: str) -> str:
    return setting.replace("=", "-").replace(",", "_").replace(".", "p")


def complete(run: Path) -> bool:
    manifest = run / "pyramid.json"
    if not manifest.is_file():
        return False
    data = json.loads(manifest.read_text())
    return len(data["scales"]) == len(data["geometry"]["sizes"])


def train(run: Path, overrides: dict, image: str) -> float | None:
    """Train (or resume) ``run``; its wall time, or None when it only resumed an unfinished run."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    resumed = (run / "pyramid.json").is_file()
    if resumed:
        command = [sys.executable, "-m", "singan_tf.train", "--out", str(run), "--resume", "--no-progress"]
    else:
        run.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-c", TRAIN, json.dumps(overrides), image_path(image), str(run)]
    t0 = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    wall = time.perf_counter() - t0
    return None if resumed else wall


def score(run: Path, overrides: dict, image: str, num: int) -> dict:
    """The run trained (if needed) and scored; its row."""
    timing = run / "bench_wall.json"
    if not complete(run):
        wall = train(run, overrides, image)
        if wall is not None:
            timing.write_text(json.dumps({"wall_s": round(wall, 1), "commit": git_commit()}) + "\n")
    manifest = json.loads((run / "pyramid.json").read_text())
    recorded = json.loads(timing.read_text()) if timing.is_file() else {}
    metrics = evaluate_run(run, num, reuse=True)
    return {
        "image": image,
        "overrides": overrides,
        "run": str(run),
        "commit": recorded.get("commit"),
        # The process's wall time; runs that were resumed have only their scales' logged seconds.
        "wall_s": recorded.get("wall_s"),
        "logged_s": round(sum(s["seconds"] for s in manifest["scales"]), 1),
        "precisions": [s.get("runtime", {}).get("precision") for s in manifest["scales"]],
        "metrics": metrics,
    }


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
            walls = [r["wall_s"] or r["logged_s"] for r in runs]
            means[setting] = {
                "seeds": len(runs),
                "bands": [round(float(b), 4) for b in bands],
                "patch_swd": round(float(np.mean([r["metrics"]["patch_swd"] for r in runs])), 4),
                "diversity": round(float(np.mean([r["metrics"]["diversity"] for r in runs])), 4),
                "wall_s": round(float(np.mean(walls)), 1),
                "wall_s_max": round(float(np.max(walls)), 1),
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
                row["speedup"] = round(anchor["wall_s"] / m["wall_s"], 2)
            out.append(row)
    return out


def markdown(summary: list[dict]) -> str:
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
            f"| {r['patch_swd']:.3f} | {r['wall_s'] / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def contact_sheets(rows: list[dict], settings: list[str], folder: Path, count: int = 6) -> list[Path]:
    """Per image: the training image, then ``count`` samples of each setting's first seed, one row each."""
    from singan_tf.images import contact_sheet, save_image, to_uint8
    from singan_tf.rundir import RunDir, load_pyramid

    written = []
    for image in dict.fromkeys(r["image"] for r in rows):
        tiles, names = [], []
        for setting in settings:
            run = next((r for r in rows if r["image"] == image and r["setting"] == setting), None)
            if run is None:
                continue
            samples = load_pyramid(run["run"]).sample(count, seed=100)
            real = RunDir(run["run"]).read_image()
            tiles += [to_uint8(real)] + [to_uint8(s) for s in samples]
            names.append(setting)
        path = folder / f"fast_preset_{image}.png"
        save_image(contact_sheet(tiles, columns=count + 1), path)
        (folder / f"fast_preset_{image}.txt").write_text(
            "rows: " + " | ".join(names) + "; first column: the training image\n"
        )
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="bench/runs", help="folder of the run directories (kept, reused)")
    parser.add_argument("--images", nargs="+", default=list(IMAGES), help="names of bench.common.IMAGES")
    parser.add_argument("--settings", nargs="+", required=True, help="the anchor first, then the candidates")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-size", type=int, default=250)
    parser.add_argument("--num", type=int, default=50, help="samples scored per run")
    parser.add_argument("--sheets", action="store_true", help="write a contact sheet per image")
    parser.add_argument("--out", default="bench/results/fast_preset.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    result = {"benchmark": "fast_preset", "machine": machine_info(), "settings": args.settings, "rows": []}
    for image in args.images:
        for setting in args.settings:
            for seed in args.seeds:
                overrides = {"max_size": args.max_size, **parse_setting(setting), "seed": seed}
                run = Path(args.runs) / image / f"{label_of(setting)}_s{seed}"
                row = {"setting": setting, "seed": seed, **score(run, overrides, image, args.num)}
                result["rows"].append(row)
                print(json.dumps({k: row[k] for k in ("image", "setting", "seed", "wall_s")}), flush=True)
                result["summary"] = summarise(result["rows"], args.settings)
                write_result(out, result)
    table = markdown(result["summary"])
    out.with_suffix(".md").write_text(table)
    if args.sheets:
        contact_sheets(result["rows"], args.settings, out.parent)
    print(table)
    return result


if __name__ == "__main__":
    main()
