"""Training callbacks: terminal progress (tqdm) and TensorBoard logging.

Both implement ``singan_tf.training.TrainingCallback``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from singan_tf.images import contact_sheet, save_image, to_uint8
from singan_tf.sampling import Pyramid


class ProgressBar:
    """One bar per scale: iterations, it/s, ETA for the scale and the losses.

    Also prints an overall ETA estimated from the pixels*channels^2*iterations
    cost of the remaining scales relative to the finished ones.
    """

    def __init__(
        self, sizes: list[tuple[int, int]], channels: list[int], iters: list[int] | None = None, file=None
    ):
        iters = iters or [1] * len(sizes)
        self.cost = [h * w * c * c * i for (h, w), c, i in zip(sizes, channels, iters, strict=True)]
        self.file = file or sys.stderr
        self.bar: tqdm | None = None
        self.scale: int | None = None  # the scale in training, for progress within it
        self.t0 = time.perf_counter()
        self.done_cost = 0.0

    def _eta(self) -> str:
        done = self.done_cost
        if self.bar is not None and self.scale is not None and self.bar.total:
            done += self.cost[self.scale] * min(self.bar.n, self.bar.total) / self.bar.total
        if not done:
            return "?"
        elapsed = time.perf_counter() - self.t0
        left = sum(self.cost) - done
        return f"{elapsed * left / done / 60:.1f} min"

    def on_scale_begin(self, scale: int, info: dict) -> None:
        h, w = info["size"]
        precision = {"mixed_bfloat16": " bf16", "mixed_float16": " fp16"}.get(info.get("precision", ""), "")
        desc = (
            f"scale {scale + 1}/{info['num_scales']} {w}x{h} {info['channels']}ch "
            f"amp {info['noise_amp']:.3g}{precision}{' xla' if info.get('xla') else ''}"
        )
        self.scale = scale
        self.bar = tqdm(total=info["iters"], desc=desc, file=self.file, dynamic_ncols=True, leave=True)
        self.bar.set_postfix_str(f"total ETA {self._eta()}")

    def on_iterations(self, scale: int, iteration: int, metrics: dict[str, float] | None) -> None:
        assert self.bar is not None
        self.bar.update(iteration - self.bar.n)
        if metrics:
            self.bar.set_postfix(
                D=f"{metrics['d_loss']:.3f}",
                G=f"{metrics['g_loss']:.3f}",
                rec=f"{metrics['rec_rmse']:.4f}",
                gp=f"{metrics['gp']:.3f}",
                total_eta=self._eta(),
                refresh=False,
            )

    def on_scale_end(self, scale: int, info: dict, pyramid: Pyramid) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.scale = None, None
        self.done_cost += self.cost[scale]


class TensorBoardLogger:
    """Scalars (losses, GP, rec RMSE, noise amp) and per-scale images in RUN/logs.

    Also writes ``samples/scale_NN.png`` (reconstruction + 3 samples) after
    every scale so progress can be looked at without TensorBoard.
    """

    def __init__(self, logdir: Path, samples_dir: Path, seed: int = 0):
        self.writer = tf.summary.create_file_writer(str(logdir))
        self.samples_dir = samples_dir
        self.seed = seed
        self.step0 = 0
        self.scale_iters = 0

    def on_scale_begin(self, scale: int, info: dict) -> None:
        self.scale_iters = info["iters"]
        with self.writer.as_default(step=scale):
            tf.summary.scalar("pyramid/noise_amp", info["noise_amp"])
            tf.summary.scalar("pyramid/channels", info["channels"])

    def on_iterations(self, scale: int, iteration: int, metrics: dict[str, float] | None) -> None:
        if not metrics:
            return
        with self.writer.as_default(step=self.step0 + iteration):
            for name, value in metrics.items():
                tf.summary.scalar(f"scale_{scale:02d}/{name}", value)
                tf.summary.scalar(f"all/{name}", value)

    def on_scale_end(self, scale: int, info: dict, pyramid: Pyramid) -> None:
        self.step0 += self.scale_iters
        rec = pyramid.reconstruct()[0]
        samples = pyramid.sample(3, seed=self.seed)
        sheet = contact_sheet([rec, *samples], columns=4)
        save_image(sheet, self.samples_dir / f"scale_{scale:02d}.png")
        with self.writer.as_default(step=scale):
            tf.summary.scalar("pyramid/rec_rmse", info["rec_rmse"])
            tf.summary.scalar("pyramid/seconds", info["seconds"])
            tf.summary.image("samples", to_uint8(np.stack([rec, *samples]))[..., :3], max_outputs=4)
        self.writer.flush()
