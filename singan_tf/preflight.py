"""What a command does before TensorFlow loads, and the quiet load itself (docs/design.md §11).

Loading TensorFlow takes seconds, so the CLIs check their options and
inputs first: images with ``singan_tf.images`` (numpy and Pillow), a new
pyramid with ``singan_tf.pyramid`` (its geometry is arithmetic), run
directories and the options whose range depends on a run here (the standard
library only; the library raises the same errors through these functions).
``import_tensorflow`` then loads TensorFlow without the lines its C++ side
prints while it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from singan_tf.config import RUNTIME_FIELDS, TrainConfig, option_name
from singan_tf.errors import ConfigError, InputError

MANIFEST = "pyramid.json"
CONFIG = "config.json"
FORMAT_VERSION = 1  # of the run directory (docs/design.md §8); a reader refuses newer ones


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage mistakes are one line, like every other mistake (usage: --help).

    Sub-command parsers inherit it (``add_subparsers`` builds them with this class).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def manifest_path(run_dir: str | os.PathLike) -> Path:
    """Where a run directory keeps its manifest; a directory holding one is a run."""
    return Path(run_dir) / MANIFEST


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run directory's ``pyramid.json``: geometry and finished scales."""
    path = manifest_path(run_dir)
    if not path.is_file():
        raise InputError(f"{Path(run_dir)}: not a singan-tf run directory (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:  # not UTF-8, or not JSON
        raise InputError(f"{path}: unreadable ({err})") from None
    if manifest.get("format", 1) > FORMAT_VERSION:
        raise InputError(
            f"{Path(run_dir)}: run directory format {manifest['format']} is newer than this singan-tf "
            f"reads ({FORMAT_VERSION}); upgrade singan-tf"
        )
    return manifest


def trained_manifest(run_dir: str | os.PathLike, allow_partial: bool = False) -> dict[str, Any]:
    """The manifest of a run with every scale trained (with ``allow_partial``: at least one)."""
    manifest = read_manifest(run_dir)
    done, total = len(manifest["scales"]), len(manifest["geometry"]["sizes"])
    if done == 0 or (done < total and not allow_partial):
        raise InputError(
            f"{Path(run_dir)}: training finished {done} of {total} scales; "
            "resume it with `python -m singan_tf.train --resume`"
        )
    return manifest


def read_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The ``TrainConfig`` a run directory was started with (its ``config.json``)."""
    path = Path(run_dir) / CONFIG
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise InputError(f"{path}: missing (the run directory is incomplete)") from None
    except ValueError as err:  # not UTF-8, or not JSON
        raise InputError(f"{path}: unreadable ({err})") from None


def trained_scales(run_dir: str | os.PathLike) -> int:
    """The number of scales of a run whose training finished (``trained_manifest``'s checks)."""
    return len(trained_manifest(run_dir)["geometry"]["sizes"])


def check_training_target(
    out: str | os.PathLike, resume: bool, complete_ok: bool = False
) -> dict[str, Any] | None:
    """Whether training may write into ``out``: the manifest of the run to resume, or None for a
    new run. Refuses an existing run without ``resume``, ``resume`` without a run, and (unless
    ``complete_ok``) resuming a run with nothing left to train."""
    if not manifest_path(out).is_file():
        if resume:
            raise InputError(f"{Path(out)}: no run to resume")
        return None
    manifest = read_manifest(out)
    done, total = len(manifest["scales"]), len(manifest["geometry"]["sizes"])
    if not resume:
        raise InputError(
            f"{Path(out)} already holds a run ({done} of {total} scales finished); "
            "add --resume to continue it, or choose another --out"
        )
    if done == total and not complete_ok:
        raise InputError(f"{Path(out)} is complete ({total} scales); nothing to resume")
    return manifest


def resumed_config(stored: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """The config a resumed run goes on with: ``stored``, with ``given``'s runtime fields.

    ``given`` maps config fields to the values asked for now; any that would change the
    trained model must equal the stored ones. ``precision="auto"`` agrees with a recorded
    precision (runs written before per-scale choices recorded one).
    """
    if given.get("precision") == "auto":
        given = {**given, "precision": stored.precision}
    differing = [
        f"{option_name(name)} {value} differs from the run's {getattr(stored, name)}"
        for name, value in given.items()
        if name not in RUNTIME_FIELDS and getattr(stored, name) != value
    ]
    if differing:
        raise ConfigError(f"{', '.join(differing)}; a resumed run keeps its settings")
    return stored.replace(**{k: v for k, v in given.items() if k in RUNTIME_FIELDS})


# -- options whose range is the run's scales (N + 1 of them: 0..N) ----------------
def _check_scale(what: str, scale: int, first: int, last: int) -> None:
    if not first <= scale <= last:
        raise ConfigError(f"{what} must be in {first}..{last}, got {scale}")


def check_start_scale(start_scale: int, num_scales: int) -> None:
    """Sampling's first random scale, 0..N: the scales below follow the reconstruction."""
    _check_scale("start scale", start_scale, 0, num_scales - 1)


def check_injection_scale(scale: int, num_scales: int) -> None:
    """Injection's K, 1..N: an image replaces out_{K-1} and scales K..N run."""
    _check_scale("injection scale", scale, 1, num_scales - 1)


def check_walk(frames: int, start_scale: int, num_scales: int, alpha: float, beta: float) -> None:
    """An animation's random walk (``applications.walk_noise``): K in 1..N+1, the scales whose noise moves."""
    if frames < 2:
        raise ConfigError("--frames must be >= 2")
    _check_scale("animation start scale", start_scale, 1, num_scales)
    if not (0.0 <= alpha <= 1.0 and 0.0 <= beta < 1.0):
        raise ConfigError("--alpha must be in [0, 1] and --beta in [0, 1)")


ANIMATION_FORMATS = (".gif", ".mp4")


def check_animation_path(path: str | os.PathLike) -> Path:
    """The output path, if its format can be written here (MP4 needs imageio-ffmpeg)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_FORMATS:
        raise ConfigError(f"{path.name}: animations are written as {' or '.join(ANIMATION_FORMATS)}")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "writing MP4 needs imageio-ffmpeg (pip install imageio-ffmpeg); or write a .gif"
            ) from None
    return path


def import_tensorflow(verbose: bool = False) -> ModuleType:
    """Import TensorFlow, keeping its start-up lines off the terminal unless ``verbose``.

    Its C++ side writes them (oneDNN, CPU features, absl's "before InitializeLog")
    straight to file descriptor 2 while the libraries load, whatever
    TF_CPP_MIN_LOG_LEVEL says, so fd 2 points at a temporary file during the
    import only; if the import fails, that file is shown before the traceback.
    Later C++ logging obeys TF_CPP_MIN_LOG_LEVEL, set to 2 (errors) unless the
    user set it.
    """
    if verbose or "tensorflow" in sys.modules:
        import tensorflow

        return tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    terminal = os.dup(2)
    failed = True
    with tempfile.TemporaryFile() as startup:
        os.dup2(startup.fileno(), 2)
        try:
            import tensorflow

            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(terminal, 2)
            os.close(terminal)
            if failed:  # what TensorFlow said may explain why
                startup.seek(0)
                sys.stderr.buffer.write(startup.read())
                sys.stderr.flush()
    return tensorflow
