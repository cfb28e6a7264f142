"""``python -m export RUN_DIR --out DIR``: SavedModel (TF Serving layout) + ONNX + metadata.

RUN_DIR may also be a ``train-many`` batch folder: every finished run in it is
exported into DIR under its run's name, and ``DIR/savedmodel/models.config``
lists them all for TF Serving.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.util import find_spec

from export.api import FORMATS, batch_runs, check_formats, check_name, export_batch, export_run
from singan_tf.errors import ConfigError, SinganError
from singan_tf.preflight import ArgumentParser, import_tensorflow, manifest_path, trained_manifest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("run_dir", help="a run directory written by train, or a train-many batch folder")
    parser.add_argument("--out", "-o", required=True, help="export folder")
    parser.add_argument(
        "--name", help="model name (TF Serving model and file name; default singan; a batch: the run names)"
    )
    parser.add_argument("--version", type=int, help="SavedModel version (default: next free)")
    parser.add_argument("--format", default="savedmodel,onnx", help="comma-separated: " + ", ".join(FORMATS))
    parser.add_argument("--verbose", "-v", action="store_true", help="TensorFlow's own log lines too")
    return parser.parse_args(argv)


def is_batch(run_dir: str) -> bool:
    """A folder of run directories (``train-many``'s), not a run directory itself."""
    return not manifest_path(run_dir).is_file() and os.path.isdir(run_dir) and bool(batch_runs(run_dir))


def check(args: argparse.Namespace, formats: tuple[str, ...]) -> None:
    """What can be checked before TensorFlow loads: options, formats' extra, the run directory."""
    check_formats(formats)
    batch = is_batch(args.run_dir)
    if batch and args.name:
        raise ConfigError("a batch's models are named after their runs; leave --name out")
    check_name(args.name or "singan")
    if args.version is not None and args.version < 1:
        raise ConfigError("--version must be >= 1")
    if any(find_spec(module) is None for f in formats for module in FORMATS[f]):
        raise SinganError("ONNX export needs the export extra: pip install 'singan-tf[export]'")
    if batch:
        if not any(why is None for _, _, why in batch_runs(args.run_dir)):
            raise SinganError(f"{args.run_dir}: no run in the batch has finished training")
    else:
        trained_manifest(args.run_dir)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    formats = tuple(f.strip() for f in args.format.split(","))
    try:
        check(args, formats)
        import_tensorflow(args.verbose)
        if is_batch(args.run_dir):
            results = export_batch(args.run_dir, args.out, args.version, formats)
        else:
            results = {None: export_run(args.run_dir, args.out, args.name or "singan", args.version, formats)}
    except SinganError as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    for name, written in results.items():
        prefix = f"{name} " if name else ""
        if isinstance(written, str):
            print(f"{prefix}skipped: {written}")
            continue
        for kind, path in written.items():
            print(f"{prefix}{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
