"""The five applications (singan_tf/applications/) and their CLI commands, on the session's
tiny trained run (3 scales up to 43x64) and one tiny SR run trained here (marked slow)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from singan_tf import applications
from singan_tf.cli import main
from singan_tf.errors import ConfigError
from singan_tf.images import load_image, load_mask, save_image, to_uint8, write_animation
from singan_tf.pyramid import downscale, upsample
from singan_tf.rundir import RunDir, load_nets


@pytest.fixture(scope="module")
def training_image(trained_run) -> np.ndarray:
    return RunDir(trained_run).read_image()


def lowpass(image: np.ndarray, size) -> np.ndarray:
    return downscale(np.clip(image, -1, 1), size).numpy()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def high_freq_energy(image: np.ndarray) -> float:
    """Mean squared difference to the 3x3 box-blurred image."""
    pad = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    blur = sum(pad[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9
    return float(np.mean((image - blur) ** 2))


def pasted(image: np.ndarray, patch_source: np.ndarray, top: int, left: int, size: int):
    """``image`` with a ``size`` square of ``patch_source`` pasted at (top, left), and its 0/1 mask."""
    out = image.copy()
    out[top : top + size, left : left + size] = downscale(patch_source, (size, size)).numpy().clip(-1, 1)
    mask = np.zeros((*image.shape[:2], 1), np.float32)
    mask[top : top + size, left : left + size] = 1.0
    return out, mask


def run_files(run) -> dict[str, str]:
    """Every file of a run directory, by path: its SHA-256."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(run).rglob("*"))
        if p.is_file()
    }


# -- paint-to-image and injection -------------------------------------------------
def test_injection_keeps_the_layout_and_adds_detail(pyramid, training_image):
    # An upside-down training image: a layout the pyramid never produces by itself.
    paint = training_image[::-1].copy()
    k = 1
    out = applications.paint2image(pyramid, paint, k, noise_scale=0.0)
    assert out.shape == training_image.shape
    coarse = pyramid.sizes[0]
    # Layout: the low-pass output follows the injected image (r > 0.8), not the training image.
    follows_paint = correlation(lowpass(out, coarse), lowpass(paint, coarse))
    follows_training = correlation(lowpass(out, coarse), lowpass(training_image, coarse))
    assert follows_paint > 0.8
    assert follows_paint > follows_training + 0.3
    # Detail: scales K..N add high frequencies to what was injected (paint at scale K-1, upsampled).
    injected = upsample(downscale(paint[None], pyramid.sizes[k - 1]), out.shape[:2])[0].numpy()
    assert high_freq_energy(out) > 1.5 * high_freq_energy(injected)


def test_paint_of_another_size_and_aspect(pyramid, hubble, caplog):
    caplog.set_level(logging.INFO, logger="singan_tf")
    out = applications.paint2image(pyramid, hubble, 2, seed=1)  # 320x279, aspect 1.15 vs 1.49
    h, w = pyramid.sizes[-1]
    assert out.shape == (h, round(hubble.shape[1] / hubble.shape[0] * h), 3)
    assert np.isfinite(out).all()
    # The whole paint is used, undistorted: the output's low-pass follows the paint resized to
    # it (r ~ 0.53; the deep field is mostly flat black) and not the paint turned upside down (~0.06).
    coarse = (h // 2, out.shape[1] // 2)
    follows = correlation(lowpass(out, coarse), lowpass(hubble, coarse))
    assert follows > 0.35
    assert follows > correlation(lowpass(out, coarse), lowpass(hubble[::-1, ::-1], coarse)) + 0.25
    assert any("aspect" in r.getMessage() and "keeping its aspect" in r.getMessage() for r in caplog.records)


def test_paint2image_cli(trained_run, pyramid, hubble, tmp_path):
    paint = tmp_path / "paint.png"
    save_image(downscale(hubble, (200, 300)).numpy(), paint)
    out = tmp_path / "out" / "painted.png"
    args = ["paint2image", trained_run, "--paint", str(paint), "--inject-scale", "1", "--seed", "6"]
    assert main([*args, "--out", str(out)]) == 0
    written = np.asarray(Image.open(out))
    assert written.shape == (43, 64, 3)
    # The command's image is the library's, for the same paint, scale and seed.
    expected = to_uint8(applications.paint2image(pyramid, load_image(paint), 1, seed=6))
    assert np.abs(written.astype(int) - expected).max() <= 1
    other_seed = to_uint8(applications.paint2image(pyramid, load_image(paint), 1, seed=7))
    assert np.abs(written.astype(int) - other_seed).max() > 1


# -- harmonization and editing --------------------------------------------------
def test_harmonize_changes_only_inside_the_mask(pyramid, training_image, hubble):
    naive, mask = pasted(training_image, hubble, 8, 20, 14)
    result = applications.harmonize(pyramid, naive, 1, mask, seed=2)
    outside = mask[..., 0] == 0
    assert result.image.shape == naive.shape
    np.testing.assert_array_equal(result.image[outside], naive[outside])
    inside = mask[..., 0] == 1
    assert np.abs(result.image[inside] - naive[inside]).mean() > 0.05  # the object was redrawn
    assert result.mask.max() <= 1.0 and result.mask[outside].max() == 0.0


def test_harmonize_derives_the_mask(pyramid, training_image, hubble):
    naive, pasted_region = pasted(training_image, hubble, 8, 20, 14)
    result = applications.harmonize(pyramid, naive, 2, training_image=training_image)
    region = pasted_region[..., 0] == 1
    assert (result.mask[region] > 0).mean() > 0.95  # covers the paste
    assert (result.mask > 0).mean() < 3 * region.mean()  # and not much else
    outside = result.mask[..., 0] == 0
    np.testing.assert_array_equal(result.image[outside], naive[outside])


def rmse(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    d = (a - b) ** 2
    return float(np.sqrt(d[where].mean() if where is not None else d.mean()))


# Fine-tuning is a short GAN training, so its effect is noisy: over 5 seeds x 2 pastes, 20
# iterations at K=2 left the pasted region at 0.43-0.79 of the untuned RMSE to the naive image.
FINE_TUNE_ITERS = 20
FINE_TUNE_GAIN = 0.9


def test_harmonize_cli_fine_tunes_without_touching_the_run(
    trained_run, pyramid, training_image, hubble, tmp_path
):
    naive, region = pasted(training_image, hubble, 8, 20, 14)
    naive_png = save_image(naive, tmp_path / "naive.png")
    naive = load_image(naive_png)  # what the command reads
    before = run_files(trained_run)
    out = tmp_path / "harmonized.png"
    args = ["harmonize", trained_run, "--naive", str(naive_png), "--inject-scale", "2", "--noise-scale", "0"]
    assert main([*args, "--fine-tune", str(FINE_TUNE_ITERS), "--out", str(out)]) == 0
    assert run_files(trained_run) == before  # fine-tuning happens in memory
    for name in ("harmonized.png", "harmonized_unblended.png", "harmonized_mask.png"):
        assert Image.open(tmp_path / name).size == (64, 43)
    # What fine-tuning is for: scales K..N learnt to reconstruct the naive image from its coarser
    # scale, so with no noise the injected output is closer to it than the untuned pyramid's.
    tuned = load_image(tmp_path / "harmonized_unblended.png")
    untuned = applications.harmonize(
        pyramid, naive, 2, training_image=training_image, noise_scale=0.0
    ).generated
    inside = region[..., 0] == 1
    assert rmse(tuned, naive, inside) < FINE_TUNE_GAIN * rmse(untuned, naive, inside), (
        rmse(tuned, naive, inside),
        rmse(untuned, naive, inside),
    )
    # The blend keeps the naive image's pixels outside the derived mask.
    blended = np.asarray(Image.open(out))
    outside = np.asarray(Image.open(tmp_path / "harmonized_mask.png"))[..., 0] == 0
    assert outside.mean() > 0.5
    given = np.asarray(Image.open(naive_png))
    assert np.abs(blended[outside].astype(int) - given[outside]).max() <= 1  # feathered edge rounds to 0


def test_fine_tune_works_on_copies(trained_run, pyramid, training_image, hubble):
    naive, _ = pasted(training_image, hubble, 8, 20, 14)
    critics = load_nets(RunDir(trained_run), pyramid.config, pyramid.num_scales, critics=True)
    generators = [g.get_weights() for g in pyramid.generators]
    critic_weights = [d.get_weights() for d in critics]
    tuned = applications.fine_tune(pyramid, naive, 2, 2, critics)
    for net, weights in zip([*pyramid.generators, *critics], [*generators, *critic_weights], strict=True):
        for a, b in zip(net.get_weights(), weights, strict=True):
            np.testing.assert_array_equal(a, b)
    assert tuned.generators[:2] == pyramid.generators[:2]  # scales below K are shared
    assert not np.array_equal(tuned.generators[2].get_weights()[0], generators[2][0])
    assert tuned.noise_amps == pyramid.noise_amps and tuned.num_scales == pyramid.num_scales
    with pytest.raises(ConfigError, match=">= 1 iteration"):
        applications.fine_tune(pyramid, naive, 2, 0, critics)


def test_load_mask_reads_any_image_as_weights(tmp_path):
    Image.fromarray(np.array([[0, 255], [128, 255]], np.uint8)).save(tmp_path / "m.png")
    Image.new("RGB", (2, 2), (255, 255, 255)).save(tmp_path / "white.jpg")
    mask = load_mask(tmp_path / "m.png")
    assert mask.shape == (2, 2, 1) and mask.dtype == np.float32
    np.testing.assert_allclose(mask[..., 0], [[0, 1], [128 / 255, 1]])
    assert load_mask(tmp_path / "white.jpg").min() > 0.99


def test_fine_tune_needs_critics(pyramid, training_image):
    with pytest.raises(ConfigError, match="critics"):
        applications.harmonize(
            pyramid, training_image, 1, np.ones((43, 64, 1), np.float32), fine_tune_iters=2
        )


def test_edit_cli_keeps_the_pixels_outside_the_mask(trained_run, training_image, tmp_path):
    # Copy a vertical strip (a tower) sideways: the paper's copy-paste edit.
    edited = training_image.copy()
    edited[:, 40:48] = training_image[:, 8:16]
    mask = np.zeros((43, 64, 3), np.float32) - 1.0
    mask[:, 38:50] = 1.0
    edited_png = save_image(edited, tmp_path / "edited.png")
    mask_png = save_image(mask, tmp_path / "mask.png")
    out = tmp_path / "edit.png"
    args = ["edit", trained_run, "--edited", str(edited_png), "--mask", str(mask_png), "--inject-scale", "1"]
    assert main([*args, "--out", str(out)]) == 0
    result = np.asarray(Image.open(out))
    given = np.asarray(Image.open(edited_png))
    assert result.shape == given.shape == (43, 64, 3)
    np.testing.assert_array_equal(result[:, :38], given[:, :38])
    np.testing.assert_array_equal(result[:, 50:], given[:, 50:])
    assert np.abs(result[:, 40:48].astype(int) - given[:, 40:48]).mean() > 1.0


# -- animation ------------------------------------------------------------------
def test_walk_moves_only_the_coarse_noise(pyramid):
    noises = applications.walk_noise(pyramid, 6, start_scale=2, seed=1, scale_h=1.5)
    for n, z in enumerate(noises):
        assert z.shape[0] == 6
        moved = np.abs(np.diff(z, axis=0)).max()
        assert (moved > 0) if n < 2 else (moved == 0), n
    assert noises[-1].shape[1:3] == (43, 96)


def test_walk_follows_the_momentum_formula(pyramid):
    # z_t = a z_rec + (1 - a) (z_{t-1} + b (z_{t-1} - z_{t-2}) + (1 - b) eps_t), from z_rec, with eps
    # drawn scale by scale, frame by frame from default_rng([seed, 0xA417]); finer scales: one fixed draw.
    alpha, beta, frames = 0.2, 0.7, 4
    noises = applications.walk_noise(pyramid, frames, start_scale=2, alpha=alpha, beta=beta, seed=5)
    rng = np.random.default_rng([5, 0xA417])
    rec = pyramid.rec_noises(pyramid.sizes)
    for n in range(2):
        z_rec = rec[n][0]
        prev2 = prev = z_rec
        for t in range(frames):
            eps = rng.standard_normal(z_rec.shape, dtype=np.float32)
            z = alpha * z_rec + (1 - alpha) * (prev + beta * (prev - prev2) + (1 - beta) * eps)
            np.testing.assert_allclose(noises[n][t], z, rtol=1e-6, atol=1e-6)
            prev2, prev = prev, z
    fixed = pyramid.noise(5, 1)
    np.testing.assert_array_equal(noises[2], np.repeat(fixed[2], frames, axis=0))


def test_animation_frames_are_smooth_but_move(pyramid):
    frames = applications.animate(pyramid, 16, start_scale=2, seed=4)
    assert frames.shape == (16, 43, 64, 3)
    step = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    samples = pyramid.sample(6, seed=11)
    independent = np.mean([np.abs(samples[i] - samples[j]).mean() for i in range(6) for j in range(i)])
    assert step.max() < 0.5 * independent
    assert step.min() > 1e-3  # never frozen


def test_animate_cli_writes_gif_and_info(trained_run, tmp_path):
    out = tmp_path / "anim.gif"
    args = ["animate", trained_run, "--frames", "6", "--start-scale", "1", "--scale-h", "1.5", "--fps", "5"]
    assert main([*args, "--out", str(out)]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 6
        assert gif.size == (96, 43)
        assert gif.info["duration"] == 200
        assert len({np.asarray(f.convert("RGB")).tobytes() for f in ImageSequence.Iterator(gif)}) > 1
    info = json.loads((tmp_path / "anim.json").read_text())
    assert (info["frames"], info["width"], info["height"], info["start_scale"]) == (6, 96, 43, 1)


def test_mp4_needs_imageio_ffmpeg_or_is_written(tmp_path):
    frames = np.linspace(-1, 1, 4 * 9 * 11 * 3, dtype=np.float32).reshape(4, 9, 11, 3)  # odd sides
    try:
        import imageio_ffmpeg
    except ImportError:
        with pytest.raises(ConfigError, match="imageio-ffmpeg"):
            write_animation(frames, tmp_path / "a.mp4", 5, {})
        return
    write_animation(frames, tmp_path / "a.mp4", 5, {})
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "a.mp4"))
    assert next(reader)["size"] == (12, 10)  # padded to even sides for H.264
    assert sum(1 for _ in reader) == 4


# -- super-resolution -----------------------------------------------------------
# These train a second pyramid end to end (the SR settings), so they are slow: `pytest -m slow`.
@pytest.fixture(scope="module")
def sr_run(rocket, tmp_path_factory):
    """A tiny SR run trained through the CLI on a 40x27 rocket: (low-res png, run dir)."""
    work = tmp_path_factory.mktemp("sr")
    low = save_image(downscale(rocket, (27, 40)).numpy(), work / "low.png")
    run = work / "run"
    tiny = ["--max-size", "40", "--min-size", "22", "--iters", "40", "--seed", "1", "--no-progress"]
    assert main(["sr", str(low), "--factor", "2", "--out", str(run), *tiny]) == 0
    return low, run


@pytest.mark.slow
def test_sr_upsamples_by_the_factor_and_keeps_the_low_pass(sr_run):
    low, run = sr_run
    config = RunDir(run).read_config()
    assert (config.alpha, config.scale_factor) == (100.0, pytest.approx(2 ** (-1 / 3)))
    result = load_image(run / "sr_x2.png")
    assert result.shape == (54, 80, 3)
    given = load_image(low)
    assert rmse(lowpass(result, (27, 40)), given) < 0.15  # vs about 0.5 between unrelated images
    # ...and adds detail a plain (bilinear) upsampling of the low-res image does not have.
    plain = upsample(given[None], result.shape[:2])[0].numpy()
    assert high_freq_energy(result) > 1.5 * high_freq_energy(plain)


@pytest.mark.slow
def test_sr_on_a_trained_run_only_upsamples(sr_run, tmp_path, caplog):
    low, run = sr_run

    before = run_files(run)  # every file, TensorBoard logs included
    out = tmp_path / "x3.png"
    assert main(["sr", str(run), "--factor", "3", "--out", str(out)]) == 0
    assert Image.open(out).size == (120, 81)
    caplog.set_level(logging.INFO, logger="singan_tf")
    again = ["sr", str(low), "--factor", "2", "--out", str(run), "--max-size", "40", "--min-size", "22"]
    assert main([*again, "--iters", "40", "--seed", "1", "--no-progress"]) == 0
    assert "already holds this SR run; only upsampling" in caplog.text
    assert run_files(run) == before


# -- bad input: one line, exit 2 ------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["paint2image", "{run}", "--paint", "{image}", "--inject-scale", "3"],
            "injection scale must be in 1..2",
        ),
        (
            ["harmonize", "{run}", "--naive", "{image}", "--mask", "{black}", "--inject-scale", "1"],
            "mask is empty",
        ),
        (
            ["harmonize", "{run}", "--naive", "{run}/training_image.png", "--inject-scale", "1"],
            "does not differ",
        ),
        (["edit", "{run}", "--edited", "{image}", "--inject-scale", "1", "--fine-tune", "-1"], "--fine-tune"),
        (["animate", "{run}", "--start-scale", "1", "--out", "{tmp}/a.avi"], "written as .gif or .mp4"),
        (["animate", "{run}", "--start-scale", "0", "--out", "{tmp}/a.gif"], "start scale must be in 1..3"),
        (["sr", "{image}", "--factor", "0.5", "--out", "{tmp}/r"], "--factor must be > 1"),
        (["sr", "{run}", "--factor", "2", "--iters", "5"], "training options (--iters) do not apply"),
    ],
)
def test_bad_application_input(trained_run, tmp_path, capsys, argv, message):
    black = tmp_path / "black.png"
    Image.new("L", (64, 43)).save(black)
    image = tmp_path / "image.png"
    Image.new("RGB", (64, 43), (40, 60, 90)).save(image)
    argv = [a.format(run=trained_run, image=image, black=black, tmp=tmp_path) for a in argv]
    if "--out" not in argv and argv[0] != "sr":
        argv += ["--out", str(tmp_path / "o.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("singan-tf: error:") and message in err[-1]
    assert not (tmp_path / "o.png").exists()


def test_missing_paint_subprocess(trained_run, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = ["paint2image", trained_run, "--paint", str(tmp_path / "nope.png"), "--inject-scale", "1"]
    r = subprocess.run(
        [sys.executable, "-m", "singan_tf", *args, "--out", str(tmp_path / "o.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"singan-tf: error: {tmp_path / 'nope.png'}: no such file"]
    assert not (tmp_path / "o.png").exists()


def test_a_deterministic_run_fine_tunes_in_float32_with_op_determinism(
    trained_run, pyramid, training_image, hubble, monkeypatch
):
    import dataclasses

    from singan_tf import runtime
    from singan_tf.applications import injection

    monkeypatch.setattr(runtime, "prior_precision", lambda: "mixed_bfloat16")  # a CPU with bf16 instructions
    assert runtime.resolve_precision("auto") == "mixed_bfloat16"
    enabled = []  # op determinism is process-wide: recorded here, not switched on under the other tests
    monkeypatch.setattr(injection, "enable_determinism", lambda: enabled.append(True))
    naive, _ = pasted(training_image, hubble, 8, 20, 14)
    critics = load_nets(RunDir(trained_run), pyramid.config, pyramid.num_scales, critics=True)
    config = pyramid.config.replace(precision="auto", deterministic=True)
    tuned = applications.fine_tune(dataclasses.replace(pyramid, config=config), naive, 2, 1, critics)
    assert [g.dtype_policy.name for g in tuned.generators[2:]] == ["float32"] * (pyramid.num_scales - 2)
    assert enabled == [True]
