"""Export: SavedModel (TF Serving layout) and ONNX agree with the TF sampler."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tensorflow as tf

from export import graph_feeds, to_saved_model
from export.__main__ import main as export_main
from export.api import METADATA_KEY

PARITY_TOL = 1e-4


@pytest.fixture(scope="session")
def saved(exported):
    return tf.saved_model.load(str(exported[1]["savedmodel"]))


@pytest.fixture(scope="session")
def ort_session(exported):
    import onnxruntime as ort

    return ort.InferenceSession(str(exported[1]["onnx"]), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("scale_h", "scale_v", "batch", "start"),
    [(1.0, 1.0, 1, 0), (2.0, 1.0, 4, 0), (1.0, 0.5, 1, 1), (2.0, 1.0, 1, 2), (1.0, 1.0, 4, 1)],
)
def test_parity_tf_savedmodel_onnx(pyramid, saved, ort_session, scale_h, scale_v, batch, start):
    noises = pyramid.noise(seed=3, batch=batch, scale_h=scale_h, scale_v=scale_v, start_scale=start)
    ref = pyramid.generate(noises).numpy()
    inputs = graph_feeds(noises)
    sm = saved.signatures["serving_default"](**{k: tf.constant(v) for k, v in inputs.items()})[
        "image"
    ].numpy()
    onnx_out = ort_session.run(["image"], inputs)[0]
    h, w = pyramid.sizes[-1]
    assert ref.shape == (batch, int(np.floor(h * scale_v + 0.5)), int(np.floor(w * scale_h + 0.5)), 3)
    assert np.abs(sm - ref).max() <= PARITY_TOL
    assert np.abs(onnx_out - ref).max() <= PARITY_TOL


def test_savedmodel_signatures(saved, pyramid):
    assert set(saved.signatures) == {"serving_default", "sample"}
    serve = saved.signatures["serving_default"]
    _, kwargs = serve.structured_input_signature
    assert sorted(kwargs) == [f"z_{n}" for n in range(pyramid.num_scales)]
    for spec in kwargs.values():
        assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, None, None, 3]
    assert serve.structured_outputs["image"].dtype == tf.float32
    sample = saved.signatures["sample"]
    _, kwargs = sample.structured_input_signature
    assert {k: v.dtype for k, v in kwargs.items()} == {
        "seed": tf.int64,
        "batch": tf.int32,
        "scale_h": tf.float64,
        "scale_v": tf.float64,
        "start_scale": tf.int32,
    }
    assert sample.structured_outputs["image"].dtype == tf.uint8


def test_seed_signature(saved, pyramid):
    sample = saved.signatures["sample"]

    def call(seed, batch=2, scale_h=1.0, scale_v=1.0, start=0):
        return sample(
            seed=tf.constant(seed, tf.int64),
            batch=tf.constant(batch),
            scale_h=tf.constant(scale_h, tf.float64),
            scale_v=tf.constant(scale_v, tf.float64),
            start_scale=tf.constant(start),
        )["image"].numpy()

    a, b, c = call(1), call(1), call(2)
    h, w = pyramid.sizes[-1]
    assert a.shape == (2, h, w, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert call(1, batch=1, scale_h=2.0).shape == (1, h, 2 * w, 3)
    # Start at the finest scale: everything coarser is the reconstruction.
    rec = (np.clip(pyramid.reconstruct()[0], -1, 1) + 1) * 127.5
    near = call(5, batch=3, start=pyramid.num_scales - 1).astype(np.float32)
    free = call(5, batch=3, start=0).astype(np.float32)
    assert np.abs(near - rec).mean() < 0.5 * np.abs(free - rec).mean()


def test_onnx_model_is_valid_and_carries_metadata(exported, pyramid):
    import onnx

    out, paths = exported
    model = onnx.load(str(paths["onnx"]))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props[METADATA_KEY])
    assert meta["sizes"] == [list(s) for s in pyramid.sizes]
    # The recipes numpy-only clients (serving.Sampler, the browser page) follow.
    assert "default_rng(seed)" in meta["noise_recipe"] and "[seed, 0xA417]" in meta["animation_recipe"]
    assert meta["noise_amps"] == pytest.approx(pyramid.noise_amps)
    assert (
        np.array(meta["rec_noise"]["values"], np.float32).reshape(meta["rec_noise"]["shape"]).tolist()
        == pyramid.rec_noise.tolist()
    )
    assert json.loads((out / "rocket.json").read_text()) == meta
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        assert len(dims) == 4 and all(d.dim_param or d.dim_value == 0 for d in dims[:3])
        assert dims[3].dim_value == 3


def test_new_version_leaves_the_old_untouched(trained_run, tmp_path):
    first = to_saved_model(trained_run, tmp_path, name="m")
    digest = {
        p.relative_to(first): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in first.rglob("*")
        if p.is_file()
    }
    second = to_saved_model(trained_run, tmp_path, name="m")
    assert (first.name, second.name) == ("1", "2")
    assert {
        p.relative_to(first): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in first.rglob("*")
        if p.is_file()
    } == digest
    config = (tmp_path / "savedmodel" / "models.config").read_text()
    assert 'name: "m"' in config and 'base_path: "/models/m"' in config
    assert not [p for p in (tmp_path / "savedmodel" / "m").iterdir() if p.name.startswith(".")]


def test_cli(trained_run, tmp_path, capsys):
    assert export_main([trained_run, "--out", str(tmp_path), "--format", "savedmodel", "--version", "7"]) == 0
    assert (tmp_path / "savedmodel" / "singan" / "7" / "saved_model.pb").is_file()
    assert export_main([trained_run, "--out", str(tmp_path), "--format", "savedmodel", "--version", "7"]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert export_main([str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a singan-tf run directory" in capsys.readouterr().err


def test_int8_onnx_is_close_and_runs_any_size(trained_run, exported, pyramid):
    import onnxruntime as ort

    from export import to_onnx_int8

    out, _ = exported
    path = to_onnx_int8(trained_run, out, name="rocket", calibration=4)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for scale_h in (1.0, 2.0):
        noises = pyramid.noise(seed=21, batch=2, scale_h=scale_h)
        ref = pyramid.generate(noises).numpy()
        got = session.run(["image"], graph_feeds(noises))[0]
        assert got.shape == ref.shape
        err = np.abs(got - ref)
        assert err.mean() < 0.02 and err.max() < 0.25, (err.mean(), err.max())
