"""Sampling from a trained pyramid (singan_tf/sampling.py), on the session's trained run."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from singan_tf.errors import ConfigError
from singan_tf.images import load_image, to_uint8
from singan_tf.pyramid import downscale, noise_sizes, upsample
from singan_tf.rundir import RunDir, load_pyramid
from singan_tf.sampling import Pyramid, run_pyramid

TOL = 1e-5  # traced (Pyramid.generate) against eager (run_pyramid) arithmetic


def by_hand(pyramid: Pyramid, noises, first_scale: int = 0, prev=None) -> np.ndarray:
    """out_n = G_n(amp_n * z_n + up(out_{n-1}), up(out_{n-1})), written out once more."""
    out = prev
    for n in range(first_scale, pyramid.num_scales):
        z = np.asarray(noises[n], np.float32)
        size = z.shape[1:3]
        up = np.zeros((len(z), *size, 3), np.float32) if out is None else upsample(out, size).numpy()
        x = pyramid.noise_amps[n] * np.broadcast_to(z, up.shape) + up
        out = pyramid.generators[n]((tf.constant(x), tf.constant(up)), training=False).numpy()
    return out


# -- the forward pass and the noise recipe --------------------------------------------
def test_run_pyramid_is_the_papers_forward_pass(pyramid):
    noises = pyramid.noise(seed=1, batch=2, scale_h=1.3)
    out = run_pyramid(pyramid.generators, pyramid.noise_amps, noises).numpy()
    np.testing.assert_allclose(out, by_hand(pyramid, noises), rtol=0, atol=TOL)
    assert out.shape == (2, *noise_sizes(pyramid.sizes, 1.3)[-1], 3)
    # The pyramid's traced and eager paths compute the same.
    np.testing.assert_allclose(pyramid.generate(noises).numpy(), out, rtol=0, atol=TOL)
    eager = Pyramid(
        pyramid.config,
        pyramid.geometry,
        pyramid.generators,
        pyramid.noise_amps,
        pyramid.rec_noise,
        traced=False,
    )
    np.testing.assert_allclose(eager.generate(noises).numpy(), out, rtol=0, atol=TOL)
    # From a later scale, on a given coarser image (of any size): entries below are ignored.
    prev = np.random.default_rng(0).uniform(-1, 1, (2, 17, 23, 3)).astype(np.float32)
    later = run_pyramid(pyramid.generators, pyramid.noise_amps, [None, *noises[1:]], 1, prev).numpy()
    np.testing.assert_allclose(later, by_hand(pyramid, noises, 1, prev), rtol=0, atol=TOL)
    assert np.abs(later - out).mean() > 0.05  # the coarser image matters


def test_noise_is_numpys_pcg64_in_scale_order(pyramid):
    """The recipe numpy-only clients (ONNX runner, browser) copy, to the bit."""
    seed, batch = 2**40 + 3, 3
    noises = pyramid.noise(seed, batch, scale_h=1.5, scale_v=0.7)
    rng = np.random.default_rng(seed)
    sizes = noise_sizes(pyramid.sizes, 1.5, 0.7)
    assert [z.shape for z in noises] == [(batch, h, w, 1 if n == 0 else 3) for n, (h, w) in enumerate(sizes)]
    for n, z in enumerate(noises):
        assert z.dtype == np.float32
        want = rng.standard_normal(z.shape, dtype=np.float32)
        np.testing.assert_array_equal(z, want, err_msg=f"scale {n}")
    assert not np.array_equal(pyramid.noise(seed + 1, batch)[0], pyramid.noise(seed, batch)[0])


def test_start_scale_uses_the_reconstruction_noise_below(pyramid):
    free = pyramid.noise(7, 2, scale_h=1.5)
    rec = pyramid.rec_noises(noise_sizes(pyramid.sizes, 1.5), 2)
    for start in range(pyramid.num_scales):
        noises = pyramid.noise(7, 2, scale_h=1.5, start_scale=start)
        for n in range(pyramid.num_scales):
            # Below the start: z* at scale 0, zeros above; from the start on, the same draws as
            # a free sample (every scale is drawn, so a scale's noise does not depend on the start).
            np.testing.assert_array_equal(noises[n], rec[n] if n < start else free[n], err_msg=f"{start}/{n}")
    # z* resized to a wider scale 0, zeros above it.
    assert rec[0].shape == (2, *noise_sizes(pyramid.sizes, 1.5)[0], 1)
    np.testing.assert_allclose(rec[0][1], upsample(pyramid.rec_noise, rec[0].shape[1:3])[0], atol=1e-6)
    assert all(not z.any() for z in rec[1:])
    np.testing.assert_array_equal(pyramid.rec_noises(pyramid.sizes)[0], pyramid.rec_noise)
    with pytest.raises(ConfigError, match="start scale"):
        pyramid.noise(0, 1, start_scale=pyramid.num_scales)


def test_a_sample_from_a_start_scale_continues_the_reconstruction(pyramid):
    k = pyramid.num_scales - 1
    rec_below = run_pyramid(
        pyramid.generators[:k], pyramid.noise_amps[:k], pyramid.rec_noises(pyramid.sizes)[:k]
    )
    noises = pyramid.noise(3, 2)
    expected = run_pyramid(pyramid.generators, pyramid.noise_amps, noises, first_scale=k, prev=rec_below)
    np.testing.assert_allclose(pyramid.sample(2, seed=3, start_scale=k), expected.numpy(), rtol=0, atol=TOL)


def test_batch_i_of_a_sample_uses_seed_plus_i(pyramid):
    samples = pyramid.sample(5, seed=20, batch_size=2)
    assert samples.shape == (5, *pyramid.sizes[-1], 3)
    parts = [pyramid.generate(pyramid.noise(20 + i, b)).numpy() for i, b in enumerate((2, 2, 1))]
    np.testing.assert_allclose(samples, np.concatenate(parts), rtol=0, atol=TOL)
    assert len({s.tobytes() for s in samples}) == 5


def test_reconstruction_is_the_rec_noise_path(pyramid):
    rec = pyramid.reconstruct()
    np.testing.assert_allclose(rec, by_hand(pyramid, pyramid.rec_noises(pyramid.sizes)), rtol=0, atol=TOL)
    np.testing.assert_array_equal(rec, pyramid.reconstruct())  # no randomness


# -- on the trained image -------------------------------------------------------------


def test_reconstruction_matches_the_image(pyramid, trained_run):
    real = load_image(RunDir(trained_run).image_path)
    rec = pyramid.reconstruct()[0]
    rmse = float(np.sqrt(np.mean((rec - real) ** 2)))
    assert rmse < 0.1, rmse  # image std is ~0.5 on the [-1, 1] scale


def test_samples_differ_from_each_other_and_from_the_image(pyramid, trained_run):
    real = load_image(RunDir(trained_run).image_path)
    samples = pyramid.sample(6, seed=11)
    assert samples.shape == (6, 43, 64, 3)
    diversity = samples.std(axis=0).mean() / real.std()
    assert diversity > 0.05, diversity
    for s in samples:
        assert np.sqrt(np.mean((s - real) ** 2)) > 0.05
    # ...yet they look like the image: colour statistics stay close.
    assert abs(samples.mean() - real.mean()) < 0.15


def test_two_times_wider_sample_has_no_border_seams(pyramid):
    wide = pyramid.sample(4, seed=5, scale_h=2.0)
    assert wide.shape == (4, 43, 128, 3)

    def edge_energy(x):
        return np.abs(np.diff(x, axis=2)).mean(axis=(0, 1, 3))

    e = edge_energy(wide)
    border = np.concatenate([e[:5], e[-5:]]).mean()
    centre = e[20:-20].mean()
    assert 0.33 < border / centre < 3.0, (border, centre)
    # no constant/saturated band at the borders
    assert wide[:, :, :5].std() > 0.3 * wide[:, :, 20:-20].std()


def test_start_scale_keeps_the_layout(pyramid, trained_run):
    real = load_image(RunDir(trained_run).image_path)

    def dist(start):
        s = pyramid.sample(8, seed=2, start_scale=start)
        return float(np.mean((s - real[None]) ** 2))

    free = dist(0)
    assert dist(1) < 0.8 * free
    assert dist(pyramid.num_scales - 1) < 0.8 * free


def test_reload_reproduces_samples(pyramid, trained_run):
    again = load_pyramid(trained_run)
    np.testing.assert_array_equal(pyramid.sample(2, seed=9), again.sample(2, seed=9))
    assert not np.array_equal(pyramid.sample(2, seed=9), pyramid.sample(2, seed=10))


def test_injection_runs_the_finer_scales(pyramid, trained_run):
    real = load_image(RunDir(trained_run).image_path)
    out = pyramid.inject(real, scale=1, seed=0)
    assert out.shape == (1, 43, 64, 3)
    assert np.sqrt(np.mean((out[0] - real) ** 2)) < 0.2
    # Exactly: the image downscaled to scale 0's size as out_0, then scales 1..N on the seed's noise.
    prev = downscale(real[None], pyramid.sizes[0])
    noises = pyramid.noise(0, 1)
    np.testing.assert_allclose(out, by_hand(pyramid, noises, 1, prev), rtol=0, atol=TOL)
    quiet = pyramid.inject(real, scale=1, seed=0, noise_scale=0.0)
    np.testing.assert_allclose(quiet, by_hand(pyramid, [0 * z for z in noises], 1, prev), rtol=0, atol=TOL)
    np.testing.assert_array_equal(quiet, pyramid.inject(real, scale=1, seed=5, noise_scale=0.0))
    # An upside-down image stays upside down: the injected image, not the pyramid, sets the layout.
    flipped = pyramid.inject(real[::-1], scale=1, seed=0, noise_scale=0.0)[0]
    assert np.mean((flipped - real[::-1]) ** 2) < 0.5 * np.mean((flipped - real) ** 2)


def test_sample_cli_writes_pngs(trained_run, tmp_path):
    from PIL import Image

    from singan_tf.cli import command_main

    out = tmp_path / "s"
    code = command_main(
        "sample", [trained_run, "--num", "3", "--scale-h", "1.5", "--seed", "4", "--out", str(out)]
    )
    assert code == 0
    files = sorted(Path(out).glob("sample_*.png"))
    assert [f.name for f in files] == ["sample_000.png", "sample_001.png", "sample_002.png"]
    expected = to_uint8(load_pyramid(trained_run).sample(3, seed=4, scale_h=1.5))
    for f, want in zip(files, expected, strict=True):
        got = np.asarray(Image.open(f))
        assert got.shape == (43, 96, 3)
        assert np.abs(got.astype(int) - want).max() <= 1  # the PNG is the sample, to the rounding
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.shape[0] >= 43 and sheet.shape[1] >= 96 * 2
