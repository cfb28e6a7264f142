"""Training, coarse to fine (DESIGN.md section 4).

``ScaleTrainer`` trains G_n and D_n against the frozen coarser pyramid;
``train_pyramid`` runs it for every scale and writes the run directory.

Why a hand-written loop and not ``Model.fit``: one SinGAN iteration is
3 critic steps and 3 generator steps with a shared random-path ``prev``,
two optimizers, a reconstruction pass and a per-scale lr milestone; fusing
all of it into ONE traced function (optionally XLA-compiled) is what makes
it fast, and ``fit`` would split it into per-batch steps with their own
host round-trips. Progress, TensorBoard and resume are provided by the
small callback protocol below instead.

Deliberate differences from the reference code (DESIGN section 4):

* generator steps recompute the fake from fresh noise every step (the
  reference back-propagates three times through the last critic step's
  fake, which newer PyTorch rejects);
* z* is drawn once, not every iteration;
* the lr milestone is 80% of the iterations, not the fixed iteration 1600;
* ``prev`` (the frozen coarser pyramid's random output) is drawn once per
  iteration and shared by its 6 steps, each of which draws fresh z_n
  (the reference draws fresh ``prev`` per critic step and one z_n per
  iteration) - it costs one pass of the coarser scales instead of three.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf

from singan_tf.config import TrainConfig
from singan_tf.errors import NonFiniteLossError
from singan_tf.losses import gradient_penalty, noise_amplitude, reconstruction_loss
from singan_tf.models import PatchCritic, ScaleGenerator, build_critic, build_generator
from singan_tf.pyramid import PyramidGeometry, build_pyramid, geometry_for, upsample
from singan_tf.rundir import RunDir
from singan_tf.sampling import Pyramid, run_pyramid

log = logging.getLogger(__name__)

METRICS = ("d_loss", "g_loss", "adv_loss", "rec_loss", "rec_rmse", "gp", "d_real", "d_fake")

# XLA is faster for small maps (dispatch-bound), plain graphs for large
# ones (oneDNN convs win); see bench/train_speed.py for the measurement.
XLA_MAX_PIXELS = 96 * 96


class TrainingCallback(Protocol):
    def on_scale_begin(self, scale: int, info: dict) -> None: ...
    def on_iterations(self, scale: int, iteration: int, metrics: dict[str, float] | None) -> None: ...
    def on_scale_end(self, scale: int, info: dict, pyramid: Pyramid) -> None: ...


def use_xla(config: TrainConfig, size: tuple[int, int]) -> bool:
    if config.jit_compile == "auto":
        return size[0] * size[1] <= XLA_MAX_PIXELS
    return config.jit_compile == "on"


def lr_schedule(config: TrainConfig, lr: float, steps_per_iter: int):
    """lr, then lr * gamma from iteration ``lr_milestone_iter`` on.

    Adam's step counter advances ``steps_per_iter`` times per iteration, so
    the drop comes at step ``milestone * steps_per_iter``.
    """
    boundary = config.lr_milestone_iter * steps_per_iter - 1
    return keras.optimizers.schedules.PiecewiseConstantDecay([boundary], [lr, lr * config.lr_gamma])


def dtype_policy(config: TrainConfig) -> str | None:
    return None if config.precision == "float32" else config.precision


class ScaleTrainer:
    """Adversarial + reconstruction training of one scale.

    Args:
        config: hyperparameters.
        scale: index n of the scale.
        real: x_n, [1, h, w, 3].
        generator, critic: G_n and D_n (fresh or warm-started).
        frozen: G_0..G_{n-1}, frozen, and their noise amplitudes.
        noise_amp: amp_n.
        rec_input: (x, prev) of the reconstruction pass at this scale.
        seed: base seed; iteration i uses stateless seeds derived from
            (seed, scale, i), so a resumed run draws the same noise.
    """

    def __init__(
        self,
        config: TrainConfig,
        scale: int,
        real: tf.Tensor,
        generator: ScaleGenerator,
        critic: PatchCritic,
        frozen: Sequence[ScaleGenerator],
        frozen_amps: Sequence[float],
        frozen_sizes: Sequence[tuple[int, int]],
        noise_amp: float,
        rec_input: tuple[tf.Tensor, tf.Tensor],
    ):
        self.config = config
        self.scale = scale
        self.real = tf.constant(real, tf.float32)
        self.generator = generator
        self.critic = critic
        self.frozen = list(frozen)
        self.frozen_amps = [float(a) for a in frozen_amps]
        self.frozen_sizes = [tuple(s) for s in frozen_sizes]
        self.noise_amp = float(noise_amp)
        self.rec_x = tf.constant(rec_input[0], tf.float32)
        self.rec_prev = tf.constant(rec_input[1], tf.float32)
        self.g_opt = self._adam(config.lr_g, config.generator_steps)
        self.d_opt = self._adam(config.lr_d, config.critic_steps)
        self.g_opt.build(generator.trainable_variables)
        self.d_opt.build(critic.trainable_variables)
        self.jit = use_xla(config, tuple(real.shape[1:3]))
        # No data-dependent Python control flow inside: autograph only slows tracing.
        self._iteration = tf.function(self._iteration_impl, jit_compile=self.jit, autograph=False)

    def _adam(self, lr: float, steps_per_iter: int) -> keras.optimizers.Adam:
        schedule = lr_schedule(self.config, lr, steps_per_iter)
        return keras.optimizers.Adam(schedule, beta_1=self.config.beta_1, beta_2=self.config.beta_2)

    # -- one iteration, traced once ------------------------------------
    def _seed(self, seed: tf.Tensor, k: int) -> tf.Tensor:
        return tf.stack([seed[0], seed[1] * 64 + k])

    def random_prev(self, seed: tf.Tensor) -> tf.Tensor:
        """up(output of the frozen coarser pyramid on fresh noise), at scale n's size."""
        h, w = self.real.shape[1:3]
        if not self.frozen:
            return tf.zeros((1, h, w, 3), tf.float32)
        noises = [
            tf.random.stateless_normal(
                (1, fh, fw, 1 if m == 0 else 3), self._seed(seed, 32 + m), alg="philox"
            )
            for m, (fh, fw) in enumerate(self.frozen_sizes)
        ]
        out = run_pyramid(self.frozen, self.frozen_amps, noises)
        return upsample(out, (h, w))

    def _fake(self, prev: tf.Tensor, seed: tf.Tensor, training: bool = True) -> tf.Tensor:
        h, w = self.real.shape[1:3]
        z = tf.random.stateless_normal((1, h, w, 1 if self.scale == 0 else 3), seed, alg="philox")
        return self.generator((self.noise_amp * z + prev, prev), training=training)

    def _critic_step(self, prev: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        fake = self._fake(prev, self._seed(seed, 0))
        mix = tf.random.stateless_uniform((), self._seed(seed, 1), alg="philox")
        critic = self.critic
        with tf.GradientTape() as tape:
            d_real = tf.reduce_mean(critic(self.real, training=True))
            d_fake = tf.reduce_mean(critic(fake, training=True))
            gp = gradient_penalty(lambda x: critic(x, training=True), self.real, fake, mix)
            d_loss = d_fake - d_real + self.config.gp_weight * gp
        grads = tape.gradient(d_loss, critic.trainable_variables)
        self.d_opt.apply_gradients(zip(grads, critic.trainable_variables, strict=True))
        return {"d_loss": d_loss, "gp": gp, "d_real": d_real, "d_fake": d_fake}

    def _generator_step(self, prev: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        gen = self.generator
        with tf.GradientTape() as tape:
            fake = self._fake(prev, seed)
            adv = -tf.reduce_mean(self.critic(fake, training=True))
            rec = reconstruction_loss(gen((self.rec_x, self.rec_prev), training=True), self.real)
            g_loss = adv + self.config.alpha * rec
        grads = tape.gradient(g_loss, gen.trainable_variables)
        self.g_opt.apply_gradients(zip(grads, gen.trainable_variables, strict=True))
        return {"g_loss": g_loss, "adv_loss": adv, "rec_loss": rec}

    def _iteration_impl(self, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """3 critic steps, then 3 generator steps (paper Alg. / DESIGN section 4)."""
        prev = self.random_prev(seed)
        metrics: dict[str, tf.Tensor] = {}
        for k in range(self.config.critic_steps):
            metrics.update(self._critic_step(prev, self._seed(seed, 2 + 2 * k)))
        for k in range(self.config.generator_steps):
            metrics.update(self._generator_step(prev, self._seed(seed, 16 + k)))
        metrics["rec_rmse"] = tf.sqrt(metrics["rec_loss"])
        return metrics

    # -- host loop -----------------------------------------------------
    def iteration_seed(self, iteration: int) -> tf.Tensor:
        return tf.constant([self.config.seed * 1009 + self.scale, iteration], tf.int32)

    def run(self, start: int, stop: int, on_metrics=None) -> dict[str, float]:
        """Run iterations [start, stop); read metrics every ``log_every``."""
        last: dict[str, float] = {}
        for it in range(start, stop):
            out = self._iteration(self.iteration_seed(it))
            done = it + 1
            if done % self.config.log_every == 0 or done == stop:
                last = {k: float(v) for k, v in out.items()}
                if not all(math.isfinite(v) for v in last.values()):
                    raise NonFiniteLossError(self.scale, it, last)
                if on_metrics:
                    on_metrics(done, last)
            elif on_metrics:
                on_metrics(done, None)
        return last


@dataclasses.dataclass
class TrainResult:
    run_dir: RunDir
    pyramid: Pyramid
    seconds: float


def draw_rec_noise(config: TrainConfig, size: tuple[int, int]) -> np.ndarray:
    """z*, drawn once: [1, h_0, w_0, 1] standard normal from the run's seed."""
    return np.random.default_rng([config.seed, 0x5EED]).standard_normal((1, *size, 1), dtype=np.float32)


def init_scale_nets(config: TrainConfig, scale: int, gens: list, critics: list):
    """Fresh G_n, D_n, or copies of G_{n-1}, D_{n-1} when the width is unchanged."""
    policy = dtype_policy(config)
    ch = config.channels(scale)
    g = build_generator(ch, config.num_layers, config.kernel_size, dtype=policy)
    d = build_critic(ch, config.num_layers, config.kernel_size, dtype=policy)
    if scale > 0 and config.channels(scale - 1) == ch:
        g.set_weights(gens[scale - 1].get_weights())
        d.set_weights(critics[scale - 1].get_weights())
    return g, d


def train_pyramid(
    config: TrainConfig,
    image: np.ndarray,
    out: str | RunDir,
    callbacks: Sequence[TrainingCallback] = (),
    geometry: PyramidGeometry | None = None,
) -> TrainResult:
    """Train every scale of a SinGAN pyramid on ``image`` and write ``out``.

    Args:
        config: hyperparameters.
        image: [H, W, 3] float32 in [-1, 1] (``singan_tf.images.load_image``).
        out: the run directory to create.
        callbacks: progress / logging hooks.
        geometry: precomputed pyramid geometry (else from config and image).

    Returns:
        The run directory and the trained, frozen pyramid.
    """
    t0 = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    run = out if isinstance(out, RunDir) else RunDir(out)
    geometry = geometry or geometry_for(config, image.shape[:2])
    reals = build_pyramid(image, geometry)
    rec_noise = draw_rec_noise(config, geometry.sizes[0])
    run.initialise(config, geometry, reals[-1][0].numpy(), rec_noise)

    gens: list[ScaleGenerator] = []
    critics: list[PatchCritic | None] = []
    amps: list[float] = []
    rec = None
    for n, real in enumerate(reals):
        size = geometry.sizes[n]
        # Reconstruction path: z* at the coarsest scale, zero noise above.
        if n == 0:
            rec_prev = tf.zeros((1, *size, 3))
            amp = 1.0
            rec_input = (amp * rec_noise + rec_prev, rec_prev)
        else:
            rec_prev = upsample(rec, size)
            amp = noise_amplitude(real, rec_prev, config.noise_amp_factor)
            rec_input = (rec_prev, rec_prev)
        g, d = init_scale_nets(config, n, gens, critics)
        info = {
            "scale": n,
            "num_scales": geometry.num_scales,
            "size": size,
            "channels": config.channels(n),
            "noise_amp": amp,
            "iters": config.iters,
        }
        trainer = ScaleTrainer(config, n, real, g, d, gens, amps, geometry.sizes[:n], amp, rec_input)
        info["xla"] = trainer.jit
        for cb in callbacks:
            cb.on_scale_begin(n, info)
        ts = time.perf_counter()

        def report(it, metrics, n=n):
            for cb in callbacks:
                cb.on_iterations(n, it, metrics)

        last = trainer.run(0, config.iters, report)
        g.trainable = False
        rec = g(rec_input, training=False)
        stats = {
            "seconds": round(time.perf_counter() - ts, 3),
            "rec_rmse": float(tf.sqrt(reconstruction_loss(rec, real))),
            "final": last,
        }
        run.write_scale(n, g, d, amp, stats)
        gens.append(g)
        critics.append(d)
        amps.append(amp)
        pyramid = Pyramid(config, geometry, list(gens), list(amps), rec_noise)
        info.update(stats)
        for cb in callbacks:
            cb.on_scale_end(n, info, pyramid)
    pyramid = Pyramid(config, geometry, gens, amps, rec_noise)
    return TrainResult(run, pyramid, time.perf_counter() - t0)
