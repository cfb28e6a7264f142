"""``python -m serving --models DIR``: serve every exported model in DIR over HTTP.

Binds to 127.0.0.1 unless ``--host`` says otherwise. Routes: TF Serving's
REST API under ``/v1/models/...`` (see ``serving.rest``), a PNG per seed at
``/v1/models/NAME/sample.png`` and a page to browse samples at ``/``.
"""

from __future__ import annotations

import argparse
import sys
from importlib.util import find_spec

from serving.cli import ArgumentParser
from serving.rest import Limits
from serving.sampler import SamplerError

# What the endpoint needs beyond the sampler's numpy (the serving extra).
ENDPOINT_MODULES = ("uvicorn", "fastapi", "onnxruntime")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="folder written by `python -m export RUN --out DIR`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501, as TF Serving's REST port)")
    p.add_argument("--threads", type=int, help="onnxruntime threads per model run (default: all cores)")
    p.add_argument("--concurrency", type=int, default=1, help="model runs at once (default 1)")
    defaults = Limits()
    p.add_argument("--max-batch", type=int, default=defaults.max_batch, help="images per request")
    p.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="batch x H x W per request")
    p.add_argument(
        "--max-body-mb", type=float, default=defaults.max_body_bytes / 2**20, help="request body size limit"
    )
    p.add_argument("--verbose", "-v", action="store_true", help="log every request")
    return p.parse_args(argv)


def _fail(message: str) -> int:
    print(f"serving: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("port", "concurrency", "max_batch", "max_pixels", "max_body_mb"):
        if getattr(args, name) <= 0 or (name == "port" and args.port > 65535):
            return _fail(f"--{name.replace('_', '-')} must be positive")
    if any(find_spec(module) is None for module in ENDPOINT_MODULES):
        return _fail(
            "the HTTP endpoint needs the serving extra: pip install 'singan-tf[serving]' (or singan-serving)"
        )
    from serving.models import discover

    try:
        models = discover(args.models, threads=args.threads)
    except SamplerError as err:
        return _fail(str(err))
    import uvicorn  # the web stack only once the models loaded: a wrong folder is said at once

    from serving.app import create_app

    limits = Limits(args.max_batch, args.max_pixels, int(args.max_body_mb * 2**20))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"serving: listening on {args.host}: reachable from other machines", file=sys.stderr)
    for m in models.values():
        h, w = m.sampler.output_size()
        print(f"serving: {m.name} v{m.version} ({m.sampler.num_scales} scales, {h}x{w}) from {m.path}")
    print(f"serving: page at http://{args.host}:{args.port}/ (in-browser sampler: /browser/)", flush=True)
    uvicorn.run(
        create_app(models, limits, args.concurrency),
        host=args.host,
        port=args.port,
        log_level="info" if args.verbose else "warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
