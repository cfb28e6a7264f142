"""``python -m export RUN_DIR --out DIR``: SavedModel (TF Serving layout) + ONNX + metadata."""

from __future__ import annotations

import argparse
import sys
from importlib.util import find_spec

from export.api import FORMATS, check_formats, check_name, export_run
from singan_tf.errors import ConfigError, SinganError
from singan_tf.preflight import ArgumentParser, import_tensorflow, trained_manifest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("run_dir", help="a run directory written by singan_tf.train")
    parser.add_argument("--out", "-o", required=True, help="export folder")
    parser.add_argument("--name", default="singan", help="model name (TF Serving model and file name)")
    parser.add_argument("--version", type=int, help="SavedModel version (default: next free)")
    parser.add_argument("--format", default="savedmodel,onnx", help="comma-separated: " + ", ".join(FORMATS))
    parser.add_argument("--verbose", "-v", action="store_true", help="TensorFlow's own log lines too")
    return parser.parse_args(argv)


def check(args: argparse.Namespace, formats: tuple[str, ...]) -> None:
    """What can be checked before TensorFlow loads: options, formats' extra, the run directory."""
    check_formats(formats)
    check_name(args.name)
    if args.version is not None and args.version < 1:
        raise ConfigError("--version must be >= 1")
    if any(find_spec(module) is None for f in formats for module in FORMATS[f]):
        raise SinganError("ONNX export needs the export extra: pip install 'singan-tf[export]'")
    trained_manifest(args.run_dir)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    formats = tuple(f.strip() for f in args.format.split(","))
    try:
        check(args, formats)
        import_tensorflow(args.verbose)
        written = export_run(args.run_dir, args.out, args.name, args.version, formats)
    except SinganError as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
