"""Quality against training time for several training settings: the data for choosing a fast preset.

Each setting (``key=value`` overrides of the paper preset's ``TrainConfig``,
e.g. ``iters=500`` or ``iters=500,max_channels=64``; ``preset=NAME`` starts
from another preset) trains the same image in a fresh process
(``python -m bench.train_run``, so wall time and peak RSS are its own),
then ``singan_tf.evaluation.evaluate`` scores it: patch SWD to the training
image, band-pass SWD, diversity, reconstruction RMSE. Results go to one
JSON and a plot (SWD and diversity against wall time).

    python -m bench preset-sweep --max-size 64 --settings iters=2000 iters=1000 iters=500 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.common import git_commit, machine_info, run_timed, write_result
from bench.rundirs import evaluate_run, parse_setting, train_command

# The start scale of the "layout fixed" scores: scales 0-1 follow the reconstruction.
FINE_START = 2


def run_one(overrides: dict, image: str, num: int) -> dict:
    from singan_tf.rundir import RunDir

    run = Path(tempfile.mkdtemp(prefix="singan-sweep-")) / "run"
    wall, peak_rss_mb = run_timed(train_command(overrides, image or "rocket", run))
    metrics = evaluate_run(run, num)
    manifest = RunDir(run).read_manifest()
    # The same scores with scales 0-1 following the reconstruction: the
    # global layout fixed, so they rate the finer scales' texture alone.
    fine = evaluate_run(run, num, start_scale=FINE_START) if len(manifest["scales"]) > FINE_START else None
    return {
        "commit": git_commit(),  # the code this run trained with (a sweep may span commits)
        "image": image or "bundled rocket.jpg",
        "overrides": overrides,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "scales": [(s["size"], s["channels"], s["seconds"]) for s in manifest["scales"]],
        "metrics": metrics,
        "metrics_layout_fixed": fine,
    }


def short_labels(overrides: list[dict]) -> list[str]:
    """Each run's settings that differ between the runs, e.g. ``iters=400,gp_every=3 s0``."""
    keys = [k for k in dict.fromkeys(k for o in overrides for k in o) if k != "seed"]
    varying = [k for k in keys if len({json.dumps(o.get(k)) for o in overrides}) > 1]
    return [",".join(f"{k}={o[k]}" for k in varying if k in o) + f" s{o.get('seed', 0)}" for o in overrides]


def quality_time_plot(points: list[dict], path: Path, title: str, targets: dict | None = None) -> None:
    """Patch SWD and diversity against training wall time, one marker per run.

    ``points``: dicts with ``label``, ``wall_s``, ``patch_swd``, ``diversity``
    and optionally ``marker``; ``targets``: ``swd`` and/or ``wall_s`` lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), dpi=110)
    panels = (
        (axes[0], "patch_swd", "patch SWD to the training image (lower is better)"),
        (axes[1], "diversity", "diversity"),
    )
    for ax, key, label in panels:
        for i, point in enumerate(points):
            ax.plot(
                point["wall_s"] / 60,
                point[key],
                point.get("marker", "o"),
                color=f"C{i % 10}",
                markerfacecolor=None if i < 10 else "none",  # hollow once the 10 colours repeat
                markeredgewidth=1.5,
                markersize=8,
                label=point["label"],
            )
        if targets and targets.get("wall_s"):
            ax.axvline(targets["wall_s"] / 60, color="grey", ls=":", lw=1)
        if targets and targets.get("swd") and key == "patch_swd":
            ax.axhline(targets["swd"], color="grey", ls="--", lw=1)
        if max(p["wall_s"] for p in points) > 10 * min(p["wall_s"] for p in points):
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("training wall time (min)")
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.03 + 0.035 * ((len(points) + 1) // 2), 1, 1))
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")


def run_labels(runs: list[dict]) -> list[str]:
    """``short_labels`` of sweep runs, with the commit when runs were trained by different code."""
    labels = short_labels([r["overrides"] for r in runs])
    if len({r.get("commit") for r in runs}) > 1:  # the same setting trained by different code
        labels = [f"{label} @{r.get('commit') or '?'}" for label, r in zip(labels, runs, strict=True)]
    return labels


def plot(result: dict, path: Path) -> None:
    runs = result["runs"]
    labels = run_labels(runs)
    points = [
        {"label": label, "wall_s": r["wall_s"], **{k: r["metrics"][k] for k in ("patch_swd", "diversity")}}
        for label, r in zip(labels, runs, strict=True)
    ]
    machine = result["machine"]
    common = {k: v for k, v in runs[0]["overrides"].items() if all(r["overrides"].get(k) == v for r in runs)}
    common.pop("seed", None)
    settings = ",".join(f"{k}={v}" for k, v in common.items())
    quality_time_plot(points, path, f"{settings} - {machine['cpu']}, {machine['cores']} cores")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="", help="training image (default: the bundled rocket.jpg)")
    parser.add_argument("--max-size", type=int, default=250)
    parser.add_argument("--settings", nargs="+", default=["iters=2000", "iters=1000", "iters=500"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--num", type=int, default=50, help="samples scored per run")
    parser.add_argument("--out", default="bench/results/preset_sweep.json")
    parser.add_argument("--append", action="store_true", help="add to the runs already in --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    result = {
        "benchmark": "preset_sweep",
        "max_size": args.max_size,
        "image": args.image or "bundled rocket.jpg",
        "machine": machine_info(),
        "runs": json.loads(out.read_text())["runs"] if args.append and out.is_file() else [],
    }
    for setting in args.settings:
        for seed in args.seeds:
            overrides = {"max_size": args.max_size, **parse_setting(setting), "seed": seed}
            row = run_one(overrides, args.image, args.num)
            print(json.dumps({k: row[k] for k in ("overrides", "wall_s", "metrics")}), flush=True)
            result["runs"].append(row)
            write_result(out, result)  # after every run: a long sweep keeps what it measured
    plot(result, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
