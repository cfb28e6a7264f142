"""The exported graph: a trained pyramid as a ``tf.Module`` with two signatures.

* ``serving_default(z_0, ..., z_N) -> {"image"}``: unit-normal noise maps in
  (``[batch, h_n, w_n, 3]``, any batch/height/width), the image out in
  [-1, 1]. Noise amplitudes, padding and the between-scales upsampling live
  inside; each scale's output size is its noise map's size. It calls
  ``singan_tf.sampling.run_pyramid``, the very function the TF sampler runs,
  so the two agree to float precision.
* ``sample(seed, batch, scale_h, scale_v, start_scale) -> {"image"}``: draws
  the noise inside the graph (stateless Philox) and returns uint8 images,
  for plain REST clients. Scales below ``start_scale`` use the
  reconstruction noise (z* resized to the requested size, zeros above).
  ``scale_h``/``scale_v`` are float64 and the sizes are computed in float64,
  so a request gives the very sizes ``singan_tf.pyramid.noise_sizes`` and
  ``serving.sampler.noise_sizes`` compute from the same number (in float32,
  45 x 0.7 rounds to 32 where Python's 31.499999999999996 gives 31).
"""

from __future__ import annotations

import tensorflow as tf

from singan_tf.sampling import Pyramid, run_pyramid


def noise_specs(num_scales: int) -> list[tf.TensorSpec]:
    return [tf.TensorSpec([None, None, None, 3], tf.float32, name=f"z_{n}") for n in range(num_scales)]


def graph_noise_sizes(sizes, scale_h: tf.Tensor, scale_v: tf.Tensor) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """Each scale's noise size inside the graph: ``singan_tf.pyramid.noise_sizes``'s rule
    (half up, at least 1) on the same float64 operations, so the sizes agree exactly."""
    scale_h = tf.cast(scale_h, tf.float64)
    scale_v = tf.cast(scale_v, tf.float64)

    def scaled(n: int, factor: tf.Tensor) -> tf.Tensor:
        return tf.maximum(tf.cast(tf.floor(tf.constant(n, tf.float64) * factor + 0.5), tf.int32), 1)

    return [(scaled(h, scale_v), scaled(w, scale_h)) for h, w in sizes]


class PyramidModule(tf.Module):
    """A frozen pyramid with its metadata as constants, ready for tf.saved_model.save."""

    def __init__(self, pyramid: Pyramid):
        super().__init__(name="singan")
        self.generators = list(pyramid.generators)
        self.noise_amps = [float(a) for a in pyramid.noise_amps]
        self.sizes = [tuple(int(v) for v in s) for s in pyramid.sizes]
        self.rec_noise = tf.constant(pyramid.rec_noise, tf.float32)
        n = len(self.generators)
        self.serving_default = tf.function(self._from_noise, input_signature=noise_specs(n), autograph=False)
        self.sample = tf.function(
            self._from_seed,
            input_signature=[
                tf.TensorSpec([], tf.int64, name="seed"),
                tf.TensorSpec([], tf.int32, name="batch"),
                tf.TensorSpec([], tf.float64, name="scale_h"),
                tf.TensorSpec([], tf.float64, name="scale_v"),
                tf.TensorSpec([], tf.int32, name="start_scale"),
            ],
            autograph=False,
        )

    def forward(self, noises) -> tf.Tensor:
        return run_pyramid(self.generators, self.noise_amps, list(noises))

    def _from_noise(self, *noises):
        return {"image": self.forward(noises)}

    def _from_seed(self, seed, batch, scale_h, scale_v, start_scale):
        noises = []
        for n, (hn, wn) in enumerate(graph_noise_sizes(self.sizes, scale_h, scale_v)):
            shape = tf.stack([batch, hn, wn, 1 if n == 0 else 3])
            fresh = tf.random.stateless_normal(
                shape, tf.stack([seed, tf.constant(n, tf.int64)]), alg="philox"
            )
            if n == 0:
                rec = tf.image.resize(self.rec_noise, tf.stack([hn, wn]), method="bilinear")
                rec = tf.tile(rec, tf.stack([batch, 1, 1, 1]))
            else:
                rec = tf.zeros_like(fresh)
            keep = tf.cast(n >= start_scale, tf.float32)  # 1: sample freely, 0: reconstruction path
            noises.append(keep * fresh + (1.0 - keep) * rec)
        image = self.forward(noises)
        return {"image": tf.cast(tf.round((tf.clip_by_value(image, -1.0, 1.0) + 1.0) * 127.5), tf.uint8)}
