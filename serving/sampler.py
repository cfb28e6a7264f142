"""Samples from an exported ONNX pyramid with numpy + onnxruntime only.

The noise follows the recipe in the model's metadata, so ``Sampler(...).sample(seed)``
returns the same images as ``singan_tf``'s ``Pyramid.sample(seed=...)`` (to
float precision), without TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

METADATA_KEY = "singan_tf"


class SamplerError(ValueError):
    """A model that cannot be loaded or a request it cannot serve."""


def _resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with half-pixel centres of [B, H, W, C] (as the exported graph)."""
    b, h, w, c = x.shape
    out_h, out_w = size

    def coords(n_in: int, n_out: int):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
        lo = np.minimum(np.floor(pos).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = coords(h, out_h)
    x0, x1, fx = coords(w, out_w)
    top = x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y0][:, :, x1] * fx[None, None, :, None]
    bot = x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y1][:, :, x1] * fx[None, None, :, None]
    return (top * (1 - fy)[None, :, None, None] + bot * fy[None, :, None, None]).astype(np.float32)


def rec_noise_from(metadata: dict) -> np.ndarray:
    """z*, the reconstruction noise stored in the exported metadata, [1, h_0, w_0, 1]."""
    rec = metadata["rec_noise"]
    return np.asarray(rec["values"], np.float32).reshape(rec["shape"])


def rec_noise_at(rec_noise: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """z* at another size (bilinear), [1, h, w, 1]; itself at its own size."""
    return rec_noise if tuple(size) == rec_noise.shape[1:3] else _resize_bilinear(rec_noise, size)


def noise_sizes(sizes, scale_h: float = 1.0, scale_v: float = 1.0) -> list[tuple[int, int]]:
    """Each scale's noise size for an output scaled by (scale_v, scale_h): half up, at least 1."""
    if not (scale_h > 0 and scale_v > 0 and math.isfinite(scale_h) and math.isfinite(scale_v)):
        raise SamplerError("scale_h and scale_v must be finite and > 0")
    return [(max(1, math.floor(h * scale_v + 0.5)), max(1, math.floor(w * scale_h + 0.5))) for h, w in sizes]


def recipe_noise(
    sizes,
    rec_noise: np.ndarray,
    seed: int,
    n: int,
    scale_h: float = 1.0,
    scale_v: float = 1.0,
    start_scale: int = 0,
) -> dict[str, np.ndarray]:
    """Graph inputs z_0..z_N for ``n`` samples by the exported metadata's noise recipe.

    ``rng = numpy.random.default_rng(seed)`` draws every scale in order (one
    channel at scale 0, repeated to three); scales below ``start_scale`` take
    the reconstruction noise instead (z* resized at scale 0, zeros above).
    """
    if not 0 <= start_scale < len(sizes):
        raise SamplerError(f"start_scale must be in 0..{len(sizes) - 1}")
    rng = np.random.default_rng(seed)
    feeds = {}
    for k, (h, w) in enumerate(noise_sizes(sizes, scale_h, scale_v)):
        z = rng.standard_normal((n, h, w, 1 if k == 0 else 3), dtype=np.float32)
        if k < start_scale:
            z = np.repeat(rec_noise_at(rec_noise, (h, w)), n, axis=0) if k == 0 else np.zeros_like(z)
        feeds[f"z_{k}"] = np.repeat(z, 3, axis=-1) if z.shape[-1] == 1 else z
    return feeds


def walk_noise(
    sizes,
    rec_noise: np.ndarray,
    seed: int,
    frames: int,
    start_scale: int,
    alpha: float = 0.1,
    beta: float = 0.9,
    scale_h: float = 1.0,
    scale_v: float = 1.0,
) -> dict[str, np.ndarray]:
    """Graph inputs for ``frames`` animation frames (the batch axis is time).

    The animation recipe of ``singan_tf.applications.walk_noise``: scales
    n >= ``start_scale`` keep one draw of the noise recipe (``seed``, batch 1);
    scales below follow a momentum random walk pulled toward the
    reconstruction noise z_rec, ``z_t = alpha z_rec + (1 - alpha) (z_{t-1} +
    beta (z_{t-1} - z_{t-2}) + (1 - beta) eps_t)`` from z_rec, with eps drawn
    by ``numpy.random.default_rng([seed, 0xA417])`` scale by scale, frame by
    frame (one channel at scale 0), all in float32.
    """
    if frames < 2:
        raise SamplerError("frames must be >= 2")
    if not 1 <= start_scale <= len(sizes):
        raise SamplerError(f"animation start scale must be in 1..{len(sizes)}")
    if not (0.0 <= alpha <= 1.0 and 0.0 <= beta < 1.0):
        raise SamplerError("alpha must be in [0, 1] and beta in [0, 1)")
    fixed = recipe_noise(sizes, rec_noise, seed, 1, scale_h, scale_v)
    feeds = {name: np.repeat(z, frames, axis=0) for name, z in fixed.items()}
    rng = np.random.default_rng([seed, 0xA417])
    for n, (h, w) in enumerate(noise_sizes(sizes, scale_h, scale_v)[:start_scale]):
        z_rec = rec_noise_at(rec_noise, (h, w))[0] if n == 0 else np.zeros((h, w, 3), np.float32)
        z_prev = z_prev2 = z_rec
        walk = np.empty((frames, *z_rec.shape), np.float32)
        for t in range(frames):
            eps = rng.standard_normal(z_rec.shape, dtype=np.float32)
            z = alpha * z_rec + (1 - alpha) * (z_prev + beta * (z_prev - z_prev2) + (1 - beta) * eps)
            walk[t] = z
            z_prev2, z_prev = z_prev, z
        feeds[f"z_{n}"] = np.repeat(walk, 3, axis=-1) if walk.shape[-1] == 1 else walk
    return feeds


class Sampler:
    """An exported pyramid (``NAME.onnx``) ready to draw samples.

    Args:
        path: the ``.onnx`` file written by ``python -m export``; its metadata
            (sizes, noise amplitudes, z*) is read from the model itself.
        threads: onnxruntime intra-op threads (default: all cores).

    Example:
        >>> s = Sampler("exported/rocket.onnx")            # doctest: +SKIP
        >>> s.sample(seed=0, n=4, scale_h=2.0).shape       # doctest: +SKIP
        (4, 167, 500, 3)
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise SamplerError(f"{self.path}: no such model file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise SamplerError(f"{self.path}: not a loadable ONNX model ({err})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise SamplerError(f"{self.path}: no singan-tf metadata in the model")
        self.metadata = json.loads(props[METADATA_KEY])
        self.sizes = [tuple(s) for s in self.metadata["sizes"]]
        self.rec_noise = rec_noise_from(self.metadata)

    @property
    def num_scales(self) -> int:
        return len(self.sizes)

    def output_size(self, scale_h: float = 1.0, scale_v: float = 1.0) -> tuple[int, int]:
        return self.noise_sizes(scale_h, scale_v)[-1]

    def noise_sizes(self, scale_h: float = 1.0, scale_v: float = 1.0) -> list[tuple[int, int]]:
        return noise_sizes(self.sizes, scale_h, scale_v)

    def noise(
        self, seed: int, n: int, scale_h: float = 1.0, scale_v: float = 1.0, start_scale: int = 0
    ) -> dict[str, np.ndarray]:
        """The graph inputs for ``n`` samples, following the metadata's noise recipe."""
        return recipe_noise(self.sizes, self.rec_noise, seed, n, scale_h, scale_v, start_scale)

    def walk(self, seed: int, frames: int, start_scale: int, **walk) -> dict[str, np.ndarray]:
        """The graph inputs of an animation's frames; ``walk``: ``alpha``, ``beta``,
        ``scale_h``, ``scale_v`` of ``walk_noise``."""
        return walk_noise(self.sizes, self.rec_noise, seed, frames, start_scale, **walk)

    def generate(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on given noise; float32 [n, H, W, 3] in about [-1, 1]."""
        return self.session.run(["image"], feeds)[0]

    def sample(
        self, seed: int = 0, n: int = 1, scale_h: float = 1.0, scale_v: float = 1.0, start_scale: int = 0
    ) -> np.ndarray:
        """``n`` samples as uint8 [n, H, W, 3]."""
        if n < 1:
            raise SamplerError("n must be >= 1")
        image = self.generate(self.noise(seed, n, scale_h, scale_v, start_scale))
        return np.round((np.clip(image, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
