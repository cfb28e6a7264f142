"""The local endpoint's TF Serving REST contract, limits and error answers (in-process)."""

from __future__ import annotations

import io
import json
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from serving import Sampler
from serving.app import create_app
from serving.models import discover
from serving.rest import Limits

LIMITS = Limits(max_batch=4, max_pixels=40_000, max_body_bytes=2**20)


@pytest.fixture(scope="module")
def client(onnx_path):
    with TestClient(create_app(discover(onnx_path.parent), LIMITS)) as c:
        yield c


@pytest.fixture(scope="module")
def sampler(onnx_path):
    return Sampler(onnx_path)


def predict(client, body, path="/v1/models/rocket:predict"):
    return client.post(path, content=body if isinstance(body, bytes | str) else json.dumps(body))


def sample_inputs(**overrides):
    return {"seed": 3, "batch": 2, "scale_h": 1.0, "scale_v": 1.0, "start_scale": 0, **overrides}


def test_status_and_versions(client):
    want = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert client.get("/v1/models/rocket").json() == want
    assert client.get("/v1/models/rocket/versions/1").json() == want
    r = client.get("/v1/models/rocket/versions/2")
    assert r.status_code == 404 and "Specific(rocket, 2)" in r.json()["error"]
    r = client.get("/v1/models/nope")
    assert r.status_code == 404 and r.json() == {"error": "Servable not found for request: Latest(nope)"}
    assert client.get("/v1/models/rocket/labels/stable").status_code == 404


def test_metadata_describes_both_signatures(client, sampler):
    meta = client.get("/v1/models/rocket/metadata").json()
    assert meta["model_spec"] == {"name": "rocket", "signature_name": "", "version": "1"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "sample"}
    default = sigs["serving_default"]
    assert set(default["inputs"]) == {f"z_{n}" for n in range(sampler.num_scales)}
    dims = [d["size"] for d in default["inputs"]["z_0"]["tensor_shape"]["dim"]]
    assert dims == ["-1", "-1", "-1", "3"] and default["inputs"]["z_0"]["dtype"] == "DT_FLOAT"
    assert sigs["sample"]["outputs"]["image"]["dtype"] == "DT_UINT8"
    assert {k: v["dtype"] for k, v in sigs["sample"]["inputs"].items()} == {
        "seed": "DT_INT64",
        "batch": "DT_INT32",
        "scale_h": "DT_DOUBLE",
        "scale_v": "DT_DOUBLE",
        "start_scale": "DT_INT32",
    }
    assert meta["metadata"]["singan_tf"]["sizes"] == [list(s) for s in sampler.sizes]


def test_columnar_and_row_forms_give_the_tf_sampler_image(client, sampler, pyramid):
    feeds = sampler.noise(seed=5, n=2, scale_h=1.5, scale_v=0.75)
    r = predict(client, {"inputs": {k: v.tolist() for k, v in feeds.items()}})
    assert r.status_code == 200, r.text
    columnar = np.asarray(r.json()["outputs"], np.float32)
    want = pyramid.sample(2, seed=5, scale_h=1.5, scale_v=0.75)  # TensorFlow, same seed
    assert columnar.shape == want.shape == (2, *sampler.output_size(1.5, 0.75), 3)
    assert np.abs(columnar - want).max() <= 1e-4

    rows = [{k: v[i].tolist() for k, v in feeds.items()} for i in range(2)]
    r = predict(client, {"instances": rows, "signature_name": "serving_default"})
    assert r.status_code == 200, r.text
    assert np.abs(np.asarray(r.json()["predictions"], np.float32) - columnar).max() <= 1e-6


def test_sample_signature(client, sampler):
    r = predict(client, {"signature_name": "sample", "inputs": sample_inputs(scale_h=2.0, start_scale=1)})
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["outputs"])
    want = sampler.sample(seed=3, n=2, scale_h=2.0, start_scale=1)
    assert got.shape == want.shape and got.min() >= 0 and got.max() <= 255
    np.testing.assert_array_equal(got, want)
    # A one-element list counts as a scalar; integral floats count as integers.
    r = predict(client, {"signature_name": "sample", "inputs": sample_inputs(seed=[3], batch=2.0, scale_h=2)})
    assert r.status_code == 200 and np.asarray(r.json()["outputs"]).shape[2] == want.shape[2]


def test_sample_png(client, sampler):
    r = client.get("/v1/models/rocket/sample.png?seed=4&scale_h=2&start_scale=1")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(r.content)))
    np.testing.assert_array_equal(image, sampler.sample(seed=4, n=1, scale_h=2.0, start_scale=1)[0])
    assert client.get("/v1/models/rocket/sample.png").status_code == 200  # all defaults


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"inputs": {"z_0": [NaN]}}', 400, "not a number JSON allows"),
        (b"[" * 100_000, 400, "malformed JSON"),
        ({"inputs": {}, "instances": []}, 400, "exactly one of"),
        ({"input": {}}, 400, "unknown request field"),
        ({"signature_name": "nope", "inputs": {}}, 400, 'signature name: "nope" not found'),
        ({"inputs": {"z_0": [[[[0, 0, 0]]]]}}, 400, "missing z_1"),
        ({"inputs": {"z_0": "abc", "z_1": 1, "z_2": 1}}, 400, "list of numbers"),
        ({"inputs": {"z_0": [[1, 2], [3]], "z_1": 1, "z_2": 1}}, 400, "list of numbers"),
        ({"inputs": [[[[0.0, 0.0, 0.0]]]]}, 400, "must be an object"),
        ({"instances": []}, 400, "non-empty list"),
        ({"instances": [1, 2]}, 400, "must be an object"),
        ({"signature_name": "sample", "instances": [sample_inputs()]}, 400, "columnar form"),
        ({"signature_name": "sample", "inputs": sample_inputs(batch=5)}, 400, "batch must be in 1..4"),
        ({"signature_name": "sample", "inputs": sample_inputs(scale_h=0)}, 400, "scale_h must be in"),
        ({"signature_name": "sample", "inputs": sample_inputs(scale_v=1e9)}, 400, "scale_v must be in"),
        ({"signature_name": "sample", "inputs": sample_inputs(start_scale=7)}, 400, "start_scale must be"),
        ({"signature_name": "sample", "inputs": sample_inputs(seed=1.5)}, 400, "must be an integer"),
        ({"signature_name": "sample", "inputs": sample_inputs(seed=True)}, 400, "must be a number"),
        ({"signature_name": "sample", "inputs": sample_inputs(seed=2**70)}, 400, "int64"),
        ({"signature_name": "sample", "inputs": sample_inputs(scale_h=8)}, 400, "limit of 40000"),
        ({"signature_name": "sample", "inputs": {"seed": 1}}, 400, "missing batch"),
    ],
)
def test_client_mistakes_get_one_line_4xx(client, body, status, message):
    r = predict(client, body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and message in r.json()["error"]
    assert "\n" not in r.json()["error"]


def test_noise_input_checks(client, sampler):
    feeds = {k: v.tolist() for k, v in sampler.noise(seed=1, n=1).items()}
    for change, message in [
        ({"z_1": np.zeros((2, 4, 4, 3)).tolist()}, "same batch size"),
        ({"z_0": np.zeros((1, 4, 4)).tolist()}, "shape [batch, height, width, 3]"),
        ({"z_0": np.zeros((1, 4, 4, 1)).tolist()}, "shape [batch, height, width, 3]"),
        ({"z_0": np.zeros((1, 0, 4, 3)).tolist()}, "shape [batch, height, width, 3]"),
        ({"z_9": 0}, "unknown z_9"),
    ]:
        r = predict(client, {"inputs": {**feeds, **change}})
        assert r.status_code == 400 and message in r.json()["error"], (change.keys(), r.text)
    big = np.zeros((5, 2, 2, 3)).tolist()
    r = predict(client, {"inputs": {k: big for k in feeds}})
    assert r.status_code == 400 and "limit of 4" in r.json()["error"]
    wide = np.zeros((1, 10, 4001, 3), np.float32).tolist()
    r = predict(client, {"inputs": {**feeds, "z_2": wide}})
    assert r.status_code == 400 and "40000 pixels" in r.json()["error"]


def test_body_size_limit(client):
    big = b'{"inputs": "' + b"x" * (2**20 + 10) + b'"}'
    r = predict(client, big)
    assert r.status_code == 413 and "body" in r.json()["error"]

    def chunks():  # no Content-Length: counted while reading
        for _ in range(40):
            yield b" " * 32_768

    r = client.post("/v1/models/rocket:predict", content=chunks())
    assert r.status_code == 413


def test_routes_and_methods(client):
    assert client.get("/v1/models/rocket:predict").status_code == 405
    r = client.post("/v1/models/rocket:classify", content="{}")
    assert r.status_code == 400 and "only have predict" in r.json()["error"]
    assert client.post("/v1/models/nope:predict", content="{}").status_code == 404
    assert client.get("/v1/models/rocket/other/thing").status_code == 404
    assert client.get("/nowhere").status_code == 404
    for query, message in [
        ("seed=abc", "not a valid int"),
        ("scale_h=-1", "scale_h must be in"),
        ("start_scale=99", "start_scale must be"),
        ("scale_v=nan", "scale_v must be in"),
    ]:
        r = client.get(f"/v1/models/rocket/sample.png?{query}")
        assert r.status_code == 400 and message in r.json()["error"], query


def test_page_and_model_list(client, sampler):
    page = client.get("/")
    assert page.status_code == 200 and "sample.png" in page.text and "<select" in page.text
    models = client.get("/api/models").json()["models"]
    assert models == [
        {
            "name": "rocket",
            "version": 1,
            "num_scales": sampler.num_scales,
            "size": list(sampler.output_size()),
        }
    ]


def test_browser_page_routes(client, sampler, onnx_path):
    page = client.get("/browser/")
    assert page.status_code == 200 and "onnxruntime-web" in page.text
    # Cross-origin isolation, so the page may run WebAssembly threads.
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    assert client.get("/browser", follow_redirects=False).headers["location"] == "/browser/"
    wasm = client.get("/browser/ort/ort-wasm-simd-threaded.jsep.wasm")
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
    assert wasm.content[:4] == b"\0asm"
    assert client.get("/browser/noise.mjs").headers["content-type"].startswith("text/javascript")
    assert client.get("/browser/models/index.json").json() == {"models": ["rocket"]}
    assert client.get("/browser/models/rocket.json").json()["sizes"] == [list(s) for s in sampler.sizes]
    assert client.get("/browser/models/rocket.onnx").content == onnx_path.read_bytes()
    # Only the page's own files and the served models: nothing in the URL becomes a path.
    for path in ("models/other.onnx", "models/rocket.txt", "models/../app.py", "index.htm", "ort/x.wasm"):
        answer = client.get(f"/browser/{path}")
        assert answer.status_code == 404 and "not found" in answer.json()["error"].lower(), path


# -- fuzzing: no request body or path ever yields a 5xx ------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
small_arrays = st.builds(
    lambda b, h, w, c, v: np.full((b, h, w, c), v).tolist(),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
    st.sampled_from([1, 3, 4]),
    st.floats(-1e30, 1e30),
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "signature_name": st.sampled_from(["serving_default", "sample", "", "x"]),
        "inputs": st.dictionaries(
            st.sampled_from(["z_0", "z_1", "z_2", "seed", "batch", "scale_h", "scale_v", "start_scale"]),
            small_arrays | json_values,
        )
        | json_values,
        "instances": st.lists(
            st.dictionaries(st.sampled_from(["z_0", "z_1", "z_2"]), small_arrays | json_values), max_size=3
        )
        | json_values,
    },
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(body=json_values | near_valid)
def test_fuzzed_bodies_never_5xx(client, body):
    r = predict(client, body)
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert set(r.json()) == {"error"}


@FUZZ
@given(raw=st.binary(max_size=200))
def test_fuzzed_bytes_never_5xx(client, raw):
    assert predict(client, raw).status_code < 500


@FUZZ
@given(
    path=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="#?"), max_size=30),
    query=st.dictionaries(
        st.sampled_from(["seed", "scale_h", "scale_v", "start_scale", "x"]), st.text(max_size=8), max_size=4
    ),
)
def test_fuzzed_paths_and_queries_never_5xx(client, path, query):
    assert client.get(f"/v1/models/{quote(path, safe='/:')}", params=query).status_code < 500
    assert client.get("/v1/models/rocket/sample.png", params=query).status_code < 500
