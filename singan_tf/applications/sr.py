"""Super-resolution (paper section 4, Fig. 9): a pyramid trained for it, then the finest
generator applied k times.

SR_ALPHA, sr_steps and sr_config (the SR pyramid's settings) are arithmetic, in
``singan_tf.pyramid``: the CLI checks --factor and the pyramid they give before
TensorFlow loads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from singan_tf.config import TrainConfig
from singan_tf.pyramid import SR_ALPHA, sr_config, sr_steps
from singan_tf.sampling import Pyramid, run_pyramid
from singan_tf.training import TrainingCallback, TrainResult, train_pyramid


def train_sr(
    config: TrainConfig,
    image: np.ndarray,
    factor: float,
    out,
    callbacks: Sequence[TrainingCallback] = (),
    resume: bool = False,
    alpha: float = SR_ALPHA,
) -> TrainResult:
    """Train the SR pyramid of ``image`` (``train_pyramid`` with ``sr_config``)."""
    return train_pyramid(sr_config(config, factor, alpha), image, out, callbacks, resume)


def super_resolve(
    pyramid: Pyramid, image: np.ndarray, factor: float, seed: int = 0, noise_scale: float = 1.0
) -> np.ndarray:
    """Upsample ``image`` ``factor`` times with the finest generator (paper section 4, Fig. 9).

    k times (``sr_steps``): upsample by 1/r (the pyramid's upsampling op)
    and run G_N with its noise amplitude on fresh noise. Step i's size is
    ``round(size * factor**(i/k))``, so the result is exactly
    ``round(size * factor)``.

    Args:
        pyramid: ideally trained with ``train_sr`` on ``image``.
        image: [H, W, 3], the low-resolution image (the run's training image).

    Returns:
        [round(H * factor), round(W * factor), 3] float32.
    """
    k, _ = sr_steps(factor)
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    out = tf.constant(np.asarray(image, np.float32)[None])
    for i in range(1, k + 1):
        size = (round(h * factor ** (i / k)), round(w * factor ** (i / k)))
        z = noise_scale * rng.standard_normal((1, *size, 3), dtype=np.float32)
        out = run_pyramid(pyramid.generators[-1:], pyramid.noise_amps[-1:], [z], prev=out)
    return out[0].numpy()
