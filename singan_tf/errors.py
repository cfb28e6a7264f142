"""User-facing errors. Their messages are one line; the CLIs print them as is."""

from __future__ import annotations

import math


class SinganError(Exception):
    """Base of the errors a CLI reports without a traceback."""


class ConfigError(SinganError, ValueError):
    """An option value that can never work (raised before any training)."""


class InputError(SinganError, ValueError):
    """A user-supplied input (file, run directory) that cannot be used."""


class NonFiniteLossError(SinganError, RuntimeError):
    """A loss became NaN/inf; training of the scale stopped."""

    def __init__(self, scale: int, iteration: int, metrics: dict[str, float]):
        bad = ", ".join(f"{k}={v}" for k, v in metrics.items() if not math.isfinite(v))
        super().__init__(f"non-finite loss at scale {scale}, iteration {iteration}: {bad}")
        self.scale = scale
        self.iteration = iteration
