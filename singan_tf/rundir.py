"""The run directory: the one artefact training writes and everything reads (docs/design.md §8).

Layout::

    RUN_DIR/
      config.json            TrainConfig
      pyramid.json           geometry, per-scale size/width/noise amp, finished scales
      training_image.png     the working-size training image (preview)
      training_image.npy     the same in float32 [-1, 1] (what training and resume use)
      rec_noise.npy          z*, the coarsest scale's fixed reconstruction noise
      scales/NN/generator.weights.h5, critic.weights.h5
                 coarser_generator.weights.h5: G_{N-1} as scale N left it (--concurrent 2)
      checkpoints/scale_NN.npz  mid-scale state: weights, optimizer slots, iteration, runtime
      logs/                  TensorBoard event files
      samples/               images written by training and `sample`

Every file is written atomically (temp file + rename), and ``pyramid.json``
lists a scale only after its weights are on disk, so a reader never sees a
half-written scale. Weights are Keras ``.weights.h5`` (no pickling);
``rec_noise.npy`` is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from singan_tf import __version__
from singan_tf.config import TrainConfig
from singan_tf.images import atomic_write_bytes, load_image, publish, save_image
from singan_tf.models import build_critic, build_generator, load_weights
from singan_tf.preflight import (
    CONFIG,
    FORMAT_VERSION,
    manifest_path,
    read_config,
    read_manifest,
    trained_manifest,
)
from singan_tf.pyramid import PyramidGeometry
from singan_tf.sampling import Pyramid


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_weights(model: keras.Model, path: Path) -> None:
    """``model.save_weights`` to a temp name, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".weights.h5")
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    """Paths and reads/writes of one run directory (no TF state of its own)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # Paths.
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def manifest_path(self) -> Path:
        return manifest_path(self.path)

    @property
    def image_path(self) -> Path:
        return self.path / "training_image.png"

    @property
    def image_array_path(self) -> Path:
        return self.path / "training_image.npy"

    @property
    def rec_noise_path(self) -> Path:
        return self.path / "rec_noise.npy"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def scale_dir(self, scale: int) -> Path:
        return self.path / "scales" / f"{scale:02d}"

    def checkpoint_path(self, scale: int) -> Path:
        return self.checkpoints / f"scale_{scale:02d}.npz"

    def generator_path(self, scale: int) -> Path:
        return self.scale_dir(scale) / "generator.weights.h5"

    def critic_path(self, scale: int) -> Path:
        return self.scale_dir(scale) / "critic.weights.h5"

    def refined_coarser_path(self, scale: int) -> Path:
        """G_{n-1} as scale n left it, where scale n trained it too (``TrainConfig.concurrent``)."""
        return self.scale_dir(scale) / "coarser_generator.weights.h5"

    def generator_to_load(self, scale: int, manifest: dict) -> Path:
        """Where G_n's final weights are: refined by scale n+1 if that scale is finished and
        trained G_n too, else scale n's own. Scale n+1's manifest entry is the one commit point
        of both files: until it is written, scale n's own weights stand."""
        finer = manifest["scales"][scale + 1] if scale + 1 < len(manifest["scales"]) else {}
        refined = finer.get("refines_coarser")
        return self.refined_coarser_path(scale + 1) if refined else self.generator_path(scale)

    # State.
    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_config(self) -> TrainConfig:
        return read_config(self.path)

    def read_manifest(self) -> dict[str, Any]:
        return read_manifest(self.path)

    def finished_scales(self) -> int:
        return len(self.read_manifest()["scales"]) if self.exists() else 0

    # Writes.
    def initialise(self, config: TrainConfig, geometry: PyramidGeometry, image, rec_noise) -> None:
        """Write everything known before training: config, geometry, z*, image."""
        self.path.mkdir(parents=True, exist_ok=True)
        save_image(image, self.image_path)
        atomic_save_npy(self.image_array_path, image)
        atomic_save_npy(self.rec_noise_path, rec_noise)
        atomic_write_json(self.config_path, config.to_dict())
        # The manifest goes last: its presence marks a usable run directory.
        atomic_write_json(
            self.manifest_path,
            {
                "format": FORMAT_VERSION,
                "singan_tf_version": __version__,
                "geometry": geometry.to_dict(),
                "scales": [],
            },
        )

    def write_scale(
        self, scale: int, generator, critic, noise_amp: float, stats: dict, refined_coarser=None
    ) -> None:
        """Save a finished scale; it counts as done once listed in pyramid.json.
        ``refined_coarser``: G_{n-1} as this scale left it, where it trained it too."""
        manifest = self.read_manifest()
        if len(manifest["scales"]) != scale:
            raise RuntimeError(f"scale {scale} written out of order ({len(manifest['scales'])} done)")
        atomic_save_weights(generator, self.generator_path(scale))
        atomic_save_weights(critic, self.critic_path(scale))
        if refined_coarser is not None:
            atomic_save_weights(refined_coarser, self.refined_coarser_path(scale))
        manifest["scales"].append(
            {
                "scale": scale,
                "size": list(manifest["geometry"]["sizes"][scale]),
                "channels": int(generator.channels),
                "noise_amp": float(noise_amp),
                **({"refines_coarser": True} if refined_coarser is not None else {}),
                **stats,
            }
        )
        atomic_write_json(self.manifest_path, manifest)

    def read_image(self) -> np.ndarray:
        """The float working-size training image (from the PNG preview if the
        float copy is missing, as in runs written before it existed)."""
        if self.image_array_path.is_file():
            return np.load(self.image_array_path, allow_pickle=False)
        return load_image(self.image_path)

    def read_rec_noise(self) -> np.ndarray:
        return np.load(self.rec_noise_path, allow_pickle=False)

    # Mid-scale checkpoints: one .npz of named arrays per unfinished scale.
    def write_checkpoint(
        self, scale: int, iteration: int, state: dict[str, list[np.ndarray]], runtime: dict | None = None
    ) -> None:
        """The scale's state at ``iteration``, with the runtime it trains in (a resumed scale keeps it)."""
        arrays = {"iteration": np.asarray(iteration, np.int64)}
        if runtime is not None:
            arrays["runtime"] = np.asarray(json.dumps(runtime, sort_keys=True))
        for name, values in state.items():
            arrays.update({f"{name}/{i:04d}": np.asarray(v) for i, v in enumerate(values)})
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.checkpoint_path(scale), buf.getvalue())

    def read_checkpoint(self, scale: int) -> tuple[int, dict[str, list[np.ndarray]]] | None:
        path = self.checkpoint_path(scale)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            iteration = int(data["iteration"])
            state: dict[str, list[np.ndarray]] = {}
            for key in sorted(k for k in data.files if "/" in k):
                state.setdefault(key.split("/")[0], []).append(data[key])
        return iteration, state

    def read_checkpoint_runtime(self, scale: int) -> dict | None:
        """The runtime record of the scale's checkpoint (None: no checkpoint, or one written
        before runtimes were recorded)."""
        path = self.checkpoint_path(scale)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["runtime"])) if "runtime" in data.files else None

    def clear_checkpoint(self, scale: int) -> None:
        self.checkpoint_path(scale).unlink(missing_ok=True)


def atomic_save_npy(path: Path, array) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, np.float32), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def load_nets(run: RunDir, config: TrainConfig, scales: int, critics: bool = False) -> list:
    """Finished generators (or critics) 0..scales-1, weights loaded, frozen."""
    manifest = run.read_manifest()
    manifest = {**manifest, "scales": manifest["scales"][:scales]}  # fewer: as when the last one finished
    build = build_critic if critics else build_generator
    nets = []
    for n in range(scales):
        net = build(config.channels(n), config.num_layers, config.kernel_size)
        load_weights(net, run.critic_path(n) if critics else run.generator_to_load(n, manifest))
        net.trainable = False
        nets.append(net)
    return nets


def load_pyramid(path: str | os.PathLike, allow_partial: bool = False) -> Pyramid:
    """Read a trained pyramid back from its run directory.

    Args:
        path: the run directory.
        allow_partial: accept a run whose training has not finished every
            scale (the pyramid then stops at the last finished scale).
    """
    run = RunDir(path)
    manifest = trained_manifest(run.path, allow_partial)
    config = run.read_config()
    geometry = PyramidGeometry.from_dict(manifest["geometry"])
    done = len(manifest["scales"])
    rec_noise = run.read_rec_noise()
    return Pyramid(
        config=config,
        geometry=geometry,
        generators=load_nets(run, config, done),
        noise_amps=[float(s["noise_amp"]) for s in manifest["scales"]],
        rec_noise=rec_noise,
    )
