"""One size rule everywhere: a sample's per-scale sizes and the z* resize agree across
the TF sampler (``singan_tf.pyramid``), the SavedModel's ``sample`` signature
(``export.graph``), ``serving`` (numpy) and the browser page (``serving/static/noise.mjs``).

They are separate copies because the packages may not import each other; these
tests keep them from drifting.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from export.graph import graph_noise_sizes
from serving.sampler import _resize_bilinear
from serving.sampler import noise_sizes as serving_sizes
from singan_tf.pyramid import noise_sizes as tf_sampler_sizes
from singan_tf.pyramid import upsample

NOISE_JS = Path(__file__).resolve().parents[1] / "serving" / "static" / "noise.mjs"
NODE = shutil.which("node")

# Sizes of real pyramids and factors people type, plus the ones that once disagreed
# (a 45-pixel scale at 0.7: 31.499999999999996 in float64, 31.5 in float32).
GRID_SIZES = [(h, w) for h in (1, 2, 13, 25, 33, 45, 64, 113, 151, 186, 250) for w in (1, 7, 34, 45, 248)]
GRID_FACTORS = [0.1, 0.25, 0.3, 0.5, 0.7, 0.75, 0.9, 1.0, 1.1, 1.3, 1.5, 1.7, 2.0, 2.5, 3.3, 3.7, 7.1, 16.0]


@tf.function(input_signature=[tf.TensorSpec([], tf.float64)] * 2)
def _graph_sizes(scale_h, scale_v):
    return tf.stack([tf.stack(hw) for hw in graph_noise_sizes(GRID_SIZES, scale_h, scale_v)])


def _graph(scale_h: float, scale_v: float) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in hw) for hw in _graph_sizes(scale_h, scale_v).numpy()]


def _node(script: str) -> object:
    if NODE is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed (scripts/test.sh installs npm)")
        pytest.skip("node is not installed")
    result = subprocess.run(
        [NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_float32_trap_is_real():
    # Why the graph computes in float64: float32 rounds 45 x 0.7 up a pixel.
    assert np.floor(np.float32(45) * np.float32(0.7) + np.float32(0.5)) == 32
    assert tf_sampler_sizes(((45, 45),), 0.7, 0.7) == [(31, 31)]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 400), st.integers(1, 400)), min_size=1, max_size=10),
    scale_h=st.floats(0.01, 16.0, allow_nan=False),
    scale_v=st.one_of(st.floats(0.01, 16.0), st.sampled_from(GRID_FACTORS)),
)
def test_python_copies_agree(sizes, scale_h, scale_v):
    assert tf_sampler_sizes(tuple(sizes), scale_h, scale_v) == serving_sizes(sizes, scale_h, scale_v)


@settings(max_examples=40, deadline=None)
@given(scale_h=st.floats(0.05, 16.0), scale_v=st.sampled_from(GRID_FACTORS))
def test_the_savedmodel_rule_agrees(scale_h, scale_v):
    assert _graph(scale_h, scale_v) == serving_sizes(GRID_SIZES, scale_h, scale_v)


def test_the_browser_rule_agrees_on_the_grid():
    pairs = [(a, b) for a in GRID_FACTORS for b in GRID_FACTORS[::3]]
    got = _node(
        f"import {{ noiseSizes }} from {json.dumps(NOISE_JS.as_uri())};"
        f"const sizes = {json.dumps(GRID_SIZES)}; const pairs = {json.dumps(pairs)};"
        "console.log(JSON.stringify(pairs.map(([h, v]) => noiseSizes(sizes, h, v))));"
    )
    for (scale_h, scale_v), js in zip(pairs, got, strict=True):
        expected = serving_sizes(GRID_SIZES, scale_h, scale_v)
        assert [tuple(s) for s in js] == expected, (scale_h, scale_v)
        assert _graph(scale_h, scale_v) == expected


RESIZES = [((7, 9), (7, 9)), ((7, 9), (14, 18)), ((7, 9), (10, 13)), ((25, 34), (18, 24)), ((5, 5), (1, 3))]


@pytest.mark.parametrize(("size_in", "size_out"), RESIZES)
def test_the_rec_noise_resize_agrees(size_in, size_out):
    z = np.random.default_rng(sum(size_in + size_out)).standard_normal((1, *size_in, 1)).astype(np.float32)
    ours = _resize_bilinear(z, size_out)
    np.testing.assert_allclose(ours, upsample(tf.constant(z), size_out).numpy(), atol=1e-5)
    js = _node(
        f"import {{ resizeBilinear }} from {json.dumps(NOISE_JS.as_uri())};"
        f"const z = Float32Array.from({json.dumps(z.ravel().tolist())});"
        f"console.log(JSON.stringify(Array.from(resizeBilinear(z, 1, {size_in[0]}, {size_in[1]}, 1, "
        f"{size_out[0]}, {size_out[1]}))));"
    )
    np.testing.assert_allclose(np.asarray(js, np.float32).reshape(ours.shape), ours, atol=1e-6)


def test_the_savedmodel_samples_at_the_pythons_size(exported, pyramid):
    # Factors where float32 and float64 round this pyramid's sizes differently.
    tricky = [
        f / 100
        for f in range(5, 400)
        if any(
            np.floor(np.float32(n) * np.float32(f / 100) + np.float32(0.5)) != np.floor(n * (f / 100) + 0.5)
            for size in pyramid.sizes
            for n in size
        )
    ]
    assert tricky, "no factor separates float32 from float64 for this pyramid"
    sample = tf.saved_model.load(str(exported[1]["savedmodel"])).signatures["sample"]
    for factor in tricky[:3]:
        image = sample(
            seed=tf.constant(1, tf.int64),
            batch=tf.constant(1),
            scale_h=tf.constant(factor, tf.float64),
            scale_v=tf.constant(factor, tf.float64),
            start_scale=tf.constant(0),
        )["image"]
        assert tuple(image.shape[1:3]) == tf_sampler_sizes(pyramid.sizes, factor, factor)[-1], factor
