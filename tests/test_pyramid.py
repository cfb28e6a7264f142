import math

import numpy as np
import pytest
import tensorflow as tf

from singan_tf.errors import ConfigError
from singan_tf.pyramid import (
    build_pyramid,
    downscale,
    noise_sizes,
    pyramid_geometry,
    sr_steps,
    upsample,
)

REFERENCE_186x248 = [
    (25, 34),
    (33, 43),
    (42, 56),
    (54, 71),
    (69, 91),
    (88, 117),
    (113, 151),
    (145, 193),
    (186, 248),
]


def test_reference_test_vector_landscape():
    g = pyramid_geometry((186, 248))
    assert g.scale_factor == pytest.approx(0.778132, abs=1e-6)
    assert g.stop_scale == 8
    assert list(g.sizes) == REFERENCE_186x248
    assert g.working_size == (186, 248) and g.scale1 == 1.0


def test_portrait_is_the_transpose():
    g = pyramid_geometry((248, 186))
    assert list(g.sizes) == [(w, h) for h, w in REFERENCE_186x248]


def test_square():
    # num_scales = ceil(log(25/200)/log(.75)) + 1 = 9, nothing above max_size: stop_scale 9,
    # r = (25/200)^(1/9) = 0.793701
    g = pyramid_geometry((200, 200))
    assert g.stop_scale == 9
    assert g.scale_factor == pytest.approx(0.125 ** (1 / 9))
    assert g.sizes[0] == (25, 25) and g.sizes[-1] == (200, 200)
    assert [s[0] for s in g.sizes] == [25, 32, 40, 50, 63, 80, 100, 126, 159, 200]


def test_small_image():
    # 64x48: ceil(log(25/48)/log(.75)) + 1 = 4 scales below the original; r = (25/48)^(1/4)
    g = pyramid_geometry((64, 48))
    assert g.stop_scale == 4
    assert g.scale_factor == pytest.approx((25 / 48) ** 0.25)
    assert list(g.sizes) == [(34, 25), (40, 30), (47, 35), (55, 41), (64, 48)]


def test_larger_than_max_size():
    # 427x640: scale1 = 250/640 -> 167x250; num_scales = ceil(log(25/427)/log .75) + 1 = 11,
    # scale2stop = ceil(log(250/640)/log .75) = 4, stop_scale = 7, r = (25/167)^(1/7)
    g = pyramid_geometry((427, 640))
    assert g.scale1 == pytest.approx(250 / 640)
    assert g.working_size == (167, 250)
    assert g.stop_scale == 7
    assert g.scale_factor == pytest.approx((25 / 167) ** (1 / 7))
    assert g.sizes[0] == (25, 38) and g.sizes[-1] == (167, 250)
    assert len(g.sizes) == 8


def test_sizes_follow_ceil_of_scaled_working_size():
    g = pyramid_geometry((300, 451), min_size=25, max_size=250)
    h1, w1 = g.working_size
    for n, (h, w) in enumerate(g.sizes):
        s = g.scale_factor ** (g.stop_scale - n)
        assert (h, w) == (math.ceil(h1 * s - 1e-9), math.ceil(w1 * s - 1e-9))
    assert min(g.sizes[0]) == 25  # r is recomputed so the coarsest shorter side is min_size


@pytest.mark.parametrize("size", [(20, 30), (25, 40), (30, 400)])
def test_too_small_or_too_elongated_is_rejected(size):
    with pytest.raises(ConfigError, match="min_size=25"):
        pyramid_geometry(size)


def test_build_pyramid_on_real_image(rocket):
    g = pyramid_geometry(rocket.shape[:2])
    reals = build_pyramid(rocket, g)
    assert [tuple(r.shape) for r in reals] == [(1, h, w, 3) for h, w in g.sizes]
    finest = reals[-1].numpy()
    assert finest.min() >= -1.0 and finest.max() <= 1.0
    # Kept in float: not quantised to the 8-bit grid the reference round-trips through.
    steps = (finest + 1.0) * 127.5
    assert np.mean(np.abs(steps - np.round(steps)) > 1e-3) > 0.5


def test_downscale_is_antialiased():
    # White noise has no energy a 4x smaller image can represent: averaging
    # over the footprint shrinks it; point-sampling (no antialiasing) keeps most.
    noise = np.random.default_rng(0).standard_normal((64, 64, 1)).astype(np.float32)
    small = downscale(noise, (16, 16)).numpy()
    aliased = tf.image.resize(noise, (16, 16), "bicubic", antialias=False).numpy()
    assert small.std() < 0.4 * aliased.std()


def test_upsample_is_bilinear_with_half_pixel_centres():
    x = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)[None, ..., None]
    up = upsample(x, (4, 4)).numpy()[0, ..., 0]
    # half-pixel: output pixel i samples input coordinate (i + 0.5) / 2 - 0.5
    expected_row0 = [0.0, 0.25, 0.75, 1.0]
    np.testing.assert_allclose(up[0], expected_row0, atol=1e-6)
    np.testing.assert_allclose(up[:, 0], [0.0, 0.5, 1.5, 2.0], atol=1e-6)


def test_noise_sizes_for_any_aspect():
    sizes = ((25, 34), (33, 43))
    assert noise_sizes(sizes) == list(sizes)
    assert noise_sizes(sizes, scale_h=2.0) == [(25, 68), (33, 86)]
    assert noise_sizes(sizes, scale_v=0.5) == [(13, 34), (17, 43)]
    with pytest.raises(ConfigError):
        noise_sizes(sizes, scale_h=0)


def test_sr_steps():
    assert sr_steps(2.0) == (3, pytest.approx(2 ** (-1 / 3)))
    assert sr_steps(4.0)[0] == 6
    step = np.log(2 ** (1 / 3))
    for factor in (1.5, 3.0, 4.0, 7.5):
        k, r = sr_steps(factor)
        assert r**-k == pytest.approx(factor)
        assert abs(-np.log(r) - step) <= step / (2 * k) + 1e-12  # the closest r to 2^(-1/3)
    assert sr_steps(1.1) == (1, pytest.approx(1 / 1.1))  # at least one step
    with pytest.raises(ConfigError, match="--factor must be > 1"):
        sr_steps(1.0)
