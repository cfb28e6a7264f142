"""The speed issue's report in one run: per-scale training speed, and the fast preset against the paper's.

1. ms per iteration at every scale of the paper preset on the reference
   geometry (186x248), in float32 and in mixed precision (``auto``: bfloat16
   on CPUs with AVX-512-BF16, the GPU's best on a GPU), each with the XLA
   choice training makes (``--jit auto``), achieved GFLOP/s and the share
   of this machine's measured conv peak (``bench peak``, run here too).
2. The paper preset trained on the image (``--paper-run DIR``: a run that
   already exists is reused, an unfinished one is resumed - it takes hours).
3. The fast preset trained on the same image from scratch, once per seed,
   wall time measured around the whole training process.
4. Both scored alike (``singan_tf.evaluate``: patch SWD to the training
   image, diversity, reconstruction RMSE, same sample count and seeds).

    python -m bench speed-report --paper-run bench/runs/paper_rocket250 --fast preset=fast [--seeds 0 1]

Writes ``results/speed_report.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import machine_info, write_result
from bench.preset_sweep import (
    FINE_START,
    evaluate_run,
    parse_setting,
    quality_time_plot,
    run_labels,
    run_one,
)


def per_scale_speed(precision: str, iters: int, peak: dict) -> list[dict]:
    """Every scale of the paper geometry at ``precision``; ``peak`` is ``bench peak``'s result."""
    from singan_tf.config import TrainConfig
    from singan_tf.pyramid import pyramid_geometry
    from singan_tf.training import resolve_precision

    config = TrainConfig(precision=resolve_precision(precision))
    geometry = pyramid_geometry((186, 248), config.min_size, config.max_size, config.scale_factor)
    key = "bfloat16" if config.precision == "mixed_bfloat16" else "float32"
    peak_gflops = peak.get(f"conv3x3_128ch_{key}_gflops") or peak["conv3x3_128ch_float32_gflops"]
    rows = time_every_scale(config, geometry, iters)
    for row in rows:
        row["precision"] = config.precision
        row["achieved_over_peak"] = round(row["achieved_gflops"] / peak_gflops, 2)
    return rows


def time_every_scale(config, geometry, iters: int) -> list[dict]:
    """``time_scale`` at every scale of ``geometry``, with the XLA choice training makes there."""
    from bench.train_speed import time_scale
    from singan_tf.training import use_xla

    rows = []
    for scale, size in enumerate(geometry.sizes):
        xla = use_xla(config, size, config.scale_iters(scale))
        rows.append(time_scale(config, geometry, scale, xla, iters))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def paper_run(path: Path, image: str, max_size: int, precision: str) -> dict:
    """Train (or resume, or reuse) the paper-preset run; returns its manifest's timing."""
    manifest = path / "pyramid.json"
    data = json.loads(manifest.read_text()) if manifest.is_file() else None
    done = data is not None and len(data["scales"]) == len(data["geometry"]["sizes"])
    if not done:
        args = [
            *([image] if image else []),
            "--out",
            str(path),
            "--preset",
            "paper",
            "--max-size",
            str(max_size),
            "--precision",
            precision,
            "--checkpoint-every",
            "25",
            "--no-progress",
        ]
        if manifest.is_file():
            args.append("--resume")
        subprocess.run(
            [sys.executable, "-m", "singan_tf.train", *args],
            check=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    data = json.loads(manifest.read_text())
    config = json.loads((path / "config.json").read_text())
    return {
        "run": str(path),
        "precision": config["precision"],
        "iters": config["iters"],
        "scales": [(s["size"], s["channels"], s["seconds"]) for s in data["scales"]],
        # Seconds per scale as logged; a resumed run's include only its last stretch.
        "logged_train_s": round(sum(s["seconds"] for s in data["scales"]), 1),
    }


def estimate_train_s(path: Path, iters: int) -> dict:
    """A run's training time without interruptions or neighbours: its own pyramid timed here.

    A long run is resumed and shares the machine along the way, so its
    logged seconds say little; every scale is timed now with the run's own
    config, sizes and XLA choice, and the estimate is the sum over scales
    of first call (trace) + iterations x ms/iteration.
    """
    from singan_tf.pyramid import PyramidGeometry
    from singan_tf.rundir import RunDir

    run = RunDir(path)
    config = run.read_config()
    rows = time_every_scale(config, PyramidGeometry.from_dict(run.read_manifest()["geometry"]), iters)
    total = sum(
        r["first_call_s"] + config.scale_iters(n) * r["ms_per_iter"] / 1000 for n, r in enumerate(rows)
    )
    return {"estimated_train_s": round(total, 1), "per_scale": rows}


def markdown(result: dict) -> str:
    """The report's tables, as bench/README.md shows them."""
    lines = []
    per_scale = result.get("per_scale") or {}
    if per_scale:
        lines += [
            "| scale | size | ch | GFLOP/iter | "
            + " | ".join(f"{rows[0]['precision']} ms/iter (achieved/peak)" for rows in per_scale.values())
            + " |",
            "|---|---|---|---|" + "---|" * len(per_scale),
        ]
        for cells in zip(*per_scale.values(), strict=True):
            first = cells[0]
            timings = " | ".join(
                f"{c['ms_per_iter']:.0f}{' XLA' if c['mode'] == 'xla' else ''} "
                f"({c['achieved_over_peak']:.0%})"
                for c in cells
            )
            size = "x".join(map(str, first["size"]))
            flop = f"{first['gflop_per_iter']:.1f}"
            lines.append(f"| {first['scale']} | {size} | {first['channels']} | {flop} | {timings} |")
        lines.append("")
    if "paper" in result:
        lines += [
            "| run | wall time | patch SWD (finest, middle, coarsest level) | diversity | rec. RMSE "
            f"| SWD, scales < {FINE_START} fixed |",
            "|---|---|---|---|---|---|",
        ]
        paper = result["paper"]
        estimate = paper.get("estimated_train_s")
        if not estimate:
            wall = "hours (resumable)"
        elif estimate >= 3600:
            wall = f"~{estimate / 3600:.1f} h (timed per scale)"
        else:
            wall = f"~{estimate:.0f} s (timed per scale)"
        rows = [(f"paper preset ({paper['precision']})", wall, paper)]
        for row in result.get("fast", []):
            name = ",".join(f"{k}={v}" for k, v in row["overrides"].items() if k != "max_size")
            rows.append((f"fast: {name}", f"{row['wall_s']:.0f} s", row))
        for name, wall, scores in rows:
            m, fixed = scores["metrics"], scores.get("metrics_layout_fixed")
            levels = ", ".join(f"{v:.3f}" for v in m.get("patch_swd_levels", []))
            fixed_swd = f"{fixed['patch_swd']:.3f}" if fixed else "-"
            lines.append(
                f"| {name} | {wall} | {m['patch_swd']:.3f} ({levels}) | {m['diversity']:.3f} "
                f"| {m['reconstruction_rmse']:.3f} | {fixed_swd} |"
            )
    if "summary" in result:
        summary = result["summary"]
        lines += [
            "",
            f"fast / paper patch SWD: {summary['fast_swd_over_paper']:.3f} "
            f"(target <= 1.10); longest fast run {summary['fast_wall_s_max']:.0f} s (target <= 900 s)",
        ]
    return "\n".join(lines) + "\n"


def plot(result: dict, sweeps: list[dict], path: Path) -> None:
    """The quality/time plot: the sweep's settings, the fast preset per seed, the paper preset."""
    runs = [r for sweep in sweeps for r in sweep["runs"] if sweep.get("max_size") == result["max_size"]]
    labels = run_labels(runs)
    points = [
        {"label": f"sweep: {label}", "wall_s": r["wall_s"], "marker": "o", **r["metrics"]}
        for label, r in zip(labels, runs, strict=True)
    ]
    for row in result["fast"]:
        seed = row["overrides"].get("seed", 0)
        points.append(
            {"label": f"fast preset s{seed}", "wall_s": row["wall_s"], "marker": "*", **row["metrics"]}
        )
    paper = result["paper"]
    if paper.get("estimated_train_s"):
        points.append(
            {"label": "paper preset", "wall_s": paper["estimated_train_s"], "marker": "s", **paper["metrics"]}
        )
    targets = {"swd": 1.10 * paper["metrics"]["patch_swd"], "wall_s": 900}
    machine = result["machine"]
    title = (
        f"{result['max_size']} px, {machine['cpu']}, {machine['cores']} cores "
        "(dashed: 1.10 x paper SWD; dotted: 15 min)"
    )
    quality_time_plot(points, path, title, targets)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper-run", default="bench/runs/paper_rocket250")
    parser.add_argument("--image", default="", help="training image (default: the bundled rocket.jpg)")
    parser.add_argument("--max-size", type=int, default=250)
    parser.add_argument(
        "--fast",
        required=True,
        help="the fast run's settings, key=value,... (e.g. preset=fast, or iters=400,max_channels=32)",
    )
    parser.add_argument("--paper-precision", default="auto")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="fast-preset training seeds")
    parser.add_argument("--num", type=int, default=50, help="samples scored per run")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per scale")
    parser.add_argument("--skip-speed", action="store_true", help="only the quality comparison")
    parser.add_argument(
        "--sweep",
        nargs="*",
        default=[],
        help="preset-sweep results at the same size, drawn as the quality/time curve around the presets",
    )
    parser.add_argument("--cpu-threads", default="auto", help="as singan_tf.train's --cpu-threads")
    parser.add_argument("--out", default="bench/results/speed_report.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    out = Path(args.out)
    result: dict = {"benchmark": "speed_report", "machine": machine_info(), "max_size": args.max_size}
    if not args.skip_speed:
        # The peak in its own process, with TensorFlow's thread pools: a lone conv on every core.
        peak_out = out.with_name(out.stem + "_peak.json")
        peak_cmd = [sys.executable, "-m", "bench", "peak", "--reps", "10", "--out", str(peak_out)]
        subprocess.run(peak_cmd, check=True)
        peak = json.loads(peak_out.read_text())
        peak_out.unlink()
    # Timed like training: the thread pools python -m singan_tf.train would set.
    from singan_tf.training import configure_threads

    result["cpu_threads"] = configure_threads(args.cpu_threads)
    if not args.skip_speed:
        result["peak"], result["per_scale"] = peak, {}
        for precision in ("float32", "auto"):
            result["per_scale"][precision] = per_scale_speed(precision, args.iters, peak)
            write_result(out, result)  # every stage is kept, should a later one fail
    paper = paper_run(Path(args.paper_run), args.image, args.max_size, args.paper_precision)
    paper["metrics"] = evaluate_run(Path(args.paper_run), args.num)
    paper["metrics_layout_fixed"] = evaluate_run(Path(args.paper_run), args.num, start_scale=FINE_START)
    if not args.skip_speed:
        paper.update(estimate_train_s(Path(args.paper_run), args.iters))
    result["paper"] = paper
    write_result(out, result)
    result["fast"] = []
    for seed in args.seeds:
        overrides = {"max_size": args.max_size, **parse_setting(args.fast), "seed": seed}
        row = run_one(overrides, args.image, args.num)
        result["fast"].append(row)
        write_result(out, result)
        print(json.dumps({k: row[k] for k in ("overrides", "wall_s", "metrics")}), flush=True)
    swd = [r["metrics"]["patch_swd"] for r in result["fast"]]
    result["summary"] = {
        "paper_swd": paper["metrics"]["patch_swd"],
        "fast_swd_mean": sum(swd) / len(swd),
        "fast_swd_over_paper": round(sum(swd) / len(swd) / paper["metrics"]["patch_swd"], 3),
        "fast_wall_s_max": max(r["wall_s"] for r in result["fast"]),
    }
    write_result(out, result)
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    plot(result, [json.loads(Path(f).read_text()) for f in args.sweep], out.with_suffix(".png"))
    print(table)
    return result


if __name__ == "__main__":
    main()
