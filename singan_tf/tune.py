"""``python -m singan_tf.tune [IMAGE] [train options]``: what ``auto`` chooses here, measured.

Times the real training step at every scale of the pyramid that
``python -m singan_tf.train`` with the same options would build, for every
candidate ``auto`` chooses from (thread pools, precision, XLA), stores the
timings in the tuning cache and prints them with the choices. A training
run of that geometry on this machine then decides without measuring.

The same timing runs as the probe ``--cpu-threads auto`` starts in a
separate process for a thread plan it has no timings of (a process's
thread pools are fixed once TensorFlow starts).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from singan_tf import runtime
from singan_tf.config import TrainConfig
from singan_tf.images import atomic_write_bytes
from singan_tf.preflight import import_tensorflow
from singan_tf.runtime import ThreadPlan, Timing, TuningCache

log = logging.getLogger(__name__)


def _synthetic_scales(config: TrainConfig, geometry):
    """Per scale n: ``(n, measure)``, where ``measure(choice, timed)`` times the real training
    step on a random image of the geometry's working size against a random frozen coarser
    pyramid (the step's speed does not depend on the data), in this process's thread pools."""
    import numpy as np
    import tensorflow as tf

    from singan_tf.models import build_generator
    from singan_tf.pyramid import build_pyramid
    from singan_tf.sampling import Pyramid
    from singan_tf.training import ScaleTrainer, StepCache, time_new_trainer

    rng = np.random.default_rng(0)
    reals = build_pyramid(rng.uniform(-1, 1, (*geometry.working_size, 3)).astype(np.float32), geometry)
    steps = StepCache(config)
    frozen = Pyramid(config, geometry, [], [], rec_noise=np.zeros((1, *geometry.sizes[0], 1), np.float32))
    with runtime.training_graph_options():
        for n, size in enumerate(geometry.sizes):
            ch = config.channels(n)
            zeros = tf.zeros((1, *size, 3))

            def make(choice: runtime.Choice, n=n, ch=ch, zeros=zeros) -> ScaleTrainer:
                co = config.coarser_channels(n)
                step = steps.get(ch, choice, co)
                if co is None:
                    return ScaleTrainer(step, frozen, reals[n], (zeros, zeros), 0.1)
                step.coarser.set_weights(frozen.generators[n - 1].get_weights())
                co_rec = (tf.zeros((1, *geometry.sizes[n - 1], 3)),) * 2
                return ScaleTrainer(step, frozen, reals[n], (zeros, zeros), 0.1, coarser_rec_input=co_rec)

            def measure(
                choice: runtime.Choice, timed: int, make=make, min_s: float = runtime.MIN_TIMED_S
            ) -> Timing:
                return time_new_trainer(lambda: make(choice), timed, min_s)

            yield n, measure
            frozen.append_scale(
                build_generator(ch, config.num_layers, config.kernel_size), 1.0 if n == 0 else 0.1
            )


def time_geometry(
    config: TrainConfig,
    geometry,
    cache: TuningCache | None,
    scales: Sequence[int] | None = None,
    timed: int = runtime.TIMED_ITERS,
    reuse: bool = True,
    prior_only: bool = False,
    min_s: float = runtime.MIN_TIMED_S,
) -> list[dict]:
    """Time every candidate (or only the prior, and every candidate at each width's sample
    scale and at scale 0, ``runtime.fully_timed_scales``) at every scale (or ``scales``) in
    this process's thread pools, each for ``timed`` iterations and at least ``min_s`` seconds;
    timings go to ``cache`` (and come from it with ``reuse``). Returns one row per scale and
    candidate."""
    plan = runtime.active_thread_plan()
    tuner = runtime.Tuner(config, geometry.sizes, plan, cache)
    samples = runtime.fully_timed_scales(config, geometry.sizes)
    rows = []
    for n, measure in _synthetic_scales(config, geometry):
        if scales is not None and n not in scales:
            continue
        for choice in tuner.candidates(n)[: 1 if prior_only and n not in samples else None]:
            timed_for = functools.partial(measure, min_s=min_s)
            timing = _cached(cache if reuse else None, cache, tuner.key(n, choice), timed_for, choice, timed)
            rows.append(_row(config, geometry.sizes, n, choice, plan, timing))
    return rows


def _cached(source, sink, key: str, measure, choice: runtime.Choice, timed: int) -> Timing:
    """``key``'s timing from the ``source`` cache, or ``measure(choice, timed)`` put into ``sink``
    (either cache may be None)."""
    timing = source.get(key) if source is not None else None
    if timing is None:
        timing = measure(choice, timed)
        if sink is not None:
            sink.put(key, timing)
    return timing


def time_choices(
    config: TrainConfig, geometry, cache: TuningCache, choices: list[runtime.Choice]
) -> list[Timing]:
    """The timing of ``choices[n]`` at every scale n, from the cache or measured into it."""
    tuner = runtime.Tuner(config, geometry.sizes, runtime.active_thread_plan(), cache)
    timings = []
    for n, measure in _synthetic_scales(config, geometry):
        key = tuner.key(n, choices[n])
        timings.append(_cached(cache, cache, key, measure, choices[n], runtime.TIMED_ITERS))
    return timings


def decide_geometry(config: TrainConfig, geometry, cache: TuningCache | None) -> list[dict]:
    """What training would decide at every scale, in this process's thread pools: the same
    ``Tuner`` with the same budget and cache, measuring the synthetic step where it measures."""
    plan = runtime.active_thread_plan()
    tuner = runtime.Tuner(config, geometry.sizes, plan, cache)
    decisions = []
    for n, measure in _synthetic_scales(config, geometry):
        decision = tuner.decide(n, measure)
        decisions.append({"scale": n, "line": decision.describe(), **decision.to_dict(plan)})
    return decisions


def _row(config, sizes, scale: int, choice: runtime.Choice, plan: ThreadPlan, timing: Timing) -> dict:
    flops = runtime.iteration_flops(config, sizes, scale)
    return {
        "scale": scale,
        "size": list(sizes[scale]),
        "channels": config.channels(scale),
        "threads": runtime.thread_label(plan),
        "precision": choice.precision,
        "xla": choice.xla,
        **timing.to_dict(),
        "gflop_per_iter": round(flops / 1e9, 3),
        "achieved_gflops": round(flops / (timing.ms_per_iter * 1e6), 1),
    }


def probe(
    config: TrainConfig,
    geometry,
    plan: ThreadPlan,
    prior_only: bool = True,
    decide_to: Path | None = None,
    choices: list[runtime.Choice] | None = None,
) -> None:
    """Time every scale's prior choice (or every candidate, or the given ``choices``) under
    ``plan`` in a probe process, which fills the cache; with ``decide_to``, the probe instead
    decides every scale as training would (``decide_geometry``) and writes the decisions
    there as JSON."""
    command = [
        sys.executable,
        "-m",
        "singan_tf.tune",
        "--probe",
        runtime.thread_label(plan),
        "--probe-config",
        config.to_json(),
        "--probe-geometry",
        json.dumps(geometry.to_dict()),
        *([] if prior_only else ["--probe-all"]),
        *(["--probe-decide", str(decide_to)] if decide_to else []),
        *(["--probe-choices", json.dumps([[c.precision, c.xla] for c in choices])] if choices else []),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    env["TF_XLA_FLAGS"] = runtime.without_xla_cache(env.get("TF_XLA_FLAGS", ""))  # time real compiles
    log.debug("probing CPU threads %s", runtime.describe_threads(plan))
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        log.warning("the probe of CPU threads %s failed: %s", runtime.thread_label(plan), tail)


def configure_threads(setting: str, config: TrainConfig, geometry) -> ThreadPlan:
    """Choose (``runtime.choose_threads``, probing when needed) and apply the thread pools for
    training ``geometry``; logs the decision. Call before TensorFlow runs its first op."""
    auto = setting == "auto" and not config.deterministic
    cache = TuningCache() if auto else None
    plan, why = runtime.choose_threads(
        setting, config, geometry.sizes, cache, probe=lambda p: probe(config, geometry, p)
    )
    if runtime.apply_thread_plan(plan):
        log.info("CPU threads: %s (%s)", runtime.describe_threads(plan), why)
        return plan
    return runtime.active_thread_plan()


def _run_probe(args: argparse.Namespace) -> int:
    import_tensorflow(args.verbose)
    from singan_tf.pyramid import PyramidGeometry

    config = TrainConfig.from_dict(json.loads(args.probe_config))
    geometry = PyramidGeometry.from_dict(json.loads(args.probe_geometry))
    runtime.apply_thread_plan(runtime.thread_plan(args.probe, runtime.core_count(), 0))
    if args.probe_decide:
        decisions = decide_geometry(config, geometry, TuningCache())
        atomic_write_bytes(Path(args.probe_decide), (json.dumps(decisions, indent=1) + "\n").encode())
    elif args.probe_choices:  # [[precision, xla], ...], one per scale
        choices = [runtime.Choice(p, bool(x)) for p, x in json.loads(args.probe_choices)]
        time_choices(config, geometry, TuningCache(), choices)
    else:
        time_geometry(config, geometry, TuningCache(), prior_only=not args.probe_all)
    return 0


def table(rows: list[dict]) -> str:
    """ms per iteration by scale (rows) and thread plan / candidate (columns), as Markdown."""
    columns = sorted({(r["threads"], r["precision"], r["xla"]) for r in rows})
    header = ["scale", "size", "ch"] + [
        f"{runtime.describe_threads(None if t == 'tf' else tuple(map(int, t.split(','))))}: "
        f"{runtime.Choice(p, x).label}"
        for t, p, x in columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scale in sorted({r["scale"] for r in rows}):
        cells = {(r["threads"], r["precision"], r["xla"]): r for r in rows if r["scale"] == scale}
        first = next(iter(cells.values()))
        values = [f"{cells[c]['ms_per_iter']:.1f}" if c in cells else "" for c in columns]
        lines.append(
            f"| {scale} | {first['size'][0]}x{first['size'][1]} | {first['channels']} | "
            + " | ".join(values)
            + " |"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from singan_tf.cli import add_config_arguments

    p.add_argument("image", nargs="?", help="training image (default: the bundled rocket.jpg)")
    add_config_arguments(p)
    for name in ("--probe", "--probe-config", "--probe-geometry"):  # the probe process's own
        p.add_argument(name, help=argparse.SUPPRESS)
    p.add_argument("--probe-all", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--probe-decide", help=argparse.SUPPRESS)  # write training's decisions here
    p.add_argument("--probe-choices", help=argparse.SUPPRESS)  # time these choices, one per scale


def run(args: argparse.Namespace) -> int:
    """Time every candidate of the options' geometry, then print the timings and the choices."""
    if args.probe:
        return _run_probe(args)
    from singan_tf.cli import config_from_args, new_geometry
    from singan_tf.images import bundled_image, load_image

    config = config_from_args(args)
    runtime.check_thread_setting(args.cpu_threads)
    path = Path(args.image) if args.image else bundled_image()
    image = load_image(path)
    import_tensorflow(args.verbose)
    geometry = new_geometry(config, image, path.name)
    cores, gpus = runtime.core_count(), len(runtime.gpu_devices())
    plans = (
        runtime.thread_candidates(cores, gpus)
        if args.cpu_threads == "auto"
        else [runtime.thread_plan(args.cpu_threads, cores, gpus)]
    )
    for plan in plans:
        log.info("timing every scale with CPU threads: %s", runtime.describe_threads(plan))
        probe(config, geometry, plan, prior_only=False)
    cache = TuningCache()
    plan, why = runtime.choose_threads(args.cpu_threads, config, geometry.sizes, cache)
    rows = []
    for each in plans:
        tuner = runtime.Tuner(config, geometry.sizes, each, cache)
        for n in range(geometry.num_scales):
            for choice in tuner.candidates(n):
                timing = cache.get(tuner.key(n, choice))
                if timing:
                    rows.append(_row(config, geometry.sizes, n, choice, each, timing))
    print(table(rows))
    print(f"\nCPU threads: {runtime.describe_threads(plan)} ({why})")
    tuner = runtime.Tuner(config, geometry.sizes, plan, cache)
    for n in range(geometry.num_scales):
        decision = tuner.decide(n, measure=None, measure_allowed=False)
        print(f"scale {n}: {decision.describe()}")
    log.info("timings cached in %s", cache.path)
    return 0


if __name__ == "__main__":
    from singan_tf.cli import command_main

    sys.exit(command_main("tune"))
