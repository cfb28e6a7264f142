"""Animation (paper section 4, Fig. 12): a momentum random walk in the coarse scales' noise.

The frames' noise is ``walk_noise``; ``animate`` runs the pyramid on it.
``singan_tf.images.write_animation`` encodes the frames as GIF or MP4.
"""

from __future__ import annotations

import numpy as np

from singan_tf.preflight import check_walk
from singan_tf.pyramid import noise_sizes
from singan_tf.sampling import Pyramid
from singan_tf.seeds import animation_rng


def walk_noise(
    pyramid: Pyramid,
    frames: int,
    start_scale: int,
    alpha: float = 0.1,
    beta: float = 0.9,
    seed: int = 0,
    scale_h: float = 1.0,
    scale_v: float = 1.0,
) -> list[np.ndarray]:
    """Per-scale noise of ``frames`` frames, [T, h_n, w_n, C] each.

    Scales n < K follow a momentum random walk pulled toward the
    reconstruction noise z_rec (z* at scale 0, zeros above), as in the
    paper's animation:
    ``z_t = alpha * z_rec + (1 - alpha) * (z_{t-1} + beta * (z_{t-1} - z_{t-2}) + (1 - beta) * eps_t)``,
    starting at z_rec. Scales n >= K keep one fixed noise draw.
    """
    check_walk(frames, start_scale, pyramid.num_scales, alpha, beta)
    sizes = noise_sizes(pyramid.sizes, scale_h, scale_v)
    fixed = pyramid.noise(seed, 1, scale_h, scale_v)
    rec = pyramid.rec_noises(sizes)
    rng = animation_rng(seed)
    noises = [np.repeat(z, frames, axis=0) for z in fixed]
    for n in range(start_scale):
        z_prev = z_prev2 = rec[n][0]
        for t in range(frames):
            eps = rng.standard_normal(z_prev.shape, dtype=np.float32)
            z = alpha * rec[n][0] + (1 - alpha) * (z_prev + beta * (z_prev - z_prev2) + (1 - beta) * eps)
            noises[n][t] = z
            z_prev2, z_prev = z_prev, z
    return noises


def animate(pyramid: Pyramid, frames: int, start_scale: int, batch_size: int = 8, **walk) -> np.ndarray:
    """Frames of a single-image animation (paper section 4, Fig. 12): [T, H, W, 3].

    ``walk``: ``alpha``, ``beta``, ``seed``, ``scale_h``, ``scale_v`` of ``walk_noise``.
    """
    noises = walk_noise(pyramid, frames, start_scale, **walk)
    out = [
        pyramid.generate([z[t : t + batch_size] for z in noises]).numpy()
        for t in range(0, frames, batch_size)
    ]
    return np.concatenate(out, axis=0)
