"""Training speed per scale: ms per iteration (3 critic + 3 generator steps).

Runs the real ``ScaleTrainer`` at every scale of the paper preset on a
186x248 image (the reference code's test geometry, so scales match the
reference timings below), with a frozen coarser pyramid of the right
widths, once as a plain ``tf.function`` and once XLA-compiled. Reports
first-call (trace + compile) time, steady ms/iteration, achieved GFLOP/s
from analytic conv FLOPs, and peak RSS; writes a JSON with machine info.

    python -m bench.train_speed [--iters 5] [--scales 0,2,4] [--modes plain,xla]

Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
from pathlib import Path

from bench.common import MIN_TIMED_S, machine_info, write_result

# Reference PyTorch SinGAN on 2 cores (2 threads), seconds per iteration.
REFERENCE_S_PER_ITER = {(25, 34): 0.035, (42, 56): 0.067, (69, 91): 0.34, (113, 151): 1.05, (186, 248): 10.0}


def time_scale(config, geometry, scale: int, xla: bool, iters: int, min_s: float = MIN_TIMED_S) -> dict:
    """ms per iteration of the real training step at ``scale`` (and its first call), in this
    process's thread pools, over ``iters`` iterations and at least ``min_s`` seconds;
    ``config.precision`` must be concrete."""
    from singan_tf.tune import time_geometry

    cfg = config.replace(jit_compile="on" if xla else "off")
    (row,) = time_geometry(cfg, geometry, None, scales=[scale], timed=iters, min_s=min_s)
    row["mode"] = "xla" if xla else "plain"
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per scale and mode")
    parser.add_argument("--min-seconds", type=float, default=MIN_TIMED_S, help="timed seconds, at least")
    parser.add_argument("--scales", default="all", help="comma-separated scale indices, or all")
    parser.add_argument("--modes", default="plain,xla")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--cpu-threads", default="auto", help="as singan_tf.train's --cpu-threads")
    parser.add_argument("--out", default="bench/results/train_speed.json")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from singan_tf.config import TrainConfig
    from singan_tf.pyramid import pyramid_geometry
    from singan_tf.runtime import configure_threads

    threads = configure_threads(args.cpu_threads)

    config = TrainConfig(precision=args.precision)
    geometry = pyramid_geometry((186, 248), config.min_size, config.max_size, config.scale_factor)
    scales = range(geometry.num_scales) if args.scales == "all" else [int(s) for s in args.scales.split(",")]
    rows = []
    for scale in scales:
        for mode in args.modes.split(","):
            row = time_scale(config, geometry, scale, mode == "xla", args.iters, args.min_seconds)
            ref = REFERENCE_S_PER_ITER.get(tuple(row["size"]))
            if ref:
                row["reference_ms_per_iter"] = ref * 1000
                row["speedup_vs_reference"] = round(ref * 1000 / row["ms_per_iter"], 2)
            row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "benchmark": "train_speed",
        "precision": args.precision,
        "cpu_threads": threads,
        "machine": machine_info(),
        "rows": rows,
    }
    write_result(Path(args.out), result)


if __name__ == "__main__":
    main()
