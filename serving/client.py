"""A client for TF Serving's REST API that works with real TF Serving and ``python -m serving``.

Standard library + numpy only. gRPC is not offered: the gRPC stubs
(tensorflow-serving-api) depend on the full TensorFlow package, which this
package never imports; TF Serving answers the same calls over REST.

Example:
    >>> c = Client("http://127.0.0.1:8501", "rocket")          # doctest: +SKIP
    >>> c.sample(seed=3, batch=2, scale_h=2.0).shape           # doctest: +SKIP
    (2, 54, 160, 3)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from serving.sampler import SamplerError, rec_noise_from, recipe_noise


class ClientError(RuntimeError):
    """The server refused a request (``status`` is the HTTP code) or could not be reached."""

    def __init__(self, status: int | None, message: str):
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class Client:
    """One model on a TF Serving REST endpoint.

    Args:
        url: the server's base URL (TF Serving's REST port is 8501).
        model: the model name (``--name`` given to ``python -m export``).
        version: a specific version, or None for the newest.
        timeout: seconds per request.
        metadata: pyramid metadata (the exported ``NAME.json`` path or its
            content) for :meth:`noise`; fetched from the server's metadata
            route when it offers it (the local endpoint does, TF Serving does not).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8501",
        model: str = "singan",
        version: int | None = None,
        timeout: float = 120.0,
        metadata: str | Path | dict | None = None,
    ):
        self.base = url.rstrip("/") + f"/v1/models/{model}" + (f"/versions/{version}" if version else "")
        self.timeout = timeout
        if isinstance(metadata, str | Path):
            metadata = json.loads(Path(metadata).read_text())
        self._pyramid = metadata

    # -- transport -------------------------------------------------------------
    def _call(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url,
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                message = json.loads(raw).get("error", raw.decode(errors="replace"))
            except ValueError:
                message = raw.decode(errors="replace")
            raise ClientError(err.code, message) from None
        except urllib.error.URLError as err:
            raise ClientError(None, f"cannot reach {url}: {err.reason}") from None

    # -- TF Serving routes ---------------------------------------------------------
    def status(self) -> dict:
        return self._call(self.base)

    def metadata(self) -> dict:
        return self._call(self.base + "/metadata")

    def predict(self, inputs, signature_name: str | None = None, row_form: bool = False):
        """POST ``:predict``; returns ``outputs`` (columnar) or ``predictions`` (row form)."""
        body: dict = {"instances": inputs} if row_form else {"inputs": inputs}
        if signature_name:
            body["signature_name"] = signature_name
        answer = self._call(self.base + ":predict", body)
        return answer["predictions" if row_form else "outputs"]

    # -- convenience -------------------------------------------------------------
    def sample(
        self, seed: int = 0, batch: int = 1, scale_h: float = 1.0, scale_v: float = 1.0, start_scale: int = 0
    ) -> np.ndarray:
        """uint8 [batch, H, W, 3] from the ``sample`` signature (noise drawn by the server)."""
        inputs = {
            "seed": int(seed),
            "batch": int(batch),
            "scale_h": float(scale_h),
            "scale_v": float(scale_v),
            "start_scale": int(start_scale),
        }
        return np.asarray(self.predict(inputs, signature_name="sample"), np.uint8)

    def generate(self, noise: dict[str, np.ndarray], row_form: bool = False) -> np.ndarray:
        """float32 [batch, H, W, 3] in [-1, 1] from ``serving_default`` on the given noise maps."""
        if row_form:
            batch = next(iter(noise.values())).shape[0]
            rows = [{k: v[i].tolist() for k, v in noise.items()} for i in range(batch)]
            return np.asarray(self.predict(rows, row_form=True), np.float32)
        return np.asarray(self.predict({k: v.tolist() for k, v in noise.items()}), np.float32)

    def pyramid(self) -> dict:
        """The pyramid metadata (sizes, amplitudes, reconstruction noise)."""
        if self._pyramid is None:
            self._pyramid = self.metadata()["metadata"].get("singan_tf")
            if self._pyramid is None:
                raise ClientError(
                    None, "this server does not publish pyramid metadata; pass metadata=NAME.json"
                )
        return self._pyramid

    def noise(
        self, seed: int, batch: int = 1, scale_h: float = 1.0, scale_v: float = 1.0, start_scale: int = 0
    ) -> dict[str, np.ndarray]:
        """Unit noise for ``serving_default`` by the exported recipe: the same seed gives the
        same image as ``singan_tf``'s sampler and ``serving.Sampler``, on any backend."""
        meta = self.pyramid()
        try:
            return recipe_noise(
                meta["sizes"], rec_noise_from(meta), seed, batch, scale_h, scale_v, start_scale
            )
        except SamplerError as err:
            raise ValueError(str(err)) from None
