"""This machine's measured compute peak, for the achieved/peak ratios.

Times a 128-channel 3x3 convolution at the finest paper scale (the
dominant op of training and sampling) in float32 and bfloat16, and a large
float32 matmul, through TensorFlow; with ``--geometry HxW``, also a lone
conv of each scale's width at each scale's size (the peak a scale's
training step is held to). Writes ``results/peak.json``.

    python -m bench peak [--geometry 186x248]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench.common import machine_info, write_result


def _gflops(fn, flop: float, reps: int) -> float:
    fn()
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return flop * reps / (time.perf_counter() - t0) / 1e9


def lone_conv(sizes: list, channels: list[int], dtypes=("float32", "bfloat16"), reps: int = 10) -> list:
    """GFLOP/s of a 3x3 conv (width -> width) at each (size, width), per dtype: a scale's peak.

    The conv runs ``chain`` times back to back inside one traced function, so a small map's
    time is the kernel's, not the host's dispatch.
    """
    import tensorflow as tf

    rows = []
    for (h, w), c in zip(sizes, channels, strict=True):
        row = {"size": [h, w], "channels": c}
        flop = 2 * 9 * c * c * h * w
        chain = max(1, min(64, int(2e9 // flop)))
        for name in dtypes:
            dtype = tf.as_dtype(name)
            x = tf.cast(tf.random.normal((1, h, w, c)), dtype)
            k = tf.cast(tf.random.normal((3, 3, c, c), stddev=1 / (3 * c**0.5)), dtype)

            @tf.function
            def convs(x=x, k=k, chain=chain):
                for _ in range(chain):
                    x = tf.nn.conv2d(x, k, 1, "SAME")
                return x

            row[f"{name}_gflops"] = round(_gflops(lambda f=convs: f().numpy(), flop * chain, reps), 1)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", default="bench/results/peak.json")
    parser.add_argument("--geometry", help="HxW: also a lone conv at every scale of the paper pyramid there")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    h, w, c = 188, 250, 128
    conv_flop = 2 * 9 * c * c * (h - 2) * (w - 2)
    result = {"benchmark": "peak", "machine": machine_info()}
    for dtype in (tf.float32, tf.bfloat16):
        x = tf.cast(tf.random.normal((1, h, w, c)), dtype)
        k = tf.cast(tf.random.normal((3, 3, c, c)), dtype)
        conv = tf.function(lambda x=x, k=k: tf.nn.conv2d(x, k, 1, "VALID"))
        result[f"conv3x3_128ch_{dtype.name}_gflops"] = round(
            _gflops(lambda f=conv: f().numpy(), conv_flop, args.reps), 1
        )
    n = 2048
    a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
    mm = tf.function(lambda: tf.matmul(a, b))
    result["matmul_2048_float32_gflops"] = round(_gflops(lambda: mm().numpy(), 2 * n**3, args.reps), 1)
    if args.geometry:
        from singan_tf.config import TrainConfig
        from singan_tf.pyramid import pyramid_geometry

        config = TrainConfig()
        size = tuple(int(v) for v in args.geometry.split("x"))
        geometry = pyramid_geometry(size, config.min_size, config.max_size, config.scale_factor)
        widths = [config.channels(n) for n in range(geometry.num_scales)]
        result["per_scale"] = lone_conv(list(geometry.sizes), widths, reps=args.reps)
    print(result)
    if args.out:  # "" = only return the numbers (bench speed-report)
        write_result(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
