"""``python -m export RUN_DIR --out DIR``: SavedModel (TF Serving layout) + ONNX + metadata."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("run_dir", help="a run directory written by singan_tf.train")
    parser.add_argument("--out", "-o", required=True, help="export folder")
    parser.add_argument("--name", default="singan", help="model name (TF Serving model and file name)")
    parser.add_argument("--version", type=int, help="SavedModel version (default: next free)")
    parser.add_argument(
        "--format", default="savedmodel,onnx", help="comma-separated: savedmodel, onnx, onnx-int8"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from export.api import export_run
    from singan_tf.errors import SinganError

    try:
        written = export_run(
            args.run_dir, args.out, args.name, args.version, tuple(f.strip() for f in args.format.split(","))
        )
    except SinganError as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
