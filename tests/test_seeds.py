"""The named seed streams (singan_tf/seeds.py): the numbers runs depend on, and that streams stay apart."""

import itertools

import numpy as np
import tensorflow as tf

from singan_tf import seeds
from singan_tf.config import TrainConfig
from singan_tf.training import draw_rec_noise


def test_scale_seed_is_one_to_one_and_pinned():
    assert (
        seeds.scale_seed(0, 0) == 0 and seeds.scale_seed(3, 2) == 3 * 1009 + 2
    )  # runs since 0.1.0 use these
    pairs = itertools.product(range(50), range(40))
    assert len({seeds.scale_seed(s, n) for s, n in pairs}) == 50 * 40


def test_iteration_streams_never_collide():
    # Stream k of iteration i is (a, i * 64 + k): distinct for every (i, k) with k < 64.
    pair = tf.constant([7, 0], tf.int32)
    named = [seeds.CRITIC_FAKE, seeds.CRITIC_GP_MIX]
    named += [seeds.CRITIC_STEP + 2 * k + j for k in range(3) for j in (0, 1)]
    named += [seeds.GENERATOR_STEP + k for k in range(3)] + [seeds.FROZEN_SCALE + m for m in range(16)]
    named += [seeds.COARSER_NOISE]
    assert max(named) < seeds.ITERATION_STREAMS and len(set(named)) == len(named)
    assert (
        seeds.CRITIC_STEP + 2 * 6 + 1 < seeds.GENERATOR_STEP
        and seeds.GENERATOR_STEP + 14 < seeds.COARSER_NOISE < seeds.FROZEN_SCALE
    )  # room for 7 / 15 steps
    streams = {
        tuple(seeds.substream(tf.constant([7, i], tf.int32), k).numpy()) for i in range(5) for k in range(64)
    }
    assert len(streams) == 5 * 64
    assert tuple(seeds.substream(pair + [0, 3], seeds.FROZEN_SCALE + 1).numpy()) == (7, 3 * 64 + 33)


def test_rec_noise_and_animation_draw_from_their_own_streams():
    z = draw_rec_noise(TrainConfig(seed=4), (5, 6))
    expected = np.random.default_rng([4, 0x5EED]).standard_normal((1, 5, 6, 1), dtype=np.float32)
    np.testing.assert_array_equal(z, expected)
    walk = seeds.animation_rng(4).standard_normal(8)
    np.testing.assert_array_equal(walk, np.random.default_rng([4, 0xA417]).standard_normal(8))
    assert not np.array_equal(walk, np.random.default_rng(4).standard_normal(8))  # not the samples' stream
