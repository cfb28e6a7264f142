"""The local HTTP endpoint: TF Serving's REST contract, a PNG route and two pages.

``/`` shows samples the server draws; ``/browser/`` is the in-browser sampler
(``serving.page``), which fetches the exported model and runs it on the
visitor's machine with onnxruntime-web.

Built on FastAPI/Starlette. Inference runs in worker threads (onnxruntime
releases the GIL) behind a semaphore, so at most ``concurrency`` model runs
share the cores at once and the event loop stays free to refuse bad
requests quickly. Nothing a request says is used as a file path: models are
looked up by name among those loaded at start-up.
"""

from __future__ import annotations

import io
import json
import threading
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import page as browser_page
from serving import rest
from serving.models import ServedModel
from serving.sampler import SamplerError

PAGE = resources.files("serving").joinpath("static/index.html")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) more than ``limit`` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise rest.RestError(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise rest.RestError(413, f"request body of {declared} bytes is over this server's {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise rest.RestError(413, f"request body is over this server's {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _query(request: Request, name: str, kind: type, default):
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise rest.RestError(400, f"query parameter {name}={raw!r} is not a valid {kind.__name__}") from None
    return value


def create_app(
    models: dict[str, ServedModel], limits: rest.Limits | None = None, concurrency: int = 1
) -> FastAPI:
    """The ASGI app serving ``models`` (see ``serving.models.discover``)."""
    limits = limits or rest.Limits()
    page_html = PAGE.read_text(encoding="utf-8")
    gate = threading.BoundedSemaphore(max(1, concurrency))

    def bounded(work):
        with gate:
            return work()

    async def infer(work):
        return await run_in_threadpool(bounded, work)

    app = FastAPI(title="singan-tf serving", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(rest.RestError)
    async def rest_error(_request: Request, err: rest.RestError):
        return _error(err.status, err.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException):
        return _error(err.status_code, str(err.detail))

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(page_html)

    @app.get("/api/models")
    async def list_models():
        """Every served model with what the page needs (a local extension)."""
        return {
            "models": [
                {
                    "name": m.name,
                    "version": m.version,
                    "num_scales": m.sampler.num_scales,
                    "size": list(m.sampler.output_size()),
                }
                for m in models.values()
            ],
            "limits": {"max_batch": limits.max_batch, "max_pixels": limits.max_pixels},
        }

    @app.api_route("/v1/models/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def models_route(path: str, request: Request):
        route = rest.parse_path(path, request.method)
        model = rest.find_model(models, route)
        if route.action == "status":
            return rest.status(model)
        if route.action == "metadata":
            return rest.metadata(model)
        if route.action == "sample.png":
            return await _sample_png(model, request)
        body = await _read_body(request, limits.max_body_bytes)

        def answer() -> bytes:  # parsing and encoding big JSON stays off the event loop
            return json.dumps(rest.predict(model, rest.parse_json(body), limits, bounded)).encode()

        return Response(await run_in_threadpool(answer), media_type="application/json")

    async def _sample_png(model: ServedModel, request: Request) -> Response:
        seed = _query(request, "seed", int, 0)
        scale_h = _query(request, "scale_h", float, 1.0)
        scale_v = _query(request, "scale_v", float, 1.0)
        start = _query(request, "start_scale", int, 0)
        rest.check_sample_request(model, 1, scale_h, scale_v, start, limits)
        image = await infer(lambda: rest.draw_samples(model, seed, 1, scale_h, scale_v, start))
        return Response(_png(image[0]), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/browser")
    async def browser_redirect():
        return RedirectResponse("/browser/")

    @app.get("/browser/{rel:path}")
    async def browser(rel: str):
        """The in-browser page's files, the model list and the models themselves."""
        try:
            files = browser_page.page_files()
        except SamplerError as err:
            raise rest.RestError(404, str(err)) from None
        rel = rel or "index.html"
        headers = {**browser_page.ISOLATION_HEADERS, "Cache-Control": "no-cache"}
        if rel in files:
            path = files[rel]
            return FileResponse(path, media_type=browser_page.MEDIA_TYPES[path.suffix], headers=headers)
        if rel == "models/index.json":
            index = browser_page.models_index(sorted(models))
            return Response(index, media_type="application/json", headers=headers)
        name, dot, kind = rel.removeprefix("models/").rpartition(".")
        # Only the served models, looked up by name: nothing in the URL becomes a path.
        if rel.startswith("models/") and dot and name in models and kind in ("onnx", "json"):
            m = models[name]
            if kind == "json":
                return JSONResponse(m.metadata, headers=headers)
            return FileResponse(m.path, media_type="application/octet-stream", headers=headers)
        raise rest.RestError(404, f"/browser/{rel}: not found")

    return app


def _png(image) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
