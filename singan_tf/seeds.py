"""Named seed streams: every random draw of a run and the seed it comes from (docs/design.md §4.6).

A run has one seed (``TrainConfig.seed``, "s" below). Everything random is
drawn from a stream derived from it, so a resumed run draws what an
uninterrupted one would, and two draws never share a stream:

* ``rec_noise_rng(s)``: z*, drawn once per run (numpy).
* ``scale_seed(s, n)``: scale n's stream. It seeds the fresh initial
  weights of G_n and D_n (Keras' global seed), and iteration i of scale n
  uses the stateless seed pair ``(scale_seed(s, n), i)``.
* Within an iteration, ``substream(pair, k)`` splits that pair into
  ``ITERATION_STREAMS`` streams, named below.
* ``animation_rng(seed)``: the random walk of ``animate`` (numpy); sampling
  itself uses ``numpy.random.default_rng(seed)`` directly (the recipe
  exported models document).

Changing a number here changes every run trained afterwards: runs trained
before would no longer resume onto the same noise.
"""

from __future__ import annotations

import numpy as np

# Streams within one iteration's seed pair (s', i): stream k gets (s', i * ITERATION_STREAMS + k).
ITERATION_STREAMS = 64
CRITIC_FAKE, CRITIC_GP_MIX = 0, 1  # within a critic step's own stream
CRITIC_STEP = 2  # critic step k's own stream: CRITIC_STEP + 2k (k < 7)
GENERATOR_STEP = 16  # generator step k's noise: GENERATOR_STEP + k (k < 15)
COARSER_NOISE = 31  # z_{n-1} of a step that trains G_{n-1} along with G_n (TrainConfig.concurrent)
FROZEN_SCALE = 32  # the frozen coarser scale m's noise: FROZEN_SCALE + m (m < 32)

_SCALE_STRIDE = 1009  # a prime above any scale count: (s, n) -> s * 1009 + n is one-to-one
_REC_NOISE = 0x5EED
_ANIMATION = 0xA417


def scale_seed(seed: int, scale: int) -> int:
    """Scale n's stream: its nets' initial weights and the first half of its iterations' seed pairs."""
    return seed * _SCALE_STRIDE + scale


def substream(pair, k: int):
    """Stream ``k`` of a stateless seed pair ``(a, b)``: ``(a, b * ITERATION_STREAMS + k)``.

    ``pair`` is an int32 tensor of shape [2] (this runs inside the traced iteration).
    """
    import tensorflow as tf

    return tf.stack([pair[0], pair[1] * ITERATION_STREAMS + k])


def rec_noise_rng(seed: int) -> np.random.Generator:
    """The generator of z*, the coarsest scale's fixed reconstruction noise."""
    return np.random.default_rng([seed, _REC_NOISE])


def animation_rng(seed: int) -> np.random.Generator:
    """The generator of the animation walk's steps (``numpy.random.default_rng([seed, 0xA417])``)."""
    return np.random.default_rng([seed, _ANIMATION])
