import numpy as np
import pytest

from singan_tf.errors import InputError
from singan_tf.metrics import (
    _blur_down,
    _blur_up,
    bandpass_swd,
    diversity,
    feature_stats,
    frechet_distance,
    inception_features,
    laplacian_pyramid,
    patch_swd,
    patch_swd_levels,
    reconstruction_rmse,
    sifid,
)


def test_identical_images_give_zero_swd(rocket):
    img = rocket[:120, :160]
    assert patch_swd(img, img, projections=64) == pytest.approx(0.0, abs=0.03)


def test_shifted_copy_scores_far_lower_than_noise(rocket):
    img = rocket[:120, :160]
    shifted = np.roll(img, (7, 11), axis=(0, 1))
    noise = np.random.default_rng(0).uniform(-1, 1, img.shape).astype(np.float32)
    assert patch_swd(shifted, img) < 0.25 * patch_swd(noise, img)


def test_swd_levels_tell_texture_from_layout(rocket):
    img = rocket[:128, :192]
    # 4x blurred (down twice, back up by pixel repetition): layout kept, texture gone.
    from singan_tf.metrics import _blur_down

    coarse = _blur_down(_blur_down(img[None]))[0]
    blurred = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)
    levels = patch_swd_levels(blurred, img)
    assert len(levels) == 3
    assert levels[0] > 2 * levels[-1]
    assert patch_swd(blurred, img) == pytest.approx(np.mean(levels))


def test_laplacian_bands_sum_back_to_the_image(rocket):
    img = rocket[:167, :250]
    bands = laplacian_pyramid(img)
    assert [b.shape[1:3] for b in bands] == [(167, 250), (84, 125), (42, 63), (21, 32)]  # down to 16 px
    rec = bands[-1]
    for band in reversed(bands[:-1]):
        rec = _blur_up(rec, band.shape[1:3]) + band
    np.testing.assert_allclose(rec[0], img, atol=1e-5)


def test_bandpass_swd_known_answers(rocket):
    img = rocket[:167, :250]
    assert bandpass_swd(img, img) == [0.0, 0.0, 0.0, 0.0]  # identical images: 0 in every band
    shifted = np.roll(img, (5, 9), axis=(0, 1))
    blurred = _blur_up(_blur_down(img[None]), img.shape[:2])[0]  # the finest octave removed
    swd_shift, swd_blur = bandpass_swd(shifted, img), bandpass_swd(blurred, img)
    assert swd_blur[0] > 3 * swd_shift[0]  # blur is worse in the finest band than a shift
    assert swd_blur[-1] < swd_shift[-1]  # ...and no worse in the low-pass residual
    # The Gaussian level lets most of that blur pass: its patches keep the low frequencies.
    gauss_shift, gauss_blur = patch_swd_levels(shifted, img)[0], patch_swd_levels(blurred, img)[0]
    assert swd_blur[0] / swd_shift[0] > 2 * gauss_blur / gauss_shift
    # Many samples against one image: same bands, finite distances.
    noisy = np.stack([img + 0.05 * np.random.default_rng(k).standard_normal(img.shape) for k in range(3)])
    assert all(np.isfinite(bandpass_swd(noisy.astype(np.float32), img)))


def test_more_projections_reduce_variance(rocket):
    img, other = rocket[:96, :128], rocket[200:296, 300:428]
    few = [patch_swd(other, img, projections=4, seed=s) for s in range(12)]
    many = [patch_swd(other, img, projections=256, seed=s) for s in range(12)]
    assert np.std(many) < 0.5 * np.std(few)


def test_diversity_and_rmse(rocket):
    img = rocket[:50, :60]
    same = np.stack([img] * 16)
    assert diversity(same, img) == pytest.approx(0.0, abs=1e-5)
    noisy = same + np.random.default_rng(1).normal(0, 0.1, same.shape).astype(np.float32)
    # per-pixel std over 16 draws averages ~0.95 sigma (ddof 0)
    assert diversity(noisy, img) == pytest.approx(0.95 * 0.1 / img.std(), rel=0.05)
    with pytest.raises(InputError):
        diversity(img, img)
    assert reconstruction_rmse(img + 0.05, img) == pytest.approx(0.05, rel=1e-4)


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    cov = a @ a.T + np.eye(5)
    mu = rng.standard_normal(5)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)
    # Shift only: |d|^2.
    assert frechet_distance(mu, cov, mu + 2.0, cov) == pytest.approx(4.0 * 5, rel=1e-8)
    # Isotropic covariances s1^2 I and s2^2 I: d * (s1 - s2)^2.
    assert frechet_distance(mu, 4.0 * np.eye(5), mu, 9.0 * np.eye(5)) == pytest.approx(5 * (2 - 3) ** 2)


def test_feature_stats_pool_all_positions():
    feats = np.random.default_rng(0).standard_normal((2, 30, 40, 3))
    mu, cov = feature_stats(feats)
    assert mu.shape == (3,) and cov.shape == (3, 3)
    np.testing.assert_allclose(cov, np.eye(3), atol=0.05)


def test_sifid_plumbing_with_random_inception(rocket):
    net = inception_features(None)  # random weights: plumbing only
    assert net.output_shape[-1] == 192
    img = rocket[:150, :200]
    scores = sifid(np.stack([img, img[::-1]]), img, net)
    assert scores[0] == pytest.approx(0.0, abs=1e-3)
    assert scores[1] > scores[0]


def test_sifid_weights_file_errors(tmp_path):
    with pytest.raises(InputError, match="no such Inception-V3 weights file"):
        inception_features(tmp_path / "missing.weights.h5")
