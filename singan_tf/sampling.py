"""Sampling from a trained pyramid (docs/design.md §6).

One function, ``run_pyramid``, is the forward pass of a pyramid: sampling,
reconstruction, injection and super-resolution (applications) and the
exported graphs call it, so they share the same upsampling op and the same
arithmetic. ``RandomPath`` runs the same per-scale step with its noise drawn
inside the graph from a seed tensor: training's frozen coarser pyramid.

Noise for ``Pyramid.sample`` is drawn with numpy's PCG64 from the seed, in
scale order, so a numpy-only client (the ONNX runner) reproduces a TF
sample bit for bit from the same seed (see ``Pyramid.noise``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from singan_tf.config import TrainConfig
from singan_tf.models import ScaleGenerator
from singan_tf.preflight import check_injection_scale, check_start_scale
from singan_tf.pyramid import PyramidGeometry, Size, downscale, noise_sizes, upsample
from singan_tf.seeds import FROZEN_SCALE, substream


def run_pyramid(
    generators: Sequence[ScaleGenerator],
    noise_amps: Sequence[float],
    noises: Sequence[tf.Tensor | None],
    first_scale: int = 0,
    prev: tf.Tensor | None = None,
    training: bool = False,
) -> tf.Tensor:
    """``out_n = G_n(amp_n * z_n + up(out_{n-1}), up(out_{n-1}))`` for n >= first_scale.

    Args:
        generators: G_0..G_k (coarsest first).
        noise_amps: amp_0..amp_k.
        noises: z_0..z_k, each [B, h_n, w_n, C] (C = 1 broadcasts, as at the
            coarsest scale). Entries below ``first_scale`` are ignored. Each
            scale's output size is its noise map's size.
        first_scale: first scale to run.
        prev: output of scale ``first_scale - 1`` (any size; it is upsampled
            to z_first's size). None means zeros (the coarsest scale's input).
        training: BatchNorm mode; frozen generators always run with False.

    Returns:
        The last scale's output, [B, h_k, w_k, 3] float32, not clipped.
    """
    out = prev
    for n in range(first_scale, len(generators)):
        z = tf.convert_to_tensor(noises[n], tf.float32)
        if out is None:
            shape = tf.shape(z)
            up = tf.zeros(tf.stack([shape[0], shape[1], shape[2], 3]), tf.float32)
        else:
            up = upsample(out, tf.shape(z)[1:3])
        out = generators[n]((noise_amps[n] * z + up, up), training=training)
    return out


class RandomPath:
    """Frozen generators on fresh noise drawn from a seed tensor: ``out_k`` of a random sample.

    The training step's ``prev`` comes from here: scale n trains against
    ``up(out_{n-1})`` of the frozen G_0..G_{n-1}, on new noise every
    iteration. Noise is stateless Philox, scale m's from stream
    ``FROZEN_SCALE + m`` of the iteration's seed pair (``singan_tf.seeds``),
    so a resumed iteration draws the same. One traced function per
    generator (its noise draw, the upsampling, its inference pass), so a
    pyramid that grows by a scale traces only the new one.
    ``__call__(seed)`` returns the last scale's output at its own size, or
    None for an empty path.
    """

    def __init__(self, generators=(), noise_amps=(), sizes=()):
        self._steps: list[Callable] = []
        for g, amp, size in zip(generators, noise_amps, sizes, strict=True):
            self.append(g, amp, size)

    def __len__(self) -> int:
        return len(self._steps)

    def append(self, generator: ScaleGenerator, noise_amp: float, size: Size) -> None:
        m = len(self._steps)
        h, w = size
        channels = 1 if m == 0 else 3

        def forward(prev, seed):
            z = tf.random.stateless_normal(
                (1, h, w, channels), substream(seed, FROZEN_SCALE + m), alg="philox"
            )
            up = tf.zeros((1, h, w, 3)) if prev is None else upsample(prev, (h, w))
            return generator((noise_amp * z + up, up), training=False)

        seed_spec = tf.TensorSpec([2], tf.int32)
        if m == 0:
            self._steps.append(tf.function(lambda seed: forward(None, seed), input_signature=[seed_spec]))
        else:
            spec = tf.TensorSpec([1, None, None, 3], tf.float32)
            self._steps.append(tf.function(forward, input_signature=[spec, seed_spec], autograph=False))

    def __call__(self, seed: tf.Tensor) -> tf.Tensor | None:
        out = None
        for m, step in enumerate(self._steps):
            out = step(seed) if m == 0 else step(out, seed)
        return out


@dataclasses.dataclass
class Pyramid:
    """A trained, frozen pyramid: generators plus per-scale metadata.

    Load one with ``singan_tf.rundir.load_pyramid(run_dir)``. During training
    it holds the scales finished so far (the frozen coarser pyramid of the
    scale in training) and grows by ``append_scale``.
    """

    config: TrainConfig
    geometry: PyramidGeometry
    generators: list[ScaleGenerator]
    noise_amps: list[float]
    rec_noise: np.ndarray  # z*, [1, h_0, w_0, 1], the coarsest scale's fixed noise
    traced: bool = True  # False: run eagerly (one-off previews during training)

    def __post_init__(self) -> None:
        self._functions: dict[tuple[int, bool], tf.types.experimental.PolymorphicFunction] = {}
        self._random_paths: dict[tuple[Size, ...], RandomPath] = {}

    @property
    def num_scales(self) -> int:
        return len(self.generators)

    @property
    def sizes(self) -> tuple[Size, ...]:
        return self.geometry.sizes[: self.num_scales]

    def coarser(self, num_scales: int) -> Pyramid:
        """The pyramid of the first ``num_scales`` scales (sharing this one's generators)."""
        return dataclasses.replace(
            self, generators=self.generators[:num_scales], noise_amps=self.noise_amps[:num_scales]
        )

    def append_scale(self, generator: ScaleGenerator, noise_amp: float) -> None:
        """Add the next finer scale (training just froze it); the random path at the pyramid's
        own sizes grows with it, those of its coarser scales stay, other cached passes are
        dropped."""
        own = self._random_paths.pop(self._key(self.sizes), None)
        self.generators.append(generator)
        self.noise_amps.append(noise_amp)
        self._functions.clear()
        prefixes = {self._key(self.sizes[:m]) for m in range(1, self.num_scales)}
        self._random_paths = {k: v for k, v in self._random_paths.items() if k in prefixes}
        if own is not None:
            own.append(generator, noise_amp, self.sizes[-1])
            self._random_paths[self._key(self.sizes)] = own

    @staticmethod
    def _key(sizes: Sequence[Size]) -> tuple[Size, ...]:
        return tuple((int(h), int(w)) for h, w in sizes)

    def random_path(self, sizes: Sequence[Size] | None = None) -> RandomPath:
        """This pyramid as a ``RandomPath`` (at ``sizes``, default its own), built once per sizes;
        fewer sizes than scales: its first ``len(sizes)`` scales."""
        key = self._key(self.sizes if sizes is None else sizes)
        if key not in self._random_paths:
            m = len(key)
            self._random_paths[key] = RandomPath(self.generators[:m], self.noise_amps[:m], key)
        return self._random_paths[key]

    def _forward(self, first_scale: int, with_prev: bool):
        """The pyramid as a tf.function of dynamic-shape noise maps, traced once
        per (first_scale, with_prev)."""
        key = (first_scale, with_prev)
        if key not in self._functions:
            specs = [tf.TensorSpec([None, None, None, None], tf.float32)] * (self.num_scales - first_scale)
            prev_spec = [tf.TensorSpec([None, None, None, 3], tf.float32)] if with_prev else []

            def forward(noises, *prev):
                full = [None] * first_scale + list(noises)
                return run_pyramid(self.generators, self.noise_amps, full, first_scale, *prev)

            self._functions[key] = tf.function(forward, input_signature=[specs, *prev_spec], autograph=False)
        return self._functions[key]

    def generate(
        self, noises: Sequence[np.ndarray | tf.Tensor | None], first_scale: int = 0, prev=None
    ) -> tf.Tensor:
        """Run the pyramid on given noise maps (one per scale); see ``run_pyramid``."""
        zs = [tf.convert_to_tensor(z, tf.float32) for z in noises[first_scale:]]
        prev_args = [] if prev is None else [tf.convert_to_tensor(prev, tf.float32)]
        if not self.traced:
            return run_pyramid(
                self.generators, self.noise_amps, [None] * first_scale + zs, first_scale, *prev_args
            )
        return self._forward(first_scale, prev is not None)(zs, *prev_args)

    def rec_noises(self, sizes: Sequence[Size], batch: int = 1) -> list[np.ndarray]:
        """The reconstruction path's noise: z* at scale 0 (resized if the size
        differs), zeros above (G_n then maps up(rec_{n-1}) to rec_n)."""
        h0, w0 = sizes[0]
        z0 = self.rec_noise
        if (h0, w0) != tuple(z0.shape[1:3]):
            z0 = upsample(z0, (h0, w0)).numpy()
        out = [np.repeat(z0, batch, axis=0).astype(np.float32)]
        out += [np.zeros((batch, h, w, 3), np.float32) for h, w in sizes[1:]]
        return out

    def noise(
        self, seed: int, batch: int, scale_h: float = 1.0, scale_v: float = 1.0, start_scale: int = 0
    ) -> list[np.ndarray]:
        """Noise maps for ``batch`` samples: the recipe numpy-only clients copy.

        ``rng = numpy.random.default_rng(seed)``; for every scale n in order,
        ``rng.standard_normal((batch, h_n, w_n, C), dtype=float32)`` with C = 1
        at scale 0 and 3 above, drawn for all scales even below
        ``start_scale``; scales below ``start_scale`` then use the
        reconstruction noise instead.
        """
        check_start_scale(start_scale, self.num_scales)
        sizes = noise_sizes(self.sizes, scale_h, scale_v)
        rng = np.random.default_rng(seed)
        noises = [
            rng.standard_normal((batch, h, w, 1 if n == 0 else 3), dtype=np.float32)
            for n, (h, w) in enumerate(sizes)
        ]
        if start_scale > 0:
            noises[:start_scale] = self.rec_noises(sizes, batch)[:start_scale]
        return noises

    def sample(
        self,
        num: int = 1,
        seed: int = 0,
        scale_h: float = 1.0,
        scale_v: float = 1.0,
        start_scale: int = 0,
        batch_size: int = 8,
    ) -> np.ndarray:
        """Draw ``num`` samples, [num, H, W, 3] float32 in (about) [-1, 1].

        Samples are drawn in batches of ``batch_size``; batch i uses seed
        ``seed + i``. Scales below ``start_scale`` follow the reconstruction
        path, so the image's global layout is kept.
        """
        out = []
        for i, first in enumerate(range(0, num, batch_size)):
            b = min(batch_size, num - first)
            out.append(self.generate(self.noise(seed + i, b, scale_h, scale_v, start_scale)).numpy())
        return np.concatenate(out, axis=0)

    def reconstruct(self) -> np.ndarray:
        """The reconstruction of the training image at the finest scale, [1, H, W, 3]."""
        return self.generate(self.rec_noises(self.sizes)).numpy()

    def check_injection_scale(self, scale: int) -> None:
        check_injection_scale(scale, self.num_scales)

    def inject(
        self,
        image: np.ndarray,
        scale: int,
        seed: int = 0,
        noise_scale: float = 1.0,
        scale_h: float = 1.0,
        scale_v: float = 1.0,
    ) -> np.ndarray:
        """Feed ``image`` (downscaled to scale-1's size) as out_{scale-1} and
        run scales ``scale``..N (paint-to-image, harmonization, editing).

        ``scale_h``/``scale_v`` size the pyramid as in ``sample`` (an image of
        another aspect keeps it); ``noise_scale`` multiplies the noise of the
        scales that run (0: no new randomness, only the learned detail).
        """
        self.check_injection_scale(scale)
        img = np.asarray(image, np.float32)
        img = img[None] if img.ndim == 3 else img
        sizes = noise_sizes(self.sizes, scale_h, scale_v)
        prev = downscale(img, sizes[scale - 1])
        noises = self.noise(seed, img.shape[0], scale_h, scale_v)
        noises = [z * noise_scale for z in noises]
        return self.generate(noises, first_scale=scale, prev=prev).numpy()
