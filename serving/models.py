"""The exported models a server offers: every ``NAME.onnx`` in one folder.

``python -m export RUN --out DIR`` writes ``DIR/NAME.onnx`` (plus
``DIR/NAME.int8.onnx`` with ``--format onnx-int8``) and the SavedModel
versions under ``DIR/savedmodel/NAME/N``; the ONNX file always holds the
newest version, so that is the version this server reports.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from serving.sampler import Sampler, SamplerError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: int
    path: Path
    sampler: Sampler

    @property
    def metadata(self) -> dict:
        return self.sampler.metadata


def _version(models_dir: Path, name: str) -> int:
    folder = models_dir / "savedmodel" / name.removesuffix(".int8")
    versions = [int(p.name) for p in folder.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=1)


def discover(models_dir: str | os.PathLike, threads: int | None = None) -> dict[str, ServedModel]:
    """Load every ``*.onnx`` in ``models_dir``; the model name is the file stem.

    Raises:
        SamplerError: the folder is missing, holds no model, or a model cannot be loaded.
    """
    folder = Path(models_dir)
    if not folder.is_dir():
        raise SamplerError(f"{folder}: no such folder (export a run with `python -m export RUN --out DIR`)")
    models = {}
    for path in sorted(folder.glob("*.onnx")):
        name = path.name.removesuffix(".onnx")
        if not NAME_RE.match(name):
            continue
        models[name] = ServedModel(name, _version(folder, name), path, Sampler(path, threads=threads))
    if not models:
        raise SamplerError(f"{folder}: no .onnx models (export a run with `python -m export RUN --out DIR`)")
    return models
