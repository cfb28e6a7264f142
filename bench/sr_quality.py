"""Super-resolution quality: SinGAN SR vs bicubic, PSNR and SSIM against a held-out original.

For each bundled image: the "high-resolution" original is the image with
its longer side at ``--hr-size``; the low-resolution input is that,
downscaled by ``--factor`` (antialiased bicubic, the pyramid's own
downscaling). An SR pyramid is trained on the low-resolution image only,
which is then upsampled ``--factor`` times by ``super_resolve`` (with its
noise and without) and by plain bicubic interpolation; both are scored
against the original.

    python -m bench sr-quality            # about 5 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench.common import machine_info, write_result
from singan_tf.applications import super_resolve, train_sr
from singan_tf.config import TrainConfig
from singan_tf.images import bundled_image, load_image
from singan_tf.pyramid import SR_ALPHA, downscale, scaled_size, sr_steps


def scores(image: np.ndarray, original: np.ndarray) -> dict[str, float]:
    """PSNR (dB) and SSIM on [0, 1] images (tf.image's definitions)."""
    a = tf.constant((np.clip(image, -1, 1) + 1) / 2)
    b = tf.constant((original + 1) / 2)
    return {
        "psnr": round(float(tf.image.psnr(a, b, 1.0)), 3),
        "ssim": round(float(tf.image.ssim(a, b, 1.0)), 4),
    }


def evaluate(name: str, config: TrainConfig, factor: float, hr_size: int, work: Path) -> dict:
    full = load_image(bundled_image(name))
    hr_shape = scaled_size(full.shape[:2], hr_size / max(full.shape[:2]))
    original = np.clip(downscale(full, hr_shape).numpy(), -1, 1)
    lr_shape = (round(hr_shape[0] / factor), round(hr_shape[1] / factor))
    low = np.clip(downscale(original, lr_shape).numpy(), -1, 1)
    t0 = time.perf_counter()
    result = train_sr(config, low, factor, work / name)
    train_s = time.perf_counter() - t0
    pyramid = result.pyramid
    upsampled = {
        "singan": super_resolve(pyramid, low, factor, seed=0),
        "singan_no_noise": super_resolve(pyramid, low, factor, noise_scale=0.0),
        "bicubic": tf.image.resize(low, hr_shape, "bicubic").numpy(),
    }
    out = {"image": name, "hr_size": list(hr_shape), "lr_size": list(lr_shape), "train_s": round(train_s, 1)}
    out["effective_scale_factor"] = round(pyramid.geometry.scale_factor, 4)
    out["num_scales"] = pyramid.num_scales
    for method, image in upsampled.items():
        assert image.shape[:2] == tuple(hr_shape), (method, image.shape)
        lowpass = downscale(np.clip(image, -1, 1), lr_shape).numpy()
        out[method] = {
            **scores(image, original),
            "lowpass_rmse": round(float(np.sqrt(np.mean((lowpass - low) ** 2))), 4),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--hr-size", type=int, default=128, help="longer side of the held-out original")
    parser.add_argument("--iters", type=int, default=300, help="iterations per scale of the SR training")
    parser.add_argument("--images", default="rocket.jpg,hubble_deep_field.jpg")
    parser.add_argument("--out", default="bench/results/sr_quality.json")
    args = parser.parse_args(argv)
    k, r = sr_steps(args.factor)
    # Small preset: the low-resolution input is at most hr_size / factor px, so nothing is downscaled.
    config = TrainConfig.from_preset("quick", iters=args.iters, max_size=args.hr_size)
    work = Path(tempfile.mkdtemp(prefix="singan-sr-"))
    images = [evaluate(name, config, args.factor, args.hr_size, work) for name in args.images.split(",")]
    result = {
        "benchmark": "sr_quality",
        "factor": args.factor,
        "steps": k,
        "step_scale_factor": round(r, 4),
        "iters": args.iters,
        "alpha": SR_ALPHA,
        "machine": machine_info(),
        "images": images,
    }
    for entry in images:
        print(entry)
    write_result(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
