"""serving.Sampler: numpy + onnxruntime only, same samples as the TF sampler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving import Sampler, SamplerError
from singan_tf.images import to_uint8

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("scale_h", "scale_v", "start"), [(1.0, 1.0, 0), (2.0, 1.0, 0), (1.0, 0.5, 1), (1.5, 1.0, 2)]
)
def test_same_samples_as_the_tf_sampler(pyramid, onnx_path, scale_h, scale_v, start):
    sampler = Sampler(onnx_path)
    got = sampler.sample(seed=7, n=3, scale_h=scale_h, scale_v=scale_v, start_scale=start)
    want = to_uint8(pyramid.sample(3, seed=7, scale_h=scale_h, scale_v=scale_v, start_scale=start))
    assert got.shape == want.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # float parity 1e-4, then rounding


@pytest.mark.parametrize(("start", "scale_h"), [(1, 1.0), (2, 1.5)])
def test_animation_walk_is_the_tf_samplers(pyramid, onnx_path, start, scale_h):
    from singan_tf.applications import walk_noise

    frames = 4
    walk = Sampler(onnx_path).walk(seed=9, frames=frames, start_scale=start, scale_h=scale_h)
    expected = walk_noise(pyramid, frames, start, seed=9, scale_h=scale_h)
    assert list(walk) == [f"z_{n}" for n in range(pyramid.num_scales)]
    for n, z in enumerate(expected):
        z3 = np.repeat(z, 3, axis=-1) if z.shape[-1] == 1 else z
        # Bitwise but for z*'s resize at scale 0 (numpy here, TF there).
        np.testing.assert_allclose(walk[f"z_{n}"], z3, rtol=0, atol=1e-5 if n == 0 else 0)


def test_runs_without_tensorflow(onnx_path):
    code = (
        "import sys, serving; s = serving.Sampler(sys.argv[1]); x = s.sample(seed=1, n=2, scale_h=2.0); "
        "assert x.shape[0] == 2 and x.dtype.name == 'uint8'; "
        "bad = [m for m in ('tensorflow', 'keras', 'singan_tf', 'export', 'tf2onnx') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(onnx_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_clear_errors(onnx_path, tmp_path):
    with pytest.raises(SamplerError, match="no such model file"):
        Sampler(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(SamplerError, match="not a loadable ONNX model"):
        Sampler(tmp_path / "junk.onnx")
    s = Sampler(onnx_path)
    with pytest.raises(SamplerError, match="start_scale"):
        s.sample(start_scale=9)
    with pytest.raises(SamplerError, match="scale_h and scale_v"):
        s.sample(scale_h=0)
    with pytest.raises(SamplerError, match="n must be"):
        s.sample(n=0)
