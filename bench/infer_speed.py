"""Inference speed: latency (batch 1) and throughput (batch 8) per runtime.

Trains nothing: it needs a run directory (``--run``; e.g. the demo's) or
builds a paper-geometry pyramid with random weights for a 186x248 image
(``--random``; speed does not depend on the weights). It exports it, then
times TF eager, tf.function, the reloaded SavedModel and onnxruntime
(default session, and tuned: all graph optimisations, 2 intra-op threads,
sequential execution) at the trained size and at 2x width, plus first-call
latency, and writes a JSON with machine info.

    python -m bench.infer_speed --random [--reps 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import machine_info, write_result
from bench.rundirs import random_run

REFERENCE_S_PER_SAMPLE = {1.0: 0.19, 2.0: 0.50}  # PyTorch reference, 186x248 and 2x width, 2 cores


def timeit(fn, reps: int) -> tuple[float, float]:
    """(first call seconds, median seconds of the next ``reps`` calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained run directory")
    parser.add_argument("--random", action="store_true", help="random weights, 186x248 paper geometry")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", default="bench/results/infer_speed.json")
    args = parser.parse_args(argv)
    if not args.run and not args.random:
        parser.error("give --run RUN_DIR or --random")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import onnxruntime as ort
    import tensorflow as tf

    from export import export_run, graph_feeds
    from singan_tf.rundir import load_pyramid
    from singan_tf.sampling import run_pyramid

    work = Path(tempfile.mkdtemp(prefix="singan-infer-"))
    run_dir = Path(args.run) if args.run else random_run(work / "run")
    paths = export_run(run_dir, work / "export", name="bench", formats=("savedmodel", "onnx", "onnx-int8"))
    pyramid = load_pyramid(run_dir)
    saved = tf.saved_model.load(str(paths["savedmodel"])).signatures["serving_default"]
    tuned = ort.SessionOptions()
    tuned.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    tuned.intra_op_num_threads = os.cpu_count() or 2
    tuned.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    cpu = ["CPUExecutionProvider"]
    sessions = {
        "onnxruntime": ort.InferenceSession(str(paths["onnx"]), providers=cpu),
        "onnxruntime_tuned": ort.InferenceSession(str(paths["onnx"]), tuned, providers=cpu),
        "onnxruntime_int8": ort.InferenceSession(str(paths["onnx-int8"]), tuned, providers=cpu),
    }

    def runners_for(noises):
        feeds = graph_feeds(noises)
        tf_feeds = {k: tf.constant(v) for k, v in feeds.items()}
        return {
            "tf_eager": lambda: run_pyramid(pyramid.generators, pyramid.noise_amps, noises).numpy(),
            "tf_function": lambda: pyramid.generate(noises).numpy(),
            "savedmodel": lambda: saved(**tf_feeds)["image"].numpy(),
            **{name: (lambda s=s: s.run(["image"], feeds)) for name, s in sessions.items()},
        }

    rows = []
    for scale_h in (1.0, 2.0):
        for batch in (1, 8):
            noises = pyramid.noise(0, batch, scale_h=scale_h)
            runners = runners_for(noises)
            for name, fn in runners.items():
                first, median = timeit(fn, args.reps if batch == 1 else max(3, args.reps // 3))
                row = {
                    "runtime": name,
                    "scale_h": scale_h,
                    "batch": batch,
                    "size": list(noises[-1].shape[1:3]),
                    "first_call_s": round(first, 4),
                    "ms_per_batch": round(median * 1000, 2),
                    "ms_per_sample": round(median * 1000 / batch, 2),
                    "samples_per_s": round(batch / median, 2),
                }
                if batch == 1 and args.random:
                    row["speedup_vs_reference"] = round(REFERENCE_S_PER_SAMPLE[scale_h] / median, 2)
                rows.append(row)
                print(row, flush=True)
    # Quality cost of int8: difference to the float model on the same noise.
    noises = pyramid.noise(123, 4)
    feeds = graph_feeds(noises)
    ref = sessions["onnxruntime"].run(["image"], feeds)[0]
    q = sessions["onnxruntime_int8"].run(["image"], feeds)[0]
    err = np.abs(q - ref)
    mse = float(np.mean((np.clip(q, -1, 1) - np.clip(ref, -1, 1)) ** 2))
    quality = {
        "int8_max_abs_diff": float(err.max()),
        "int8_mean_abs_diff": float(err.mean()),
        "int8_psnr_db_vs_float": round(10 * np.log10(4.0 / mse), 2) if mse > 0 else None,
        "weights": "random (speed only)" if args.random else str(run_dir),
    }
    if not args.random:  # patch SWD against the training image, float vs int8 samples
        from singan_tf.metrics import patch_swd
        from singan_tf.rundir import RunDir

        image = RunDir(run_dir).read_image()
        noises = pyramid.noise(7, 16)
        feeds = graph_feeds(noises)
        quality["patch_swd_float"] = patch_swd(sessions["onnxruntime"].run(["image"], feeds)[0], image)
        quality["patch_swd_int8"] = patch_swd(sessions["onnxruntime_int8"].run(["image"], feeds)[0], image)
    print(quality)
    result = {"benchmark": "infer_speed", "machine": machine_info(), "rows": rows, "int8_quality": quality}
    write_result(Path(args.out), result)


if __name__ == "__main__":
    main()
