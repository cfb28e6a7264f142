"""Image I/O: files to float32 [-1, 1] RGB arrays and back, with clear errors.

Everything here is numpy + Pillow; TensorFlow is not needed to read or
write an image.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from singan_tf.errors import ConfigError, InputError
from singan_tf.preflight import check_animation_path

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "rocket.jpg"


def bundled_image(name: str = DEFAULT_IMAGE) -> Path:
    """Path of an image shipped with the package (see data/ATTRIBUTION.md)."""
    path = resources.files("singan_tf") / "data" / name
    if not path.is_file():
        raise InputError(f"no bundled image named {name!r}")
    return Path(str(path))


def _to_rgb_float(im: Image.Image, path: Path) -> np.ndarray:
    """Convert any Pillow mode to float32 RGB in [-1, 1], saying what changed."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit int) grayscale: scale by the type's range, not 255.
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() <= 65535 else float(arr.max())
        log.warning("%s: 16-bit grayscale image, converted to RGB", path.name)
        gray = arr / peak
        return (np.repeat(gray[..., None], 3, axis=2) * 2.0 - 1.0).astype(np.float32)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        gray = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        log.warning("%s: float grayscale image, rescaled to [0, 1] and converted to RGB", path.name)
        return (np.repeat(gray[..., None], 3, axis=2) * 2.0 - 1.0).astype(np.float32)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        log.warning("%s: image has an alpha channel; it is dropped", path.name)
    elif mode in ("L", "1"):
        log.warning("%s: grayscale image, converted to RGB", path.name)
    elif mode not in ("RGB", "P"):
        log.warning("%s: %s image, converted to RGB", path.name, mode)
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    return rgb / 127.5 - 1.0


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 [H, W, 3] in [-1, 1].

    EXIF orientation is applied; grayscale, palette, alpha and 16-bit
    images are converted (with a warning). Raises ``InputError`` with a
    one-line reason for anything that is not a readable image.
    """
    return _read(path, _to_rgb_float)


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask (any image; white = 1, black = 0) as float32 [H, W, 1] in [0, 1].

    Colour images count by their luminance; errors as ``load_image``.
    """
    return _read(path, lambda im, _: np.asarray(im.convert("L"), np.float32)[..., None] / 255.0)


def _read(path: str | os.PathLike, convert) -> np.ndarray:
    """Open an image file, apply its EXIF orientation and ``convert(image, path)``,
    turning every way of failing into a one-line ``InputError``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return convert(im, path)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as err:
        raise InputError(f"{path}: refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{path}: unreadable image ({err})") from None


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[-1, 1] float (any leading dims) to uint8, clipping only here."""
    return np.round((np.clip(image, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike, path: Path) -> None:
    """Give a finished temp file the usual mode (mkstemp makes 0600) and rename it over ``path``."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so a reader sees the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_image(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an [H, W, 3] image ([-1, 1] float or uint8) as PNG/JPEG, atomically."""
    path = Path(path)
    arr = image if image.dtype == np.uint8 else to_uint8(image)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    atomic_write_bytes(path, buf.getvalue())
    return path


def contact_sheet(images: list[np.ndarray], columns: int | None = None, gap: int = 2) -> np.ndarray:
    """Tile [H, W, 3] images (same size) into one uint8 grid with white gaps."""
    tiles = [im if im.dtype == np.uint8 else to_uint8(im) for im in images]
    n = len(tiles)
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    h, w = tiles[0].shape[:2]
    sheet = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return sheet


# -- animations ------------------------------------------------------------------
def _gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    # One palette for all frames (from a strip of them): per-frame palettes flicker.
    strip = Image.fromarray(np.concatenate(frames[:: max(1, len(frames) // 16)], axis=0))
    palette = strip.quantize(256)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
    )
    return buf.getvalue()


def _write_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    import imageio_ffmpeg

    # H.264 in yuv420p needs even sides: repeat the last row/column if odd.
    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    try:
        writer = imageio_ffmpeg.write_frames(tmp, frames.shape[2:0:-1], fps=fps, macro_block_size=2)
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_animation(frames: np.ndarray, path: str | os.PathLike, fps: float, info: dict) -> list[Path]:
    """Write frames as a GIF (Pillow) or MP4 (imageio-ffmpeg), plus ``<path>.json``
    with the frame count, size, fps and ``info``. Both atomically.

    Returns:
        The paths written.
    """
    path = check_animation_path(path)
    if not fps > 0:
        raise ConfigError("--fps must be > 0")
    pixels = to_uint8(frames)
    if path.suffix.lower() == ".gif":
        atomic_write_bytes(path, _gif_bytes(pixels, fps))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_mp4(pixels, path, fps)
    meta = {"frames": len(frames), "height": frames.shape[1], "width": frames.shape[2], "fps": fps, **info}
    meta_path = path.with_suffix(".json")
    atomic_write_bytes(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
    return [path, meta_path]
