"""Export functions: SavedModel for TF Serving, ONNX for onnxruntime, metadata JSON (docs/design.md §9).

TensorFlow (with the graph and the run loader) is imported by the functions that
use it, so ``python -m export`` checks a model name here before it loads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from singan_tf import __version__
from singan_tf.errors import ConfigError, InputError, SinganError
from singan_tf.images import atomic_write_bytes
from singan_tf.preflight import manifest_path, trained_manifest

if TYPE_CHECKING:
    from singan_tf.sampling import Pyramid

METADATA_KEY = "singan_tf"
DEFAULT_OPSET = 17
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

NOISE_RECIPE = (
    "rng = numpy.random.default_rng(seed); for every scale n in order: "
    "rng.standard_normal((batch, h_n, w_n, C), dtype=float32) with C = 1 at scale 0 "
    "(repeat it to 3 channels for z_0) and 3 above; sizes h_n, w_n = floor(size * scale + 0.5), "
    "at least 1; for scales below start_scale feed the reconstruction noise instead "
    "(rec_noise resized bilinearly to z_0's size at scale 0, zeros above)"
)

ANIMATION_RECIPE = (
    "frames t = 0..T-1 with start scale K >= 1: scales n >= K keep one draw of the noise recipe "
    "(seed, batch 1); each scale n < K walks from z_rec (rec_noise resized to z_0's size at scale 0, "
    "zeros above): z_t = alpha z_rec + (1 - alpha) (z_{t-1} + beta (z_{t-1} - z_{t-2}) + (1 - beta) eps_t), "
    "eps_t = rng.standard_normal(shape of z_rec, dtype=float32) with rng = "
    "numpy.random.default_rng([seed, 0xA417]) drawn scale by scale, frame by frame, all in float32 "
    "(alpha 0.1, beta 0.9 by default)"
)


def graph_feeds(noises) -> dict[str, np.ndarray]:
    """Sampler noise maps (z_0 with one channel) as the graph's inputs z_0..z_N (3 channels)."""
    return {f"z_{n}": np.repeat(z, 3, axis=-1) if z.shape[-1] == 1 else z for n, z in enumerate(noises)}


def check_name(name: str) -> str:
    """A model name usable as a TF Serving model and a file name."""
    if not NAME_RE.match(name):
        raise InputError(f"model name {name!r} must be letters, digits, '_', '.', '-'")
    return name


def metadata(pyramid: Pyramid, name: str) -> dict[str, Any]:
    """What a client needs to build noise for any size and start scale."""
    return {
        "format": 1,
        "name": name,
        "singan_tf_version": __version__,
        "num_scales": pyramid.num_scales,
        "sizes": [list(s) for s in pyramid.sizes],
        "noise_amps": list(pyramid.noise_amps),
        "channels": [int(g.channels) for g in pyramid.generators],
        "input_size": list(pyramid.geometry.input_size),
        "training_image_size": list(pyramid.geometry.working_size),
        "scale_factor": pyramid.geometry.scale_factor,
        "inputs": [f"z_{n}" for n in range(pyramid.num_scales)],
        "output": "image",
        "value_range": [-1.0, 1.0],
        "noise_recipe": NOISE_RECIPE,
        "animation_recipe": ANIMATION_RECIPE,
        "rec_noise": {
            "shape": list(pyramid.rec_noise.shape),
            "values": [float(v) for v in pyramid.rec_noise.ravel()],
        },
        "config": pyramid.config.to_dict(),
    }


def _write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


def _next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _models_config(base: Path) -> str:
    """TF Serving's model_config_list for every model folder under ``base``."""
    entries = []
    for model in sorted(p for p in base.iterdir() if p.is_dir()):
        entries.append(
            "  config {\n"
            f'    name: "{model.name}"\n'
            f'    base_path: "/models/{model.name}"\n'
            '    model_platform: "tensorflow"\n'
            "  }"
        )
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"


def to_saved_model(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike, name: str = "singan", version: int | None = None
) -> Path:
    """Write ``out_dir/savedmodel/NAME/VERSION/`` and ``out_dir/savedmodel/models.config``.

    A new version is added (N+1 by default); an existing version is never
    touched. Returns the version directory.
    """
    import tensorflow as tf

    from export.graph import PyramidModule
    from singan_tf.rundir import load_pyramid

    name = check_name(name)
    pyramid = load_pyramid(run_dir)
    base = Path(out_dir) / "savedmodel"
    model_dir = base / name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = _next_version(model_dir) if version is None else int(version)
    target = model_dir / str(version)
    if version < 1 or target.exists():
        raise InputError(f"{target} exists (or version < 1); versions are never overwritten")
    module = PyramidModule(pyramid)
    tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".{version}."))
    try:
        tf.saved_model.save(
            module,
            str(tmp),
            signatures={"serving_default": module.serving_default, "sample": module.sample},
        )
        _write_json(tmp / "assets.extra" / f"{name}.json", metadata(pyramid, name))
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(base / "models.config", _models_config(base).encode())
    return target


def to_onnx(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike, name: str = "singan", opset: int = DEFAULT_OPSET
) -> Path:
    """Write ``out_dir/NAME.onnx`` (z_0..z_N -> image, dynamic batch/H/W) and ``NAME.json``."""
    import onnx
    import tf2onnx

    from export.graph import PyramidModule, noise_specs
    from singan_tf.rundir import load_pyramid

    name = check_name(name)
    pyramid = load_pyramid(run_dir)
    module = PyramidModule(pyramid)
    model, _ = tf2onnx.convert.from_function(
        module.serving_default, input_signature=noise_specs(pyramid.num_scales), opset=opset
    )
    meta = metadata(pyramid, name)
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    model.doc_string = f"singan-tf {__version__} pyramid '{name}': unit-normal noise z_0..z_N in, image out"
    onnx.checker.check_model(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.onnx"
    atomic_write_bytes(path, model.SerializeToString())
    _write_json(out / f"{name}.json", meta)
    return path


def to_onnx_int8(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike, name: str = "singan", calibration: int = 16
) -> Path:
    """Write ``out_dir/NAME.int8.onnx``: the ONNX model statically quantised to int8.

    Weights per channel (int8), activations per tensor (uint8), QDQ format so
    onnxruntime runs VNNI int8 convolutions; activation ranges are calibrated
    on ``calibration`` unit-noise samples drawn with the metadata's recipe
    (half at the trained size, half twice as wide). Writes the float ONNX
    model first if it is missing.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from singan_tf.rundir import load_pyramid

    name = check_name(name)
    out = Path(out_dir)
    fp32 = out / f"{name}.onnx"
    if not fp32.is_file():
        to_onnx(run_dir, out_dir, name)
    pyramid = load_pyramid(run_dir)
    batches = [
        pyramid.noise(seed=10_000 + i, batch=1, scale_h=1.0 if i % 2 == 0 else 2.0)
        for i in range(calibration)
    ]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(graph_feeds(noises) for noises in batches)

        def get_next(self):
            return next(self.items, None)

    path = out / f"{name}.int8.onnx"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(quantized),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # 7-bit weights: x86 CPUs without VNNI multiply uint8 by int8 with a pairwise
            # int16 sum that saturates at full 8-bit range, so the same model drew visibly
            # different images there (AMD EPYC Zen 3: mean error 0.021 vs 0.02 allowed).
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        import onnx

        model = onnx.load(str(quantized))
        meta = {**metadata(pyramid, name), "quantization": "int8 static QDQ, per-channel 7-bit weights"}
        onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
        atomic_write_bytes(path, model.SerializeToString())
    return path


# Each format and the modules it needs beyond TensorFlow (the export extra).
FORMATS = {"savedmodel": (), "onnx": ("tf2onnx", "onnx"), "onnx-int8": ("tf2onnx", "onnx", "onnxruntime")}


def check_formats(formats: tuple[str, ...]) -> None:
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ConfigError(f"unknown format(s) {', '.join(unknown)}; use {', '.join(FORMATS)}")


def export_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str = "singan",
    version: int | None = None,
    formats: tuple[str, ...] = ("savedmodel", "onnx"),
) -> dict[str, Path]:
    check_formats(formats)
    out: dict[str, Path] = {}
    if "savedmodel" in formats:
        out["savedmodel"] = to_saved_model(run_dir, out_dir, name, version)
    if "onnx" in formats:
        out["onnx"] = to_onnx(run_dir, out_dir, name)
    if "onnx-int8" in formats:
        out["onnx-int8"] = to_onnx_int8(run_dir, out_dir, name)
    return out


def batch_runs(folder: str | os.PathLike) -> list[tuple[str, Path, str | None]]:
    """The run directories directly under ``folder`` (a ``train-many`` batch), sorted by name:
    (model name = folder name, path, None if training finished else why it is skipped)."""
    runs = []
    for path in sorted(p for p in Path(folder).iterdir() if manifest_path(p).is_file()):
        try:
            trained_manifest(path)
            check_name(path.name)
            runs.append((path.name, path, None))
        except SinganError as err:
            runs.append((path.name, path, str(err)))
    return runs


def export_batch(
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    version: int | None = None,
    formats: tuple[str, ...] = ("savedmodel", "onnx"),
) -> dict[str, dict[str, Path] | str]:
    """``export_run`` for every finished run of a batch into one folder, each model named after
    its run; ``savedmodel/models.config`` then lists them all. Returns, per run, what was
    written or why it was skipped."""
    check_formats(formats)
    return {
        name: export_run(path, out_dir, name, version, formats) if why is None else why
        for name, path, why in batch_runs(folder)
    }
