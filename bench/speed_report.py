"""The speed issue's report, in one run on the machine at hand.

1. The machine: lscpu's model name, cores, the CPU features that decide
   bfloat16's speed, TensorFlow.
2. Per scale of the paper preset on the reference geometry (186x248):
   ms per iteration of every fixed choice - float32 and bfloat16, each with
   one thread per op and with TensorFlow's pools (plus XLA with TensorFlow's
   pools) - each in its own process (``bench train-speed``), with the first
   call (tracing) of each scale; every timing lasts at least 2 s (at most 50
   iterations), as does the PyTorch reference's. Where the CPU has no bfloat16 instructions,
   bfloat16 (emulated, and no candidate of ``auto`` there) is timed at the
   first scale of 32 and of 64 channels only (``--bf16-scales``).
3. The reference algorithm in PyTorch on the same cores
   (``bench torch-reference`` in a venv with torch: ``--torch-python``).
4. A lone 3x3 conv of each scale's width and size in each precision: the
   peak a scale's step is held to (``bench peak --geometry``).
5. What ``auto`` chooses: ``python -m singan_tf.tune`` with an empty tuning
   cache (its probes time the training step as training does), each
   scale's choice looked up in 2. Against the best fixed choice (target:
   never more than 5% slower), against PyTorch (target: 2x, or 80% of the
   lone conv's peak where that is lower); its probe's first call at each
   scale (a fresh process, nothing traced ahead) and that less one steady
   iteration (target: at most 2 s).
6. The fast preset against the paper preset at 400 iterations per scale,
   on every image of ``bench.common.IMAGES``: the fast preset trained here
   per image and seed by ``python -m singan_tf.train`` (wall time of the
   whole process, from an empty tuning cache), the anchor's run
   directories reused from ``--runs`` (``bench fast-preset`` trains them),
   its training time estimated from its own geometry's timings (first
   call + iterations x ms at every scale). Band-pass SWD per band and
   diversity on means over seeds; contact sheets. An anchor not on this
   disk may come from an earlier report (``--anchor-scores``): its scores,
   marked with the CPU and commit they came from, and its time estimated here.

    python -m bench speed-report --torch-python ../tvenv/bin/python --runs bench/runs \\
        --anchor preset=paper,iters=400,precision=auto --fast preset=fast --seeds 0 1

Writes ``results/speed_report.json``, ``.md`` and contact sheets.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import rundirs
from bench.common import IMAGES, git_commit, image_path, machine_info, quiet_env, run_timed, write_result

GEOMETRY = (186, 248)  # the reference code's test image: 9 scales, 32/64/128 channels
# The thread plans timed: one thread per op with one op per core, and TensorFlow's pools.
PLANS = {"1x": f"1,{os.cpu_count()}", "tf": "tf"}


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""
    return next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), ""
    )


def child(args: list[str], out: Path) -> dict:
    """A bench module in its own process (its own thread pools); its JSON result."""
    subprocess.run([sys.executable, "-m", "bench", *args, "--out", str(out)], check=True, env=quiet_env())
    return json.loads(out.read_text())


def fixed_choices(tmp: Path, iters: int, bf16_scales: str = "") -> dict[str, list[dict]]:
    """ms/iteration at every scale of the reference geometry for every fixed choice
    (bfloat16 at ``bf16_scales`` only, when given: "" means every scale)."""
    runs = {}
    for plan_name, plan in PLANS.items():
        for precision in ("float32", "mixed_bfloat16"):
            modes = "plain,xla" if plan == "tf" else "plain"  # XLA on one core per op is no candidate
            name = f"{precision}/{plan_name}"
            args = ["train-speed", "--precision", precision, "--cpu-threads", plan, "--modes", modes]
            if precision == "mixed_bfloat16" and bf16_scales:
                args += ["--scales", bf16_scales]
            rows = child([*args, "--iters", str(iters)], tmp / f"{name.replace('/', '_')}.json")["rows"]
            for mode in modes.split(","):
                runs[f"{name}/{mode}"] = [r for r in rows if r["mode"] == mode]
            print(f"timed {name} ({modes})", flush=True)
    return runs


def torch_reference(
    python: str, tmp: Path, scales: list[int], sizes: list | None = None, max_channels: int = 128
) -> list[dict]:
    """The PyTorch reference's ms/iteration at ``scales`` of the reference geometry, or of the
    pyramid ``sizes`` with widths capped at ``max_channels``."""
    if not python:
        return []
    out = tmp / "torch.json"
    args = ["--scales", ",".join(map(str, scales)), "--iters", "3", "--out", str(out)]
    if sizes:
        args += ["--sizes", ",".join(f"{h}x{w}" for h, w in sizes), "--no-sampling"]
        args += ["--max-channels", str(max_channels)]
    subprocess.run([python, "-m", "bench.torch_reference", *args], check=True)
    return json.loads(out.read_text())["training"]


def torch_schedules(python: str, tmp: Path, image: str, settings: list[str]) -> dict | None:
    """What the PyTorch reference would take here to train ``image`` with each setting's
    pyramid, widths and iterations (ms/iteration of every scale, timed in this run, times
    its iterations; no tracing to add). Scales of a width timed once for all settings."""
    if not python:
        return None
    from singan_tf.images import load_image
    from singan_tf.pyramid import geometry_for

    size = load_image(image_path(image)).shape[:2]
    timed: dict[tuple, float] = {}  # (size, channels) -> ms per iteration
    result = {}
    for setting in settings:
        config = train_config(_options(setting))
        sizes = [tuple(s) for s in geometry_for(config, size).sizes]
        widths = [config.channels(n) for n in range(len(sizes))]
        todo = [n for n in range(len(sizes)) if (sizes[n], widths[n]) not in timed]
        if todo:
            rows = torch_reference(python, tmp, todo, sizes, config.max_channels)
            timed.update({(tuple(r["size"]), r["channels"]): r["ms_per_iter"] for r in rows})
        scales = [
            {"size": list(s), "channels": c, "iters": config.scale_iters(n), "ms_per_iter": timed[(s, c)]}
            for n, (s, c) in enumerate(zip(sizes, widths, strict=True))
        ]
        seconds = sum(s["iters"] * s["ms_per_iter"] / 1e3 for s in scales)
        result[setting] = {"estimated_train_s": round(seconds, 1), "scales": scales}
    return result


def train_config(options: list[str]):
    """The ``TrainConfig`` that ``python -m singan_tf.train`` builds from ``options``."""
    from singan_tf.cli import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(options))


def reference_image(tmp: Path) -> str:
    """A 248x186 crop of the bundled photo: the reference geometry (speed ignores content)."""
    from PIL import Image

    path = tmp / "reference_186x248.png"
    Image.open(image_path("rocket")).convert("RGB").crop((150, 100, 398, 286)).save(path)
    return str(path)


def auto_choices(image: str, options: list[str], cache_dir: Path) -> dict:
    """What training with ``options`` on ``image`` chooses here from an empty tuning cache
    (``cache_dir``): the thread pools (probing as training does) and every scale's choice
    (``singan_tf.tune.decide_geometry``, the training's own tuner on the same geometry).
    Then each scale's choice is timed where it was not measured, for the estimated training
    time (first call + iterations x ms at every scale)."""
    from singan_tf import runtime
    from singan_tf.images import load_image
    from singan_tf.pyramid import geometry_for
    from singan_tf.tune import probe

    os.environ["SINGAN_TF_CACHE_DIR"] = str(cache_dir)
    config = train_config(options)
    geometry = geometry_for(config, load_image(image).shape[:2])
    t0 = time.perf_counter()
    plan, why = runtime.choose_threads(
        "auto", config, geometry.sizes, runtime.TuningCache(), probe=lambda p: probe(config, geometry, p)
    )
    decisions_file = cache_dir / "decisions.json"
    probe(config, geometry, plan, decide_to=decisions_file)
    decided_s = time.perf_counter() - t0
    decisions = json.loads(decisions_file.read_text())
    chosen = [runtime.Choice(d["precision"], d["xla"]) for d in decisions]
    probe(config, geometry, plan, choices=chosen)  # the scales whose choice was not measured
    cache = runtime.TuningCache()
    tuner = runtime.Tuner(config, geometry.sizes, plan, cache)
    scales = []
    for n, decision in enumerate(decisions):
        timing = cache.get(tuner.key(n, runtime.Choice(decision["precision"], decision["xla"])))
        scales.append(
            {**decision, "iters": config.scale_iters(n), "timing": timing.to_dict() if timing else None}
        )
    estimate = None
    if all(s["timing"] for s in scales):
        estimate = round(
            sum(s["timing"]["first_call_s"] + s["iters"] * s["timing"]["ms_per_iter"] / 1e3 for s in scales),
            1,
        )
    return {
        "threads": runtime.thread_label(plan),
        "threads_why": why,
        "decide_s": round(decided_s, 1),
        "scales": scales,
        "estimated_train_s": estimate,
    }


def per_scale_table(fixed: dict, torch_rows: list[dict], peaks: list[dict], auto: dict) -> list[dict]:
    """One row per scale: every fixed choice, auto's, PyTorch's, the lone-conv peak, the targets."""
    rows = []
    plan_of = {plan: name for name, plan in PLANS.items()}.get(auto["threads"])
    for n, base in enumerate(fixed["float32/1x/plain"]):
        row = {
            "scale": n,
            "size": base["size"],
            "channels": base["channels"],
            "gflop": base["gflop_per_iter"],
        }
        timed = {name: r for name, runs in fixed.items() for r in runs if r["scale"] == n}
        row["fixed_ms"] = {name: r["ms_per_iter"] for name, r in timed.items()}
        row["first_call_s"] = {name: r["first_call_s"] for name, r in timed.items()}
        best = min(row["fixed_ms"], key=row["fixed_ms"].get)
        row["best_fixed"], row["best_fixed_ms"] = best, row["fixed_ms"][best]
        choice = auto["scales"][n]
        name = f"{choice['precision']}/{plan_of}/{'xla' if choice['xla'] else 'plain'}"
        row["auto_source"] = choice["source"]
        row["auto"] = name
        row["auto_ms"] = row["fixed_ms"].get(name)
        # The first iteration in training, where scales of a width share a trace (the fixed-choice
        # rows trace every scale afresh): the timing of auto's choice in the decide probe.
        row["first_call_auto_s"] = (choice.get("timing") or {}).get("first_call_s")
        if row["first_call_auto_s"] is not None and row["auto_ms"]:
            # The first-call cost: that first iteration less a steady one (at most 2 s).
            row["first_call_over_iter_s"] = round(row["first_call_auto_s"] - row["auto_ms"] / 1e3, 3)
        if row["auto_ms"]:
            row["auto_over_best"] = round(row["auto_ms"] / row["best_fixed_ms"], 3)
        torch = next((t for t in torch_rows if t["scale"] == n), None)
        if torch:
            row["torch_ms"] = torch["ms_per_iter"]
            row["speedup_vs_torch"] = round(
                torch["ms_per_iter"] / (row["auto_ms"] or row["best_fixed_ms"]), 2
            )
        if peaks:
            key = "bfloat16_gflops" if "bfloat16" in name else "float32_gflops"
            peak = peaks[n][key]
            achieved = base["gflop_per_iter"] * 1e3 / (row["auto_ms"] or row["best_fixed_ms"])
            row["lone_conv_peak_gflops"] = peak
            row["achieved_over_peak"] = round(achieved / peak, 2)
        if "torch_ms" in row and peaks:
            # the target: 2x PyTorch, or 80% of the lone conv's peak where that is the lower bar
            row["target_ms"] = round(max(row["torch_ms"] / 2, base["gflop_per_iter"] * 1e3 / (0.8 * peak)), 1)
            row["target_met"] = (row["auto_ms"] or row["best_fixed_ms"]) <= row["target_ms"]
        rows.append(row)
    return rows


def fast_against_anchor(args, runs_dir: Path, report_runs: Path) -> dict:
    """Section 6: the fast preset trained here per image and seed; the anchors reused."""
    anchor, fast = args.anchor, args.fast
    rows, times = [], {}
    for image in args.images:
        for seed in args.seeds:
            run = runs_dir / image / f"{rundirs.label_of(anchor)}_s{seed}"
            if rundirs.complete(run):
                rows.append(_scored(run, anchor, image, seed, None, args.num))
            elif args.anchor_scores:
                rows += rundirs.earlier_rows(args.anchor_scores, anchor, image, seed)
        if args.skip_anchor_time:
            for r in rows:
                if r["image"] == image:
                    r["logged_s"] = None  # another machine's time says nothing of this one
        elif any(r["image"] == image for r in rows):  # the anchor's time, where there is one
            timed_as = anchor
            if any("scores_from" in r for r in rows if r["image"] == image):
                # trained elsewhere: its time here is the best this machine can do with its settings
                timed_as = ",".join(
                    f"{k}={v}" for k, v in {**rundirs.parse_setting(anchor), "precision": "auto"}.items()
                )
            times[image] = auto_choices(image_path(image), _options(timed_as), report_runs / f"cache-{image}")
            times[image]["setting"] = timed_as
        torch = torch_schedules(args.torch_python, report_runs, image, [anchor, fast])
        if torch:
            times.setdefault(image, {})["torch"] = torch
        # The fast runs of an image share a tuning cache that starts empty: the first seed is a
        # user's first run on this machine and geometry, the next ones find its timings.
        os.environ["SINGAN_TF_CACHE_DIR"] = str(report_runs / f"cache-fast-{image}")
        for seed in args.seeds:
            run = report_runs / image / f"{rundirs.label_of(fast)}_s{seed}"
            wall = None
            if not rundirs.complete(run):
                command = [sys.executable, "-m", "singan_tf.train", image_path(image), "--out", str(run)]
                command += [*_options(fast), "--seed", str(seed), "--no-progress", "--num-samples", "2"]
                wall, _ = run_timed(command)
                (run / "bench_wall.json").write_text(json.dumps({"wall_s": round(wall, 1)}) + "\n")
            elif (run / "bench_wall.json").is_file():
                wall = json.loads((run / "bench_wall.json").read_text())["wall_s"]
            rows.append(_scored(run, fast, image, seed, wall, args.num))
            print(json.dumps({"image": image, "seed": seed, "wall_s": wall}), flush=True)
    for row in rows:  # the anchors' time: estimated on quiet cores from their own geometry
        if row["setting"] == anchor:
            row["wall_s"] = times.get(row["image"], {}).get("estimated_train_s")
    return {"rows": rows, "anchor_timing": times, "summary": rundirs.summarise(rows, [anchor, fast])}


def _options(setting: str) -> list[str]:
    """``preset=fast,iters=400`` as train options: ``--preset fast --iters 400``."""
    overrides = rundirs.parse_setting(setting)
    return [part for k, v in overrides.items() for part in (f"--{k.replace('_', '-')}", str(v))]


def _scored(run: Path, setting: str, image: str, seed: int, wall: float | None, num: int) -> dict:
    from singan_tf.rundir import RunDir

    manifest = RunDir(run).read_manifest()
    return {
        "image": image,
        "setting": setting,
        "seed": seed,
        "run": str(run),
        "wall_s": wall,
        "logged_s": round(sum(s["seconds"] for s in manifest["scales"]), 1),
        "first_call_s": [s.get("first_call_s") for s in manifest["scales"]],
        "runtime": [s.get("runtime") for s in manifest["scales"]],
        "metrics": rundirs.evaluate_run(run, num, reuse=True),
    }


def markdown(result: dict) -> str:
    machine = result["machine"]
    features = ", ".join(machine.get("cpu_features", []))
    lines = [
        f"Machine: {result['lscpu_model']} ({machine['cores']} cores; {features}), "
        f"TensorFlow {machine['tensorflow']}, commit {machine['commit']}.",
        "",
    ]
    if "per_scale" in result:
        lines += per_scale_markdown(result)
    fast = result.get("fast_vs_anchor")
    if fast:
        lines += ["", rundirs.quality_table(fast["summary"]), *torch_lines(fast)]
    return "\n".join(lines) + "\n"


def torch_lines(fast: dict) -> list[str]:
    """Per image: the settings' training time in PyTorch here beside this project's."""
    lines = []
    for image, timing in fast["anchor_timing"].items():
        if "torch" not in timing:
            continue
        parts = []
        for setting, torch in timing["torch"].items():
            ours = [r for r in fast["rows"] if r["image"] == image and r["setting"] == setting]
            walls = [r["wall_s"] for r in ours if r["wall_s"]]
            here = f"{sum(walls) / len(walls) / 60:.1f} min here" if walls else "not timed here"
            parts.append(f"{setting} {torch['estimated_train_s'] / 60:.1f} min in PyTorch ({here})")
        lines.append(f"- {image}: " + "; ".join(parts) + ".")
    if not lines:
        return []
    head = (
        "The PyTorch reference's training time on the same machine (its ms/iteration, timed in "
        "this run, times each setting's iterations, summed over the image's scales):"
    )
    return ["", head, "", *lines]


def per_scale_markdown(result: dict) -> list[str]:
    names = list(result["per_scale"][0]["fixed_ms"])
    short = {
        n: n.replace("mixed_bfloat16", "bf16").replace("float32", "fp32").replace("/plain", "") for n in names
    }
    header = [
        "scale",
        "size",
        "ch",
        *(short[n] for n in names),
        f"auto (threads {result['auto']['threads']})",
        "auto / best",
        "PyTorch",
        "vs PyTorch",
        "achieved / lone-conv peak",
        "target met",
        "first call (auto)",
        "over one iteration",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    nan = float("nan")
    for r in result["per_scale"]:
        first = r.get("first_call_auto_s")
        cells = [
            str(r["scale"]),
            f"{r['size'][0]}x{r['size'][1]}",
            str(r["channels"]),
            *(f"{r['fixed_ms'][n]:.0f}" if n in r["fixed_ms"] else "-" for n in names),
            short.get(r["auto"], r["auto"]),
            f"{r.get('auto_over_best', nan):.3f}",
            f"{r.get('torch_ms', nan):.0f}",
            f"{r.get('speedup_vs_torch', nan):.2f}x",
            f"{r.get('achieved_over_peak', nan):.0%}",
            "yes" if r.get("target_met") else "no",
            "" if first is None else f"{first:.1f} s",
            "" if "first_call_over_iter_s" not in r else f"{r['first_call_over_iter_s']:.2f} s",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default="", help="a Python with torch, for the reference's timings")
    parser.add_argument("--runs", default="bench/runs", help="bench fast-preset's run directories (anchors)")
    parser.add_argument("--anchor", default="preset=paper,iters=400,precision=auto")
    parser.add_argument("--fast", default="preset=fast")
    parser.add_argument(
        "--anchor-scores",
        default="",
        help="an earlier report's JSON: its anchor scores stand in where --runs has no anchor run",
    )
    parser.add_argument("--images", nargs="+", default=list(IMAGES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--num", type=int, default=50, help="samples scored per run")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per scale")
    parser.add_argument("--fast-runs", default="", help="where the fast runs go (complete ones are reused)")
    parser.add_argument(
        "--bf16-scales",
        default=None,
        help="scales timed in bfloat16 (comma-separated; default: every scale where the CPU has "
        "bfloat16 instructions, else 0,4: emulated bfloat16 is no candidate there, and slow)",
    )
    parser.add_argument(
        "--auto-only",
        action="store_true",
        help="sections 1-5 with the fixed choices, PyTorch and peaks kept from --out: auto judged again",
    )
    parser.add_argument(
        "--skip-anchor-time",
        action="store_true",
        help="do not time the anchor's settings on this machine (minutes of probes per image)",
    )
    parser.add_argument("--skip-speed", action="store_true", help="only section 6")
    parser.add_argument("--skip-quality", action="store_true", help="only sections 1-5")
    parser.add_argument("--out", default="bench/results/speed_report.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="speed-report-"))
    # Everything this report measures starts from an empty tuning cache of its own.
    os.environ["SINGAN_TF_CACHE_DIR"] = str(work / "cache")
    result: dict = {
        "benchmark": "speed_report",
        "lscpu_model": lscpu_model(),
        "machine": machine_info(),
        "commit": git_commit(),
        "settings": {"anchor": args.anchor, "fast": args.fast, "seeds": args.seeds},
    }
    if args.auto_only:
        args.skip_quality = True
    # A report in sittings (speed with the cores quiet, quality when the anchors are trained, auto
    # judged again after a tuner change): what this one skips is kept from the previous file,
    # with the commit it ran at.
    kept = []
    if args.skip_speed:
        kept += ["fixed", "torch", "peak", "auto", "per_scale", "bf16_scales"]
    elif args.auto_only:  # the tuner changed: the hour of fixed timings stands
        kept += ["fixed", "torch", "peak", "bf16_scales"]
    if args.skip_quality:
        kept += ["fast_vs_anchor"]
    if kept and out.is_file():
        previous = json.loads(out.read_text())
        result.update({k: previous[k] for k in kept if k in previous})
        result["earlier_commits"] = {",".join(kept): previous.get("commit")}
    if not args.skip_speed:
        if not args.auto_only:
            bf16_scales = args.bf16_scales
            if bf16_scales is None:
                from singan_tf.runtime import precision_candidates

                bf16_scales = "" if "mixed_bfloat16" in precision_candidates() else "0,4"
            result["bf16_scales"] = bf16_scales or "all"
            result["fixed"] = fixed_choices(work, args.iters, bf16_scales)
            write_result(out, result)  # each section as it is done: an interrupted report keeps them
            result["torch"] = torch_reference(
                args.torch_python, work, list(range(len(result["fixed"]["float32/1x/plain"])))
            )
            write_result(out, result)
            geometry = "x".join(map(str, GEOMETRY))
            result["peak"] = child(["peak", "--reps", "10", "--geometry", geometry], work / "peak.json")
            write_result(out, result)
        options = ["--preset", "paper", "--precision", "auto"]
        result["auto"] = auto_choices(reference_image(work), options, work / "cache-reference")
        result["per_scale"] = per_scale_table(
            result["fixed"], result["torch"], result["peak"]["per_scale"], result["auto"]
        )
        write_result(out, result)
    if not args.skip_quality:
        fast_runs = Path(args.fast_runs) if args.fast_runs else work / "runs"
        result["fast_vs_anchor"] = fast_against_anchor(args, Path(args.runs), fast_runs)
        write_result(out, result)
        rundirs.contact_sheets(
            result["fast_vs_anchor"]["rows"],
            [args.anchor, args.fast],
            out.parent,
            suffix=out.stem.removeprefix("speed_report"),
        )
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print(table)
    return result


if __name__ == "__main__":
    main()
