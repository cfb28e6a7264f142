"""The coarse scales of several settings against an anchor's, over seeds, in minutes instead of hours.

A whole 250-px run takes about an hour on 2 cores and a 400-iteration paper
anchor several; the layout that the coarsest Laplacian bands of the samples
measure is set by the coarsest scales, which train in a few minutes. For every
image, setting (``key=value,...``, as ``fast-preset``) and seed, this trains
the run directory ``RUNS/IMAGE/LABEL_sSEED`` up to scale ``--scales K`` (a run
already past it is not trained; one short of it is resumed), then scores 50
samples of its first K+1 scales, upsampled (bicubic) to the finest scale's
size, against the training image: band-pass SWD per band, patch SWD,
diversity, as ``fast-preset`` does for whole runs. Only the coarsest bands
mean much here (the finer ones lack the scales that were not trained), and
every setting is screened at the same K.

The run directories are the ones ``fast-preset`` uses with the same
``--runs``: it resumes them to the end, so a screened setting costs no more to
confirm on whole runs.

    python -m bench coarse-screen --runs bench/runs --images rocket --scales 3 \\
        --settings preset=paper,iters=400,precision=float32 preset=fast,precision=float32 \\
        --seeds 0 1 2

Writes ``results/coarse_screen.json`` and ``.md`` (or ``--out``), and with ``--sheets``
a contact sheet per image beside them (``coarse_screen_IMAGE.png``): every setting and seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import rundirs
from bench.common import IMAGES, git_commit, machine_info, run_timed, write_result


def train_to(run: Path, overrides: dict, image: str, last: int) -> float | None:
    """Train (or resume) ``run`` until scale ``last`` is written; the wall time, or None
    when the run had it already."""
    from singan_tf.rundir import RunDir

    rundir = RunDir(run)
    if rundir.exists() and rundir.finished_scales() > last:
        return None
    run.parent.mkdir(parents=True, exist_ok=True)
    wall, _ = run_timed(rundirs.train_command({**overrides, "stop_after_scale": last}, image, run))
    return wall


def score_coarse(run: Path, last: int, num: int, seed: int = 0) -> dict:
    """The metrics of ``num`` samples of the first ``last`` + 1 scales, upsampled to the finest
    scale's size (cached in the run's ``eval/``)."""
    from singan_tf import metrics

    out = run / "eval" / f"coarse_K{last}_num{num}_seed{seed}.json"
    if out.is_file():
        return json.loads(out.read_text())
    samples, image = _upsampled(run, last, num, seed)
    report = {
        "scales": last + 1,
        "bandpass_swd_bands": metrics.bandpass_swd(samples, image, seed=seed),
        "patch_swd": metrics.patch_swd(samples, image, seed=seed),
        "diversity": metrics.diversity(samples, image),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_result(out, report)
    return report


def _upsampled(run: Path, last: int, num: int, seed: int):
    """``num`` samples of the first ``last`` + 1 scales at the finest scale's size, and the image."""
    import numpy as np
    import tensorflow as tf

    from singan_tf.rundir import RunDir, load_pyramid

    image = RunDir(run).read_image()
    pyramid = load_pyramid(run, allow_partial=True).coarser(last + 1)
    samples = tf.image.resize(pyramid.sample(num, seed), image.shape[:2], method="bicubic").numpy()
    return np.clip(samples, -1.0, 1.0), image


def sheets(rows: list[dict], last: int, folder: Path, stem: str, count: int = 6) -> list[Path]:
    """Per image: one row per setting and seed (the training image, then ``count`` upsampled
    samples, seed 100), in ``folder/{stem}_{image}.png``, the rows named in a ``.txt`` beside it."""
    from singan_tf.images import contact_sheet, save_image, to_uint8

    written = []
    for image in dict.fromkeys(r["image"] for r in rows):
        tiles, names = [], []
        for row in (r for r in rows if r["image"] == image):
            samples, real = _upsampled(Path(row["run"]), last, count, seed=100)
            tiles += [to_uint8(real)] + [to_uint8(x) for x in samples]
            names.append(f"{row['setting']} seed {row['seed']}")
        path = folder / f"{stem}_{image}.png"
        save_image(contact_sheet(tiles, columns=count + 1), path)
        path.with_suffix(".txt").write_text(
            f"rows: {' | '.join(names)}; first column: the training image; scales 0-{last} only, "
            "upsampled (bicubic)\n"
        )
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="bench/runs", help="folder of the run directories (kept, reused)")
    parser.add_argument("--images", nargs="+", default=list(IMAGES), help="names of bench.common.IMAGES")
    parser.add_argument("--settings", nargs="+", required=True, help="the anchor first, then the candidates")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scales", type=int, default=3, help="the last scale trained and sampled (K)")
    parser.add_argument("--max-size", type=int, default=250)
    parser.add_argument("--num", type=int, default=50, help="samples scored per run")
    parser.add_argument(
        "--cpu-threads",
        default="auto",
        help="as singan_tf.train's (1,1: one core each, for two screens side by side); not in the label",
    )
    parser.add_argument("--sheets", action="store_true", help="a contact sheet per image")
    parser.add_argument("--out", default="bench/results/coarse_screen.json")
    args = parser.parse_args(argv)
    from singan_tf.rundir import RunDir

    out = Path(args.out)
    result = {
        "benchmark": "coarse_screen",
        "machine": machine_info(),
        "scales": args.scales,
        "settings": args.settings,
        "rows": [],
    }
    for image in args.images:
        for setting in args.settings:
            for seed in args.seeds:
                overrides = {"max_size": args.max_size, **rundirs.parse_setting(setting), "seed": seed}
                run = Path(args.runs) / image / f"{rundirs.label_of(setting)}_s{seed}"
                wall = train_to(run, {**overrides, "cpu_threads": args.cpu_threads}, image, args.scales)
                manifest = RunDir(run).read_manifest()
                row = {
                    "image": image,
                    "setting": setting,
                    "seed": seed,
                    "run": str(run),
                    "commit": git_commit(),
                    "wall_s": None,  # the scales' own seconds below: the run may have been resumed
                    "logged_s": round(sum(s["seconds"] for s in manifest["scales"][: args.scales + 1]), 1),
                    "metrics": score_coarse(run, args.scales, args.num),
                }
                result["rows"].append(row)
                done = {"image": image, "setting": setting, "seed": seed, "trained_s": wall}
                print(json.dumps(done), flush=True)
                result["summary"] = rundirs.summarise(result["rows"], args.settings)
                write_result(out, result)
    table = rundirs.quality_table(result["summary"])
    out.with_suffix(".md").write_text(table)
    if args.sheets:
        sheets(result["rows"], args.scales, out.parent, out.stem)
    print(table)
    return result


if __name__ == "__main__":
    main()
