"""TF Serving's REST contract for exported pyramids, independent of the web framework.

The contract is docs/design.md §10.

The local endpoint answers the same requests as stock TF Serving running the
exported SavedModel, so one client works against both:

* ``GET /v1/models/NAME[/versions/N]``: model status;
* ``GET /v1/models/NAME[/versions/N]/metadata``: signatures (plus the
  pyramid metadata under ``metadata.singan_tf``, a local extension);
* ``POST /v1/models/NAME[/versions/N]:predict`` with the row form
  ``{"instances": [...]}`` (answered as ``{"predictions": [...]}``) or the
  columnar form ``{"inputs": ...}`` (answered as ``{"outputs": ...}``), and
  ``"signature_name"`` choosing ``serving_default`` (unit noise z_0..z_N in,
  float image out) or ``sample`` (seed, batch, scale_h, scale_v,
  start_scale in, uint8 images out).

Every client mistake becomes a :class:`RestError` with a 4xx status and a
one-line message, answered as ``{"error": message}``. The ``sample``
signature draws its noise with numpy here and with TF's Philox inside
TF Serving: the same seed gives equally valid but different images on the
two backends. ``serving_default`` with client-made noise agrees to float
precision everywhere.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.models import ServedModel
from serving.sampler import SamplerError

DEFAULT_SIGNATURE = "serving_default"
SAMPLE_SIGNATURE = "sample"
SAMPLE_INPUTS = {  # name -> (TF dtype, python type)
    "seed": ("DT_INT64", int),
    "batch": ("DT_INT32", int),
    "scale_h": ("DT_DOUBLE", float),
    "scale_v": ("DT_DOUBLE", float),
    "start_scale": ("DT_INT32", int),
}
MAX_SCALE = 16.0  # scale_h / scale_v beyond this are refused before any pixel limit


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; beyond these the answer is 400 or 413."""

    max_batch: int = 16
    max_pixels: int = 4_000_000  # batch x height x width of the output image
    max_body_bytes: int = 64 * 2**20


class RestError(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_PATH_RE = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|(?P<png>/sample\.png)|:(?P<verb>[A-Za-z]+))?$"
)


@dataclass(frozen=True)
class Route:
    name: str
    version: str | None
    action: str  # status | metadata | sample.png | predict


def parse_path(path: str, method: str) -> Route:
    """Split the part after ``/v1/models/`` into model name, version and action."""
    m = _PATH_RE.match(path)
    if not m:
        raise RestError(404, f"no such route: /v1/models/{path}")
    if m["label"] is not None:
        raise RestError(404, "version labels are not configured on this server; use /versions/N")
    verb = m["verb"]
    if verb is not None:
        if verb != "predict":
            raise RestError(400, f"':{verb}' is not supported: these models only have predict signatures")
        action = "predict"
    else:
        action = "metadata" if m["metadata"] else "sample.png" if m["png"] else "status"
    wanted_method = "POST" if action == "predict" else "GET"
    if method != wanted_method:
        raise RestError(405, f"use {wanted_method} for /v1/models/{path}")
    return Route(m["name"], m["version"], action)


def find_model(models: dict[str, ServedModel], route: Route) -> ServedModel:
    model = models.get(route.name)
    if model is None:
        raise RestError(404, f"Servable not found for request: Latest({route.name})")
    if route.version is not None and route.version != str(model.version):
        raise RestError(404, f"Servable not found for request: Specific({route.name}, {route.version})")
    return model


# -- status and metadata ------------------------------------------------------
def status(model: ServedModel) -> dict:
    return {
        "model_version_status": [
            {
                "version": str(model.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def _tensor_info(signature: str, name: str, dtype: str, dims: list[int]) -> dict:
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
        "name": f"{signature}_{name}:0",
    }


def signatures(model: ServedModel) -> dict:
    """The two signatures as TF Serving's metadata describes them."""
    image = [-1, -1, -1, 3]
    noise = {
        f"z_{n}": _tensor_info(DEFAULT_SIGNATURE, f"z_{n}", "DT_FLOAT", image)
        for n in range(model.sampler.num_scales)
    }
    seeded = {k: _tensor_info(SAMPLE_SIGNATURE, k, dtype, []) for k, (dtype, _) in SAMPLE_INPUTS.items()}
    method = "tensorflow/serving/predict"
    return {
        DEFAULT_SIGNATURE: {
            "inputs": noise,
            "outputs": {"image": {**_tensor_info("", "image", "DT_FLOAT", image), "name": "Identity:0"}},
            "method_name": method,
        },
        SAMPLE_SIGNATURE: {
            "inputs": seeded,
            "outputs": {"image": {**_tensor_info("", "image", "DT_UINT8", image), "name": "Identity:0"}},
            "method_name": method,
        },
    }


def metadata(model: ServedModel) -> dict:
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
        "metadata": {"signature_def": {"signature_def": signatures(model)}, "singan_tf": model.metadata},
    }


# -- predict -------------------------------------------------------------------
def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(body: bytes) -> dict:
    """The request body as a JSON object (NaN/Infinity and deep nesting refused)."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise RestError(400, "malformed JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise RestError(400, f"malformed JSON: {err}") from None
    if not isinstance(data, dict):
        raise RestError(400, 'the request body must be a JSON object with "instances" or "inputs"')
    return data


def _array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, RecursionError):
        arr = None
    if arr is None or arr.dtype.kind not in "iuf":
        raise RestError(400, f"input '{name}' must be a (nested) list of numbers of one rectangular shape")
    return arr


def _check_names(signature: str, names: list[str], given) -> None:
    missing = [k for k in names if k not in given]
    extra = sorted(set(given) - set(names))
    if missing or extra:
        raise RestError(
            400,
            f"{signature} takes exactly {', '.join(names)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(extra)}" if extra else ""),
        )


def _noise_inputs(model: ServedModel, inputs: dict[str, np.ndarray], limits: Limits) -> dict[str, np.ndarray]:
    names = [f"z_{n}" for n in range(model.sampler.num_scales)]
    _check_names(DEFAULT_SIGNATURE, names, inputs)
    feeds = {}
    batch = None
    for name in names:
        z = inputs[name]
        if z.ndim != 4 or z.shape[-1] != 3 or min(z.shape) < 1:
            raise RestError(
                400, f"input '{name}' must have shape [batch, height, width, 3], got {list(z.shape)}"
            )
        if batch is None:
            batch = z.shape[0]
        elif z.shape[0] != batch:
            raise RestError(
                400, f"every input needs the same batch size; '{name}' has {z.shape[0]}, z_0 {batch}"
            )
        if z.shape[1] * z.shape[2] * batch > limits.max_pixels:
            raise RestError(400, f"input '{name}' is larger than this server's {limits.max_pixels} pixels")
        z = z.astype(np.float32)
        if not np.isfinite(z).all():
            raise RestError(400, f"input '{name}' holds values that are not finite")
        feeds[name] = z
    if batch > limits.max_batch:
        raise RestError(400, f"batch {batch} is larger than this server's limit of {limits.max_batch}")
    return feeds


def _scalar(name: str, value: Any, kind: type) -> int | float:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]  # a one-element list is what some clients send for a scalar
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RestError(400, f"input '{name}' must be a number")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise RestError(400, f"input '{name}' must be an integer")
        value = int(value)
        if not -(2**63) <= value < 2**63:
            raise RestError(400, f"input '{name}' is out of the int64 range")
        return value
    return float(value)


def _sample_inputs(model: ServedModel, inputs: dict[str, Any], limits: Limits) -> dict[str, int | float]:
    _check_names(SAMPLE_SIGNATURE, list(SAMPLE_INPUTS), inputs)
    args = {k: _scalar(k, inputs[k], kind) for k, (_, kind) in SAMPLE_INPUTS.items()}
    check_sample_request(model, args["batch"], args["scale_h"], args["scale_v"], args["start_scale"], limits)
    return args


def check_sample_request(
    model: ServedModel, batch: int, scale_h: float, scale_v: float, start_scale: int, limits: Limits
) -> None:
    """Refuse (400) what the seed-based routes cannot or should not draw."""
    if not 1 <= batch <= limits.max_batch:
        raise RestError(400, f"batch must be in 1..{limits.max_batch}, got {batch}")
    for name, s in (("scale_h", scale_h), ("scale_v", scale_v)):
        if not (math.isfinite(s) and 0 < s <= MAX_SCALE):
            raise RestError(400, f"{name} must be in (0, {MAX_SCALE:g}], got {s}")
    if not 0 <= start_scale < model.sampler.num_scales:
        raise RestError(400, f"start_scale must be in 0..{model.sampler.num_scales - 1}, got {start_scale}")
    h, w = model.sampler.output_size(scale_h, scale_v)
    if batch * h * w > limits.max_pixels:
        raise RestError(
            400, f"{batch} x {h}x{w} pixels is more than this server's limit of {limits.max_pixels}"
        )


def draw_samples(model: ServedModel, seed: int, batch: int, scale_h: float, scale_v: float, start: int):
    """uint8 samples for the seed-based routes (numpy noise; see the module docstring)."""
    try:
        return model.sampler.sample(seed % 2**64, batch, scale_h, scale_v, start)
    except SamplerError as err:
        raise RestError(400, str(err)) from None


def _gather_rows(instances: Any, names: list[str]) -> dict[str, Any]:
    if not isinstance(instances, list) or not instances:
        raise RestError(400, '"instances" must be a non-empty list, one entry per batch element')
    if len(names) == 1 and not all(isinstance(row, dict) for row in instances):
        return {names[0]: instances}
    if not all(isinstance(row, dict) for row in instances):
        raise RestError(400, f"each instance must be an object with the inputs {', '.join(names)}")
    keys = set(instances[0])
    if any(set(row) != keys for row in instances):
        raise RestError(400, "every instance must name the same inputs")
    return {k: [row[k] for row in instances] for k in keys}


def predict(model: ServedModel, request: dict, limits: Limits, run=lambda f: f()) -> dict:
    """Answer a predict request (already parsed) in the form it was asked in.

    ``run`` calls the inference closure it is given (the app passes one that
    bounds how many run at once).
    """
    unknown = sorted(set(request) - {"signature_name", "instances", "inputs"})
    if unknown:
        raise RestError(400, f"unknown request field(s) {', '.join(unknown)}; use instances or inputs")
    if ("instances" in request) == ("inputs" in request):
        raise RestError(400, 'give exactly one of "instances" (row form) or "inputs" (columnar form)')
    signature = request.get("signature_name", DEFAULT_SIGNATURE) or DEFAULT_SIGNATURE
    if signature not in (DEFAULT_SIGNATURE, SAMPLE_SIGNATURE):
        raise RestError(400, f'Serving signature name: "{signature}" not found in signature def')
    row_form = "instances" in request
    names = (
        list(SAMPLE_INPUTS)
        if signature == SAMPLE_SIGNATURE
        else [f"z_{n}" for n in range(model.sampler.num_scales)]
    )

    if signature == SAMPLE_SIGNATURE:
        if row_form:
            raise RestError(
                400, 'the sample signature takes scalars; send them in the columnar form {"inputs": {...}}'
            )
        inputs = request["inputs"]
        if not isinstance(inputs, dict):
            raise RestError(400, f'"inputs" must be an object with {", ".join(names)}')
        args = _sample_inputs(model, inputs, limits)
        image = run(
            lambda: draw_samples(
                model, args["seed"], args["batch"], args["scale_h"], args["scale_v"], args["start_scale"]
            )
        )
        return {"outputs": image.tolist()}

    if row_form:
        raw = _gather_rows(request["instances"], names)
    else:
        inputs = request["inputs"]
        raw = inputs if isinstance(inputs, dict) else {names[0]: inputs} if len(names) == 1 else None
        if raw is None:
            raise RestError(400, f'"inputs" must be an object with {", ".join(names)}')
    feeds = _noise_inputs(model, {k: _array(k, v) for k, v in raw.items()}, limits)

    def infer():
        try:
            return model.sampler.generate(feeds)
        except Exception as err:  # onnxruntime's own error types; the inputs were the cause
            raise RestError(
                400, f"the model cannot run on these inputs: {str(err).splitlines()[0]}"
            ) from None

    image = np.round(run(infer).astype(np.float64), 7)
    return {"predictions": image.tolist()} if row_form else {"outputs": image.tolist()}
