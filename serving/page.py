"""The in-browser sampler: a static page that runs exported models with onnxruntime-web.

``python -m serving`` serves it at ``/browser/``; ``python -m serving.page OUT
--models DIR`` writes it as a plain folder (``index.html``, ``noise.mjs``,
``ort/``, ``models/``) that any static web server can host, offline. The
page's URLs are relative, so both layouts are the same files::

    index.html  noise.mjs  ort/ort.min.mjs ...  models/index.json  models/NAME.onnx  models/NAME.json

onnxruntime-web comes from the npm registry, pinned by
``serving/ort-web/package-lock.json``; ``scripts/web_assets.sh`` installs it
and copies the files the page loads into ``serving/static/ort/``.
"""

from __future__ import annotations

import json
import shutil
import sys
from importlib import resources
from pathlib import Path

from serving.cli import ArgumentParser
from serving.sampler import SamplerError

STATIC = Path(str(resources.files("serving").joinpath("static")))
ORT_FILES = ("ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")
# Cross-origin isolation lets onnxruntime-web use WebAssembly threads (SharedArrayBuffer).
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}
MEDIA_TYPES = {".html": "text/html", ".mjs": "text/javascript", ".wasm": "application/wasm"}


def page_files() -> dict[str, Path]:
    """The page's own files by their URL path relative to the page.

    Raises:
        SamplerError: onnxruntime-web is not installed (run scripts/web_assets.sh).
    """
    files = {"index.html": STATIC / "browser.html", "noise.mjs": STATIC / "noise.mjs"}
    files.update({f"ort/{name}": STATIC / "ort" / name for name in ORT_FILES})
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise SamplerError(
            f"the in-browser page is missing {', '.join(missing)}: run scripts/web_assets.sh (needs npm)"
        )
    return files


def models_index(names: list[str]) -> bytes:
    return (json.dumps({"models": names}) + "\n").encode()


def write_page(out: str | Path, models_dir: str | Path | None = None) -> list[str]:
    """Write the page (and every ``NAME.onnx`` + ``NAME.json`` of ``models_dir``) to ``out``.

    Returns the names of the models copied.
    """
    out = Path(out)
    files = page_files()
    names = []
    if models_dir is not None:
        folder = Path(models_dir)
        if not folder.is_dir():
            raise SamplerError(f"{folder}: no such folder")
        names = sorted(p.stem for p in folder.glob("*.onnx") if p.with_suffix(".json").is_file())
        if not names:
            raise SamplerError(f"{folder}: no NAME.onnx with its NAME.json (python -m export RUN --out DIR)")
    for rel, src in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / rel)
    (out / "models").mkdir(parents=True, exist_ok=True)
    for name in names:
        for suffix in (".onnx", ".json"):
            shutil.copyfile(Path(models_dir) / f"{name}{suffix}", out / "models" / f"{name}{suffix}")
    (out / "models" / "index.json").write_bytes(models_index(names))
    return names


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m serving.page", description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to write the page to")
    p.add_argument("--models", help="folder written by `python -m export RUN --out DIR` (optional)")
    args = p.parse_args(argv)
    try:
        names = write_page(args.out, args.models)
    except SamplerError as err:
        print(f"serving.page: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/index.html with {len(names)} model(s): serve the folder (it works offline),")
    print(f"e.g. python -m http.server --directory {args.out} 8000, then open http://127.0.0.1:8000/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
