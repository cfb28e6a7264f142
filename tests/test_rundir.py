"""The run directory (singan_tf/rundir.py): its layout, atomic writes, checkpoints, and
loading a run written by an earlier release."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from singan_tf import rundir
from singan_tf.config import TrainConfig
from singan_tf.errors import InputError
from singan_tf.models import build_critic, build_generator
from singan_tf.pyramid import geometry_for, working_image
from singan_tf.rundir import RunDir, load_nets, load_pyramid
from singan_tf.sampling import run_pyramid
from singan_tf.training import train_pyramid

DATA = Path(__file__).parent / "data"
# Written by release 0.1.0 (see tests/data/README.md): a run directory must keep loading and
# sampling as it did then.
OLD_RUN = DATA / "run_0_1"
OLD_EXPECTED = DATA / "run_0_1_expected.npz"

TINY = TrainConfig(max_size=56, min_size=25, base_channels=8, max_channels=8, iters=10, jit_compile="off")


def tree(path: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``path``: (content, mtime_ns, inode), by relative path."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(path))] = (p.read_bytes(), st.st_mtime_ns, st.st_ino)
    return out


def temp_files(path: Path) -> list[Path]:
    """Leftovers of atomic writes: their temp files are dot-files next to the target."""
    return [p for p in path.rglob(".*") if p.is_file()]


@pytest.fixture
def fresh_run(rocket, tmp_path) -> RunDir:
    """A run directory just initialised from the bundled image (no scale trained)."""
    geometry = geometry_for(TINY, rocket.shape[:2])
    image = working_image(rocket, geometry)
    rec_noise = np.random.default_rng(0).standard_normal((1, *geometry.sizes[0], 1)).astype(np.float32)
    run = RunDir(tmp_path / "run")
    run.initialise(TINY, geometry, image, rec_noise)
    return run


def nets(channels: int = 8):
    return build_generator(channels), build_critic(channels)


# -- what training writes ---------------------------------------------------------
def test_run_directory_is_complete(trained_run):
    run = RunDir(trained_run)
    manifest = json.loads(run.manifest_path.read_text())
    config = run.read_config()
    sizes = [tuple(s) for s in manifest["geometry"]["sizes"]]
    assert sizes == [(25, 38), (33, 49), (43, 64)]
    assert len(manifest["scales"]) == 3
    assert [s["scale"] for s in manifest["scales"]] == [0, 1, 2]
    assert [tuple(s["size"]) for s in manifest["scales"]] == sizes
    assert manifest["scales"][0]["noise_amp"] == 1.0
    assert all(0 < s["noise_amp"] < 0.2 for s in manifest["scales"][1:])
    for n in range(3):
        assert run.generator_path(n).is_file() and run.critic_path(n).is_file()
        assert (run.samples / f"scale_{n:02d}.png").is_file()
    assert np.load(run.rec_noise_path).shape == (1, 25, 38, 1)
    assert config.iters == 150 and config.seed == 3
    assert len(list((run.samples).glob("sample_*.png"))) == 4
    # A finished run keeps no mid-scale checkpoint and no temp file of an atomic write.
    assert not list(run.checkpoints.glob("*.npz"))
    assert temp_files(run.path) == []
    events = list(run.logs.glob("events.out.tfevents.*"))
    assert events
    tags = set()
    for path in events:  # evaluate may add its own event file
        for e in tf.compat.v1.train.summary_iterator(str(path)):
            tags |= {v.tag for v in e.summary.value}
    assert {"scale_00/d_loss", "scale_02/rec_rmse", "pyramid/noise_amp", "samples"} <= tags


def test_initialise_writes_the_manifest_last(rocket, tmp_path, monkeypatch):
    geometry = geometry_for(TINY, rocket.shape[:2])
    image = working_image(rocket, geometry)
    rec_noise = np.random.default_rng(1).standard_normal((1, *geometry.sizes[0], 1)).astype(np.float32)
    run = RunDir(tmp_path / "run")
    real_write = rundir.atomic_write_json

    def write(path, data):
        if path == run.manifest_path:  # its presence marks a usable run directory
            for other in (run.config_path, run.image_path, run.image_array_path, run.rec_noise_path):
                assert other.is_file(), other
        real_write(path, data)

    monkeypatch.setattr(rundir, "atomic_write_json", write)
    assert not run.exists() and run.finished_scales() == 0
    run.initialise(TINY, geometry, image, rec_noise)
    assert run.exists() and run.finished_scales() == 0
    manifest = run.read_manifest()
    assert manifest["format"] == rundir.FORMAT_VERSION and manifest["scales"] == []
    assert manifest["geometry"] == json.loads(json.dumps(geometry.to_dict()))
    assert run.read_config() == TINY
    np.testing.assert_array_equal(run.read_image(), image)
    np.testing.assert_array_equal(run.read_rec_noise(), rec_noise)
    assert temp_files(run.path) == []


def test_pyramid_json_lists_a_scale_only_after_its_weights_exist(fresh_run, monkeypatch):
    run = fresh_run
    real_write, real_save = rundir.atomic_write_json, rundir.atomic_save_weights
    listed_with_weights = []

    def write(path, data):
        if path == run.manifest_path:
            for s in data["scales"]:
                n = s["scale"]
                assert run.generator_path(n).is_file() and run.critic_path(n).is_file(), n
            listed_with_weights.append(len(data["scales"]))
        real_write(path, data)

    monkeypatch.setattr(rundir, "atomic_write_json", write)
    g, d = nets()
    run.write_scale(0, g, d, 1.0, {"rec_rmse": 0.5})
    assert listed_with_weights == [1]

    # Killed while saving scale 1's critic: the generator is on disk, but the scale is not listed.
    def save_then_die(model, path):
        if path == run.critic_path(1):
            raise KeyboardInterrupt
        real_save(model, path)

    monkeypatch.setattr(rundir, "atomic_save_weights", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run.write_scale(1, g, d, 0.1, {})
    assert run.generator_path(1).is_file() and not run.critic_path(1).exists()
    assert run.finished_scales() == 1
    assert load_pyramid(run.path, allow_partial=True).num_scales == 1

    monkeypatch.setattr(rundir, "atomic_save_weights", real_save)
    with pytest.raises(RuntimeError, match="out of order"):
        run.write_scale(2, g, d, 0.1, {})
    run.write_scale(1, g, d, 0.1, {"rec_rmse": 0.25})
    assert listed_with_weights == [1, 2]
    scales = run.read_manifest()["scales"]
    assert [(s["scale"], s["size"], s["channels"], s["noise_amp"]) for s in scales] == [
        (0, list(run.read_manifest()["geometry"]["sizes"][0]), 8, 1.0),
        (1, list(run.read_manifest()["geometry"]["sizes"][1]), 8, 0.1),
    ]
    assert scales[1]["rec_rmse"] == 0.25
    assert temp_files(run.path) == []


def test_atomic_writes_leave_no_temp_files_even_when_they_fail(tmp_path, monkeypatch):
    g, _ = nets()
    weights = tmp_path / "w" / "generator.weights.h5"
    rundir.atomic_save_weights(g, weights)
    rundir.atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1.5]})
    rundir.atomic_save_npy(tmp_path / "z.npy", np.arange(6, dtype=np.float64).reshape(2, 3))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "a.json",
        "generator.weights.h5",
        "z.npy",
    ]
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": [1.5], "b": 1}
    z = np.load(tmp_path / "z.npy", allow_pickle=False)
    assert z.dtype == np.float32 and z.tolist() == [[0, 1, 2], [3, 4, 5]]
    h = build_generator(8)
    h.load_weights(weights)
    for a, b in zip(g.get_weights(), h.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Written files get the usual mode, not mkstemp's 0600.
    umask = os.umask(0)
    os.umask(umask)
    for p in (weights, tmp_path / "a.json", tmp_path / "z.npy"):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p

    # A save that dies half way leaves the old file as it was and no temp file beside it.
    before = weights.read_bytes()

    def half_written(self, path, overwrite=True):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(type(g), "save_weights", half_written)
    with pytest.raises(OSError, match="disk full"):
        rundir.atomic_save_weights(g, weights)
    assert weights.read_bytes() == before
    assert temp_files(tmp_path) == []


# -- mid-scale checkpoints ---------------------------------------------------------
def test_checkpoint_round_trip_and_clear(fresh_run):
    run = fresh_run
    assert run.read_checkpoint(1) is None and run.read_checkpoint_runtime(1) is None
    rng = np.random.default_rng(5)
    # 12 arrays per group: their order must survive (10 sorts before 2 as text).
    state = {
        "generator": [rng.standard_normal((3, 3, 8, 8)).astype(np.float32) for _ in range(12)],
        "g_opt": [np.asarray(i, np.int64) for i in range(12)],
        "critic": [rng.standard_normal(4).astype(np.float32)],
    }
    runtime = {"precision": "mixed_bfloat16", "xla": False, "threads": "tf"}
    run.write_checkpoint(1, 20, state, runtime)
    iteration, read = run.read_checkpoint(1)
    assert iteration == 20
    assert sorted(read) == sorted(state)
    for name, values in state.items():
        assert len(read[name]) == len(values)
        for a, b in zip(values, read[name], strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    assert run.read_checkpoint_runtime(1) == runtime
    assert run.read_checkpoint(0) is None  # per scale

    # A later checkpoint replaces the earlier one; without a runtime, none is reported.
    run.write_checkpoint(1, 40, {"critic": [np.ones(2, np.float32)]})
    iteration, read = run.read_checkpoint(1)
    assert iteration == 40 and list(read) == ["critic"]
    assert run.read_checkpoint_runtime(1) is None
    assert [p.name for p in run.checkpoints.iterdir()] == ["scale_01.npz"]

    run.clear_checkpoint(1)
    assert run.read_checkpoint(1) is None and not run.checkpoint_path(1).exists()
    run.clear_checkpoint(1)  # clearing twice is fine (a resumed scale that finishes)


# -- loading ------------------------------------------------------------------------
def test_load_pyramid_of_a_partial_run(trained_run, tmp_path):
    full = load_pyramid(trained_run)
    copy = tmp_path / "part"
    shutil.copytree(trained_run, copy)
    manifest = json.loads((copy / "pyramid.json").read_text())
    manifest["scales"] = manifest["scales"][:2]  # killed during scale 2 (its old weights stay on disk)
    (copy / "pyramid.json").write_text(json.dumps(manifest))

    with pytest.raises(InputError, match="training finished 2 of 3 scales"):
        load_pyramid(copy)
    part = load_pyramid(copy, allow_partial=True)
    assert part.num_scales == 2 and part.sizes == full.sizes[:2]
    assert part.noise_amps == full.noise_amps[:2]
    # The partial pyramid is the full one's first two scales, noise recipe included.
    expected = run_pyramid(full.generators[:2], full.noise_amps[:2], full.noise(4, 2)[:2]).numpy()
    np.testing.assert_allclose(part.sample(2, seed=4), expected, rtol=0, atol=1e-5)
    assert part.sample(2, seed=4).shape == (2, *full.sizes[1], 3)

    manifest["scales"] = []
    (copy / "pyramid.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="training finished 0 of 3 scales"):
        load_pyramid(copy, allow_partial=True)


class _Marker:
    """Unpickling this writes a file: proof that a load ran code from the run directory."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_arrays_are_refused(fresh_run, tmp_path):
    run = fresh_run
    marker = tmp_path / "unpickled"
    payload = np.array([_Marker(str(marker))], dtype=object)
    np.save(run.rec_noise_path, payload, allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        run.read_rec_noise()
    g, d = nets()
    run.write_scale(0, g, d, 1.0, {})
    with pytest.raises(ValueError, match="allow_pickle"):
        load_pyramid(run.path, allow_partial=True)
    run.checkpoints.mkdir()
    np.savez(run.checkpoint_path(0), iteration=np.asarray(3), **{"generator/0000": payload})
    with pytest.raises(ValueError, match="allow_pickle"):
        run.read_checkpoint(0)
    assert not marker.exists()


# -- a run directory written by release 0.1.0 ----------------------------------------
def test_a_run_written_by_0_1_loads_and_samples_as_it_did():
    manifest = RunDir(OLD_RUN).read_manifest()
    assert manifest["singan_tf_version"] == "0.1.0" and manifest["format"] == 1
    p = load_pyramid(OLD_RUN)
    assert p.num_scales == 3 and p.sizes == ((25, 37), (31, 46), (38, 56))
    expected = np.load(OLD_EXPECTED, allow_pickle=False)
    got = {
        "sample": p.sample(2, seed=11),
        "wide": p.sample(1, seed=3, scale_h=1.5, start_scale=1),
        "rec": p.reconstruct(),
    }
    assert sorted(expected.files) == sorted(got)
    for name, array in got.items():
        assert array.shape == expected[name].shape, name
        # Not bitwise: oneDNN on another CPU (or TensorFlow version) may differ in the last bits.
        np.testing.assert_allclose(array, expected[name], rtol=0, atol=1e-5, err_msg=name)


def test_resuming_a_finished_0_1_run_trains_and_rewrites_nothing(tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(OLD_RUN, copy)
    before = tree(copy)

    def refuse(*args, **kwargs):
        raise AssertionError("resuming a finished run wrote to it")

    for write in ("initialise", "write_scale", "write_checkpoint", "clear_checkpoint"):
        monkeypatch.setattr(RunDir, write, refuse)
    config = RunDir(copy).read_config()
    result = train_pyramid(config, None, copy, resume=True, cache=None)
    assert tree(copy) == before
    assert result.pyramid.num_scales == 3
    expected = np.load(OLD_EXPECTED, allow_pickle=False)
    np.testing.assert_allclose(result.pyramid.sample(2, seed=11), expected["sample"], rtol=0, atol=1e-5)


def test_runs_without_the_float_image_fall_back_to_the_png(trained_run, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(trained_run, copy)
    (copy / "training_image.npy").unlink()
    np.testing.assert_allclose(RunDir(copy).read_image(), RunDir(trained_run).read_image(), atol=1 / 127.5)


def test_a_run_directory_of_a_newer_format_is_refused(tmp_path):
    copy = tmp_path / "future"
    shutil.copytree(OLD_RUN, copy)
    manifest = json.loads((copy / "pyramid.json").read_text())
    (copy / "pyramid.json").write_text(json.dumps({**manifest, "format": rundir.FORMAT_VERSION + 1}))
    with pytest.raises(InputError, match="format 2 is newer than this singan-tf reads"):
        load_pyramid(copy)


def test_a_refined_coarser_generator_counts_once_its_scale_is_listed(fresh_run, monkeypatch):
    """``--concurrent 2``: scale n saves G_{n-1} as it left it. Killed before scale n is listed,
    the pyramid keeps G_{n-1}'s own weights; listed, it loads the refined ones."""
    run, config = fresh_run, fresh_run.read_config()
    g0, d = nets()
    run.write_scale(0, g0, d, 1.0, {})
    g1, refined = nets()[0], nets()[0]
    real_write = rundir.atomic_write_json

    def die_at_the_manifest(path, data):
        if path == run.manifest_path:
            raise KeyboardInterrupt
        real_write(path, data)

    monkeypatch.setattr(rundir, "atomic_write_json", die_at_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        run.write_scale(1, g1, d, 0.1, {}, refined_coarser=refined)
    assert run.refined_coarser_path(1).is_file() and run.finished_scales() == 1
    (loaded,) = load_nets(run, config, 1)
    for a, b in zip(loaded.get_weights(), g0.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    monkeypatch.setattr(rundir, "atomic_write_json", real_write)
    run.write_scale(1, g1, d, 0.1, {}, refined_coarser=refined)
    assert run.read_manifest()["scales"][1]["refines_coarser"] is True
    loaded0, loaded1 = load_nets(run, config, 2)
    for net, want in ((loaded0, refined), (loaded1, g1)):
        for a, b in zip(net.get_weights(), want.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(loaded0.get_weights()[0], g0.get_weights()[0])
