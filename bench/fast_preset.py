"""The fast preset against the paper preset at 400 iterations per scale, on several images.

For every image of ``bench.common.IMAGES`` (or ``--images``), every setting
(``key=value,...`` overrides, as ``preset-sweep``) and every seed, one run
directory ``RUNS/IMAGE/LABEL_sSEED``: trained unless it is already
complete (an unfinished one is resumed), then scored by
``singan_tf.evaluation.evaluate`` (50 samples): band-pass SWD per
Laplacian band, patch SWD, diversity. The first setting is the anchor;
every other one is compared with it per image, on means over seeds
(``bench.rundirs.summarise``):

* every band's SWD <= 1.1x the anchor's,
* diversity within 15% of the anchor's,
* training time (the run's own wall time, measured around its process).

    python -m bench fast-preset --runs bench/runs \\
        --settings preset=paper,iters=400,precision=auto preset=fast \\
        --seeds 0 1 [--images rocket china gravel hubble] [--sheets]

An anchor trained on another machine (hours on 2 cores) is not trained again:
``--anchor-scores FILE`` takes its scores from an earlier report (``speed-report``
or ``fast-preset`` JSON) wherever ``--runs`` has no complete anchor run; its
time is left out, since another machine's says nothing of this one.
``--anchor-scores FILE:SETTING`` takes the rows of SETTING there (an anchor
trained in another precision, say), recorded as such in each row.
``--earlier-scores FILE`` does the same for the other settings' runs (seeds
trained in an earlier session whose run directories are gone), time included:
it is the one recorded with them.

Writes ``results/fast_preset.json`` and ``.md`` (and contact sheets with ``--sheets``,
``fast_preset_IMAGE.png``; ``--out results/fast_preset_X.json`` names them ``fast_preset_IMAGE_X.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import rundirs
from bench.common import IMAGES, git_commit, machine_info, run_timed, write_result


def train(run: Path, overrides: dict, image: str) -> float | None:
    """Train (or resume) ``run``; its wall time, or None when it only resumed an unfinished run."""
    from singan_tf.rundir import RunDir

    resumed = RunDir(run).exists()
    if resumed:
        command = [sys.executable, "-m", "singan_tf.train", "--out", str(run), "--resume", "--no-progress"]
    else:
        run.parent.mkdir(parents=True, exist_ok=True)
        command = rundirs.train_command(overrides, image, run)
    wall, _ = run_timed(command)
    return None if resumed else wall


def score(run: Path, overrides: dict, image: str, num: int) -> dict:
    """The run trained (if needed) and scored; its row."""
    from singan_tf.rundir import RunDir

    timing = run / "bench_wall.json"
    if not rundirs.complete(run):
        wall = train(run, overrides, image)
        if wall is not None:
            timing.write_text(json.dumps({"wall_s": round(wall, 1), "commit": git_commit()}) + "\n")
    manifest = RunDir(run).read_manifest()
    recorded = json.loads(timing.read_text()) if timing.is_file() else {}
    metrics = rundirs.evaluate_run(run, num, reuse=True)
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
    parser.add_argument(
        "--score-only", action="store_true", help="train nothing: leave out runs that are not complete"
    )
    parser.add_argument(
        "--anchor-scores",
        metavar="FILE[:SETTING]",
        help="an earlier report's JSON: its anchor scores stand in where --runs has no anchor run "
        "(its rows of SETTING, when the earlier anchor differs only in what does not change "
        "quality, such as the precision it ran in)",
    )
    parser.add_argument(
        "--earlier-scores",
        nargs="+",
        default=[],
        help="earlier reports' JSON: their rows stand in for the candidates' runs that --runs lacks",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    result = {"benchmark": "fast_preset", "machine": machine_info(), "settings": args.settings, "rows": []}
    for image in args.images:
        for setting in args.settings:
            for seed in args.seeds:
                overrides = {"max_size": args.max_size, **rundirs.parse_setting(setting), "seed": seed}
                run = Path(args.runs) / image / f"{rundirs.label_of(setting)}_s{seed}"
                if not rundirs.complete(run) and setting == args.settings[0] and args.anchor_scores:
                    # another machine's time says nothing of this one
                    source, _, alias = args.anchor_scores.partition(":")
                    rows = rundirs.earlier_rows(source, alias or setting, image, seed)
                    for r in rows:
                        origin = {**r["scores_from"], "setting": r["setting"]}
                        result["rows"].append(
                            {**r, "setting": setting, "scores_from": origin, "wall_s": None, "logged_s": None}
                        )
                    print(json.dumps({"image": image, "setting": setting, "seed": seed, "scores": len(rows)}))
                    continue
                earlier = [
                    row
                    for source in args.earlier_scores
                    for row in rundirs.earlier_rows(source, setting, image, seed)
                ]
                if not rundirs.complete(run) and setting != args.settings[0] and earlier:
                    result["rows"] += earlier[:1]  # the first report that has it
                    print(json.dumps({"image": image, "setting": setting, "seed": seed, "scores": 1}))
                    continue
                if not rundirs.complete(run) and args.score_only:
                    print(
                        json.dumps({"image": image, "setting": setting, "seed": seed, "left_out": str(run)})
                    )
                    continue
                row = {"setting": setting, "seed": seed, **score(run, overrides, image, args.num)}
                result["rows"].append(row)
                print(json.dumps({k: row[k] for k in ("image", "setting", "seed", "wall_s")}), flush=True)
                result["summary"] = rundirs.summarise(result["rows"], args.settings)
                write_result(out, result)
    result["summary"] = rundirs.summarise(result["rows"], args.settings)  # rows from reports alone too
    write_result(out, result)
    table = rundirs.quality_table(result["summary"])
    out.with_suffix(".md").write_text(table)
    if args.sheets:
        # named after --out, so another report's sheets are not overwritten
        rundirs.contact_sheets(
            result["rows"], args.settings, out.parent, suffix=out.stem.removeprefix("fast_preset")
        )
    print(table)
    return result


if __name__ == "__main__":
    main()
