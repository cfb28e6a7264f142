"""The image pyramid (docs/design.md §2) and the one upsampling op.

Two resizes exist on purpose:

* ``downscale`` builds the training images: bicubic WITH antialiasing
  (MATLAB-imresize-like), in float. It runs once, outside any exported graph.
* ``upsample`` moves a result from scale n-1 to scale n's size. It is the
  ONLY op used for that in training, sampling and the exported SavedModel /
  ONNX graphs, so they agree to float precision. It is bilinear
  (half-pixel centres, no antialiasing): the reference code uses bicubic,
  but bicubic converts to ONNX with ~3e-4 drift and runs ~5x slower in
  onnxruntime, while bilinear round-trips at ~1e-6.

The geometry (``pyramid_geometry``, ``noise_sizes``, the SR settings) is
arithmetic; only the resizes import TensorFlow, so the CLIs check an
image's pyramid before TensorFlow loads.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from singan_tf.config import TrainConfig
from singan_tf.errors import ConfigError

if TYPE_CHECKING:
    import tensorflow as tf

Size = tuple[int, int]


def _ceil(x: float) -> int:
    # Sizes come from products like 186 * r**8 that are integers in exact
    # arithmetic; a 1e-9 slack keeps float noise from adding a pixel.
    return math.ceil(x - 1e-9)


def scaled_size(size: Size, scale: float) -> Size:
    """Output size of resizing by ``scale``: ``ceil(size * scale)`` per axis."""
    return _ceil(size[0] * scale), _ceil(size[1] * scale)


@dataclasses.dataclass(frozen=True)
class PyramidGeometry:
    """Sizes of a training pyramid, from the reference code's formulas.

    Attributes:
        input_size: (H0, W0) of the image as loaded.
        working_size: (H1, W1) after capping the longer side at max_size.
        scale1: ``min(max_size / max(H0, W0), 1)``.
        stop_scale: index of the finest scale (scales are 0..stop_scale).
        scale_factor: effective per-scale factor r.
        sizes: (h, w) of every scale, coarsest first.
    """

    input_size: Size
    working_size: Size
    scale1: float
    stop_scale: int
    scale_factor: float
    sizes: tuple[Size, ...]

    @property
    def num_scales(self) -> int:
        return len(self.sizes)

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "working_size": list(self.working_size),
            "scale1": self.scale1,
            "stop_scale": self.stop_scale,
            "scale_factor": self.scale_factor,
            "sizes": [list(s) for s in self.sizes],
        }

    @classmethod
    def from_dict(cls, data: dict) -> PyramidGeometry:
        return cls(
            input_size=tuple(data["input_size"]),
            working_size=tuple(data["working_size"]),
            scale1=float(data["scale1"]),
            stop_scale=int(data["stop_scale"]),
            scale_factor=float(data["scale_factor"]),
            sizes=tuple(tuple(s) for s in data["sizes"]),
        )


def pyramid_geometry(
    input_size: Size, min_size: int = 25, max_size: int = 250, scale_factor: float = 0.75
) -> PyramidGeometry:
    """Compute the pyramid of an image of ``input_size`` = (H0, W0).

    >>> pyramid_geometry((186, 248)).sizes[0]
    (25, 34)
    """
    h0, w0 = input_size
    scale1 = min(max_size / max(h0, w0), 1.0)
    working = scaled_size(input_size, scale1)
    if min(working) <= min_size:
        raise ConfigError(
            f"image is {w0}x{h0} (WxH); after capping the longer side at {max_size} its "
            f"shorter side is {min(working)} px, but it must be larger than "
            f"min_size={min_size} px"
        )
    log_f = math.log(scale_factor)
    num_scales = math.ceil(math.log(min_size / min(h0, w0)) / log_f) + 1
    scale2stop = math.ceil(math.log(min(max_size, max(h0, w0)) / max(h0, w0)) / log_f)
    stop_scale = num_scales - scale2stop
    if stop_scale < 1:
        raise ConfigError(
            f"image is {w0}x{h0} (WxH): too elongated for a pyramid between "
            f"min_size={min_size} and max_size={max_size}"
        )
    r = (min_size / min(working)) ** (1.0 / stop_scale)
    sizes = tuple(scaled_size(working, r ** (stop_scale - n)) for n in range(stop_scale + 1))
    return PyramidGeometry(
        input_size=(h0, w0),
        working_size=working,
        scale1=scale1,
        stop_scale=stop_scale,
        scale_factor=r,
        sizes=sizes,
    )


def geometry_for(config: TrainConfig, input_size: Size) -> PyramidGeometry:
    return pyramid_geometry(input_size, config.min_size, config.max_size, config.scale_factor)


# Super-resolution (paper section 4) trains a pyramid whose r spans the factor in whole steps.
SR_ALPHA = 100.0  # reconstruction weight of the SR setting
SR_STEP = 2 ** (1 / 3)  # upsampling per step the paper starts from


def sr_steps(factor: float) -> tuple[int, float]:
    """(k, r): k steps of 1/r with ``r**-k == factor`` exactly and r close to 2^(-1/3)."""
    if not factor > 1.0:
        raise ConfigError(f"--factor must be > 1, got {factor:g}")
    k = max(1, round(math.log(factor) / math.log(SR_STEP)))
    return k, factor ** (-1.0 / k)


def sr_config(base: TrainConfig, factor: float, alpha: float = SR_ALPHA) -> TrainConfig:
    """``base`` with the SR settings: reconstruction weight ``alpha``, scale factor r of ``sr_steps``."""
    return base.replace(alpha=alpha, scale_factor=sr_steps(factor)[1])


def downscale(image: tf.Tensor | np.ndarray, size: Size) -> tf.Tensor:
    """Antialiased bicubic resize of an [H, W, C] or [B, H, W, C] image."""
    import tensorflow as tf

    return tf.image.resize(tf.convert_to_tensor(image, tf.float32), size, method="bicubic", antialias=True)


def working_image(image: np.ndarray, geometry: PyramidGeometry) -> np.ndarray:
    """The image resized so its longer side is at most max_size, [H1, W1, 3]."""
    import tensorflow as tf

    if tuple(image.shape[:2]) == geometry.working_size:
        return np.asarray(image, np.float32)
    return tf.clip_by_value(downscale(image, geometry.working_size), -1.0, 1.0).numpy()


def build_pyramid(image: np.ndarray, geometry: PyramidGeometry) -> list[tf.Tensor]:
    """Training images, coarsest first, each [1, h, w, 3] float32 in [-1, 1].

    Every scale is resized from the working-size image (never chained), as in
    the reference code, but in float (the reference round-trips via uint8).
    Bicubic overshoot past [-1, 1] is clipped, as uint8 storage would.
    """
    import tensorflow as tf

    working = working_image(image, geometry)
    return [tf.clip_by_value(downscale(working, size), -1.0, 1.0)[tf.newaxis] for size in geometry.sizes]


def upsample(x: tf.Tensor, size: tf.Tensor | Size) -> tf.Tensor:
    """The between-scales resize used everywhere: bilinear, half-pixel centres."""
    import tensorflow as tf

    return tf.image.resize(x, size, method="bilinear", antialias=False)


def noise_sizes(sizes: tuple[Size, ...], scale_h: float = 1.0, scale_v: float = 1.0) -> list[Size]:
    """Per-scale map sizes of a sample ``scale_v`` times taller, ``scale_h`` wider.

    Rounded half up, at least 1 pixel; the nets are fully convolutional, so
    any size works.
    """
    if scale_h <= 0 or scale_v <= 0:
        raise ConfigError("scale_h and scale_v must be > 0")
    return [(max(1, math.floor(h * scale_v + 0.5)), max(1, math.floor(w * scale_h + 0.5))) for h, w in sizes]
