"""serving/static/noise.mjs (the noise recipe in JavaScript) against numpy and serving.sampler.

The page can only reproduce the Python sampler's images if its noise is the
same to the bit, so the stream is compared bitwise: SeedSequence + PCG64 on raw
words, the float32 ziggurat on millions of draws, its tables entry by entry.
Node runs tests/js/noise_cli.mjs, one JSON request per process.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from serving.sampler import SamplerError, noise_sizes, rec_noise_from, recipe_noise, walk_noise

NODE = shutil.which("node")
CLI = Path(__file__).resolve().parent / "js" / "noise_cli.mjs"
SEEDS = [0, 1, 42, 2**32 + 5, 2**63 - 1, 2**64 + 5, 2**130 + 3]  # 1..5 uint32 words of entropy
TAIL_START = np.float32(3.6541528853610088)  # |x| >= r only comes out of the ziggurat's tail


@pytest.fixture(scope="module")
def node() -> str:
    if not NODE:
        message = "node is not installed (apt-get install nodejs)"
        if os.environ.get("CI"):
            pytest.fail(message)  # scripts/test.sh installs npm, which brings node: missing there is a defect
        pytest.skip(message)
    return NODE


def ask(node: str, **request) -> dict:
    done = subprocess.run(
        [node, str(CLI)], input=json.dumps(request), capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout)


def decode(data: str, dtype: str = "<f4") -> np.ndarray:
    return np.frombuffer(base64.b64decode(data), dtype)


def js_normals(node: str, seed: int, count: int) -> np.ndarray:
    return decode(ask(node, op="normals", seed=str(seed), count=count)["data"])


def assert_bitwise_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    differ = np.flatnonzero(actual.view(np.uint32) != expected.view(np.uint32))
    assert differ.size == 0, (
        f"{differ.size} values differ, first at {differ[0]}: {actual[differ[0]]} vs {expected[differ[0]]}"
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_seeding_and_pcg64_words(node, seed):
    words = decode(ask(node, op="uint32", seed=str(seed), count=64)["data"], "<u4")
    # next_uint32 serves each 64-bit output low half first: the little-endian view.
    expected = np.random.PCG64(seed).random_raw(32).astype("<u8").view("<u4")
    np.testing.assert_array_equal(words, expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_normals_bitwise(node, seed):
    expected = np.random.default_rng(seed).standard_normal(200_000, dtype=np.float32)
    assert_bitwise_equal(js_normals(node, seed, 200_000), expected)


def test_long_stream_bitwise_through_the_tail(node):
    """3M draws: about 770 go through the tail (two log1pf each), about 45k through a wedge."""
    expected = np.random.default_rng(20240601).standard_normal(3_000_000, dtype=np.float32)
    assert_bitwise_equal(js_normals(node, 20240601, 3_000_000), expected)
    assert np.count_nonzero(np.abs(expected) >= TAIL_START) > 500


class ProbedZiggurat:
    """numpy's float32 ziggurat fed chosen words, to read its compiled tables back.

    PCG64's state can be set with a buffered uint32, which becomes the first
    word the ziggurat reads (layer, sign, magnitude); the LCG state can be
    chosen so that the next 64-bit output, whose low half is the wedge's
    uniform, is any value wanted.
    """

    MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645
    INC = 0xDA3E39CB94B95BDB  # any odd increment
    MASK = (1 << 128) - 1

    def __init__(self):
        self.bit_generator = np.random.PCG64(0)
        self.generator = np.random.Generator(self.bit_generator)
        self.inverse = pow(self.MULTIPLIER, -1, 1 << 128)

    def draw(self, idx: int, rabs: int, uniform24: int = 0) -> tuple[np.float32, bool]:
        """One draw from first word (rabs, sign +, idx); returns it and whether more words were read."""
        # The state after the next step is the output itself (high half 0: no rotation).
        state = ((uniform24 << 8) - self.INC) * self.inverse & self.MASK
        self.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": state, "inc": self.INC},
            "has_uint32": 1,
            "uinteger": rabs << 9 | idx,
        }
        value = self.generator.standard_normal(1, dtype=np.float32)[0]
        return value, self.bit_generator.state["state"]["state"] != state

    def wedge_accepts(self, idx: int, rabs: int, uniform24: int) -> bool:
        # A rejection starts over on the high half of the crafted output, 0:
        # a fast 0.0, while an accepted wedge returns x = rabs * wi[idx] itself.
        return self.draw(idx, rabs, uniform24)[0] != 0


def wedge_line(f_inner: np.float32, f_outer: np.float32, uniform24: int) -> float:
    """(fi[i-1] - fi[i]) * u + fi[i] in float32, as numpy's C computes it."""
    return float(np.float32(f_inner - f_outer) * np.float32(uniform24 / (1 << 24)) + f_outer)


def first_rejected_uniform(accepts) -> int:
    """The smallest 24-bit wedge uniform u with accepts(u) false (2**24 if none): the line rises with u."""
    lo, hi = -1, 1 << 24
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if accepts(mid) else (lo, mid)
    return hi


def test_ziggurat_tables_equal_numpys(node):
    tables = ask(node, op="tables")
    ki, wi, fi = tables["ki"], decode(tables["wi"]), decode(tables["fi"])
    numpy_zig = ProbedZiggurat()
    for idx in range(256):
        # wi: magnitude 1 gives x = wi[idx] (layer 1 has ki = 0 but its wedge accepts x this small).
        assert numpy_zig.draw(idx, 1)[0] == wi[idx], f"wi[{idx}]"
        # ki: magnitudes below it return at once, from it on more words are read.
        if ki[idx] > 0:
            assert not numpy_zig.draw(idx, ki[idx] - 1)[1], f"ki[{idx}] too large"
        if ki[idx] < 1 << 23:
            assert numpy_zig.draw(idx, ki[idx])[1], f"ki[{idx}] too small"
    # fi: the wedge's float32 line (fi[i-1] - fi[i]) * u + fi[i] against exp(-x*x/2)
    # moves its accept/reject boundary by hundreds of uniform steps per ulp of fi.
    crossings = 0
    for idx in range(1, 256):
        rabs = (max(ki[idx], 1) + (1 << 23)) // 2
        x = np.float32(rabs) * wi[idx]
        density = math.exp(-0.5 * float(x) * float(x))  # in double, as in C
        line = functools.partial(wedge_line, fi[idx - 1], fi[idx])
        expected = first_rejected_uniform(lambda u, line=line, density=density: line(u) < density)
        probed = first_rejected_uniform(functools.partial(numpy_zig.wedge_accepts, idx, rabs))
        assert probed == expected, f"fi[{idx - 1}] or fi[{idx}]"
        crossings += 0 < expected < 1 << 24
    assert crossings > 200  # most layers were really probed inside the wedge


def fake_metadata(rng: np.random.Generator) -> dict:
    """What export writes for the noise recipe: sizes and z*, as parsed JSON."""
    sizes = [[13, 17], [20, 26], [25, 34]]
    rec = rng.standard_normal((1, *sizes[0], 1)).astype(np.float32)
    return {
        "sizes": sizes,
        "rec_noise": {"shape": list(rec.shape), "values": [float(v) for v in rec.ravel()]},
    }


@pytest.mark.parametrize(
    ("scale_h", "scale_v", "start_scale"),
    [(1, 1, 0), (1, 1, 2), (0.7, 0.7, 1), (1.5, 1, 2), (2, 2, 1), (0.7, 1.5, 0), (2.5, 0.25, 2)],
)
def test_recipe_noise_equals_samplers(node, scale_h, scale_v, start_scale):
    meta = fake_metadata(np.random.default_rng(3))
    seed, n = 2**40 + 7, 3
    feeds = ask(
        node,
        op="recipe",
        meta=meta,
        seed=str(seed),
        n=n,
        scale_h=scale_h,
        scale_v=scale_v,
        start_scale=start_scale,
    )
    expected = recipe_noise(meta["sizes"], rec_noise_from(meta), seed, n, scale_h, scale_v, start_scale)
    assert list(feeds) == list(expected)
    for k, (name, want) in enumerate(expected.items()):
        assert feeds[name]["dims"] == list(want.shape)
        got = decode(feeds[name]["data"]).reshape(want.shape)
        if k == 0 and start_scale > 0 and want.shape[1:3] != (13, 17):
            # z* resized: float32 weights and arithmetic in both (equal here to the bit), allow rounding.
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        else:
            assert_bitwise_equal(got.ravel(), want.ravel())


@pytest.mark.parametrize(
    ("scale_h", "scale_v", "start_scale", "alpha", "beta"),
    [(1, 1, 1, 0.1, 0.9), (1.5, 0.7, 2, 0.1, 0.9), (1, 1, 3, 0.3, 0.5), (2, 1, 2, 0.0, 0.0)],
)
def test_walk_noise_equals_samplers(node, scale_h, scale_v, start_scale, alpha, beta):
    meta = fake_metadata(np.random.default_rng(4))
    seed, frames = 2**33 + 1, 4
    feeds = ask(
        node,
        op="walk",
        meta=meta,
        seed=str(seed),
        frames=frames,
        start_scale=start_scale,
        alpha=alpha,
        beta=beta,
        scale_h=scale_h,
        scale_v=scale_v,
    )
    expected = walk_noise(
        meta["sizes"], rec_noise_from(meta), seed, frames, start_scale, alpha, beta, scale_h, scale_v
    )
    assert list(feeds) == list(expected)
    for name, want in expected.items():
        assert feeds[name]["dims"] == list(want.shape)
        got = decode(feeds[name]["data"]).reshape(want.shape)
        # z* resized at scale 0 may differ by float32 rounding; the walk itself is bitwise.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        if name != "z_0":
            assert_bitwise_equal(got.ravel(), want.ravel())


@pytest.mark.parametrize(("scale_h", "start_scale"), [(1, 3), (1, -1), (0, 0), (-2, 0)])
def test_recipe_noise_refuses_what_the_sampler_refuses(node, scale_h, start_scale):
    meta = fake_metadata(np.random.default_rng(3))
    answer = ask(
        node, op="recipe", meta=meta, seed="0", n=1, scale_h=scale_h, scale_v=1, start_scale=start_scale
    )
    assert "RangeError" in answer["error"]
    with pytest.raises(SamplerError):
        recipe_noise(meta["sizes"], rec_noise_from(meta), 0, 1, scale_h, 1, start_scale)


def test_noise_sizes_equal_samplers(node):
    sizes = [[h, 301 - h] for h in range(1, 301)]  # every length 1..300 in both directions
    factors = [0.1, 0.25, 0.5, 0.7, 0.75, 1, 1.3, 1.5, 2, 2.5, 3.7, 16, 1 / 3, 0.1 + 0.2]
    pairs = list(itertools.product(factors, repeat=2))
    answer = ask(node, op="sizes", sizes=sizes, factors=pairs)["sizes"]
    for (scale_h, scale_v), got in zip(pairs, answer, strict=True):
        assert [tuple(s) for s in got] == noise_sizes(sizes, scale_h, scale_v), (scale_h, scale_v)


@pytest.mark.parametrize("bad", [0, -1, "NaN", "Infinity", "-Infinity"])
def test_noise_sizes_refuse_bad_factors(node, bad):
    answer = ask(node, op="sizes", sizes=[[13, 17]], factors=[[bad, 1], [1, bad]])["sizes"]
    assert all("RangeError" in a["error"] for a in answer)
    with pytest.raises(SamplerError):
        noise_sizes([[13, 17]], float(bad), 1.0)
