"""Training, coarse to fine (DESIGN.md section 4).

``ScaleTrainer`` trains G_n and D_n against the frozen coarser pyramid;
``train_pyramid`` runs it for every scale and writes the run directory.

Why a hand-written loop and not ``Model.fit``: one SinGAN iteration is
3 critic steps and 3 generator steps with a shared random-path ``prev``,
two optimizers, a reconstruction pass and a per-scale lr milestone; fusing
all of it into ONE traced function (optionally XLA-compiled) is what makes
it fast, and ``fit`` would split it into per-batch steps with their own
host round-trips. Progress and TensorBoard come through the small callback
protocol below; resume through mid-scale checkpoints in the run directory.

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
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf

from singan_tf.config import TrainConfig
from singan_tf.errors import ConfigError, InputError, NonFiniteLossError
from singan_tf.losses import gradient_penalty, noise_amplitude, reconstruction_loss
from singan_tf.models import PatchCritic, ScaleGenerator, build_critic, build_generator
from singan_tf.pyramid import PyramidGeometry, build_pyramid, geometry_for, upsample, working_image
from singan_tf.rundir import RunDir, load_nets
from singan_tf.sampling import Pyramid, run_pyramid

log = logging.getLogger(__name__)

# XLA is faster for small maps (dispatch-bound) but costs ~6 s more to
# compile per scale; plain graphs win once convs dominate (64+ channels).
# bench/train_speed.py measures both; "auto" uses XLA where it pays off.
XLA_MAX_PIXELS = 40 * 40
XLA_MIN_ITERS = 1000


class TrainingCallback(Protocol):
    """Hooks that observe training (progress bars, TensorBoard)."""

    def on_scale_begin(self, scale: int, info: dict) -> None: ...
    def on_iterations(self, scale: int, iteration: int, metrics: dict[str, float] | None) -> None: ...
    def on_scale_end(self, scale: int, info: dict, pyramid: Pyramid) -> None: ...


def use_xla(config: TrainConfig, size: tuple[int, int], iters: int) -> bool:
    """XLA for small scales that run long enough to repay its compile time (jit auto).

    Not with one thread per op (``configure_threads``): XLA's CPU code runs
    the whole step as one program, so it would then run on one core.
    """
    if config.jit_compile == "auto":
        one_thread = tf.config.threading.get_intra_op_parallelism_threads() == 1
        return size[0] * size[1] <= XLA_MAX_PIXELS and iters >= XLA_MIN_ITERS and not one_thread
    return config.jit_compile == "on"


# On a few CPU cores most of the training step's ops are small (a 3x3 conv
# over a 32-channel map takes well under a millisecond), and splitting each
# across the cores costs more in synchronisation than it gains. One thread
# per op, with independent ops (the critic's real, fake and gradient-penalty
# passes, their backward passes) running side by side, measured 1.2-1.7x
# faster per iteration at 32 channels and 64 channels up to ~100x150 on 2
# cores, and 3-5% slower at 128 channels (bench/README.md, "CPU threads").
SMALL_CPU_CORES = 4


def thread_plan(setting: str, cores: int, gpus: int) -> tuple[int, int] | None:
    """(intra-op, inter-op) threads for ``--cpu-threads setting``; None keeps TensorFlow's.

    ``auto``: one thread per op and ``cores`` ops at a time on a CPU-only
    machine with at most ``SMALL_CPU_CORES`` cores, else TensorFlow's pools;
    ``tf``: TensorFlow's pools; ``INTRA,INTER``: those counts.
    """
    if setting == "tf":
        return None
    if setting == "auto":
        return (1, max(cores, 1)) if not gpus and cores <= SMALL_CPU_CORES else None
    try:
        intra, inter = (int(v) for v in setting.split(","))
    except ValueError:
        intra = inter = 0
    if intra < 1 or inter < 1:
        raise ConfigError(f"--cpu-threads must be auto, tf or INTRA,INTER (two counts), not {setting!r}")
    return intra, inter


def configure_threads(setting: str = "auto") -> tuple[int, int] | None:
    """Apply ``thread_plan`` to this process; call before TensorFlow runs its first op.

    Returns the plan applied, or None (TensorFlow's pools, or too late to change them).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    plan = thread_plan(setting, cores, len(tf.config.list_physical_devices("GPU")))
    if plan is None:
        return None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(plan[0])
        tf.config.threading.set_inter_op_parallelism_threads(plan[1])
    except RuntimeError:  # TensorFlow already started in this process
        log.debug("CPU threads: TensorFlow is already running; its thread pools stay as they are")
        return None
    log.debug("CPU threads: %d per op, up to %d ops at a time", *plan)
    return plan


# Bytes per activation element held during one iteration at the finest scale,
# relative to one forward pass's activations (GP double backward, Adam, BN
# saves); calibrated with bench/train_speed.py's peak RSS.
ACTIVATION_FACTOR = 30
RUNTIME_BASE_BYTES = 900 * 2**20  # TensorFlow + Keras resident before training


def estimate_memory(config: TrainConfig, geometry: PyramidGeometry) -> int:
    """Rough peak resident memory of training, in bytes (dominated by the finest scale)."""
    peak = 0
    for n, (h, w) in enumerate(geometry.sizes):
        ch = config.channels(n)
        k = config.kernel_size - 1
        per_pass = sum(
            (h + k * (config.num_layers - i)) * (w + k * (config.num_layers - i))
            for i in range(config.num_layers)
        )
        peak = max(peak, per_pass * ch * 4 * ACTIVATION_FACTOR)
    return RUNTIME_BASE_BYTES + peak


def available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(config: TrainConfig, geometry: PyramidGeometry) -> None:
    """Say the estimate; refuse sizes that clearly cannot fit in memory."""
    need, have = estimate_memory(config, geometry), available_memory()
    gib = 2**30
    log.info(
        "estimated peak memory %.1f GiB%s", need / gib, f" ({have / gib:.1f} GiB available)" if have else ""
    )
    if have is not None and need > 1.5 * have:
        raise ConfigError(
            f"training at max size {config.max_size} needs about {need / gib:.1f} GiB, but only "
            f"{have / gib:.1f} GiB is available; lower --max-size"
        )


def lr_schedule(config: TrainConfig, lr: float, steps_per_iter: int, scale: int):
    """lr, then lr * gamma from scale n's ``lr_milestone_iter`` on.

    Adam's step counter advances ``steps_per_iter`` times per iteration, so
    the drop comes at step ``milestone * steps_per_iter``.
    """
    boundary = config.lr_milestone_iter(scale) * steps_per_iter - 1
    return keras.optimizers.schedules.PiecewiseConstantDecay([boundary], [lr, lr * config.lr_gamma])


def dtype_policy(config: TrainConfig) -> str | None:
    precision = resolve_precision(config.precision)
    return None if precision == "float32" else precision


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(precision: str) -> str:
    """``auto``: the fastest precision this machine trains well in; others unchanged.

    On a GPU: bfloat16 from compute capability 8.0 (Ampere), float16 with
    loss scaling from 7.0 (Volta/Turing tensor cores), else float32. On a CPU:
    bfloat16 with native bfloat16 dot products (AVX-512-BF16 or AMX), else
    float32 (emulated bfloat16 is slower than float32).
    """
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        if tuple(capability) >= (8, 0):
            return "mixed_bfloat16"
        return "mixed_float16" if tuple(capability) >= (7, 0) else "float32"
    return "mixed_bfloat16" if _cpu_flags() & {"avx512_bf16", "amx_bf16"} else "float32"


class LossScale:
    """Dynamic loss scaling for float16 training.

    float16 gradients of small losses underflow; the loss is scaled up
    before the backward pass (as ``output_gradients``, so the forward graph
    is untouched) and the gradients scaled back down. A step whose gradients
    are not finite is skipped and the scale halved; after ``growth_interval``
    finite steps in a row it doubles. Written here rather than wrapping the
    optimizer so the skip is one ``tf.cond`` inside the fused iteration.
    """

    def __init__(self, initial: float = 2.0**15, growth_interval: int = 2000):
        self.scale = tf.Variable(initial, trainable=False, dtype=tf.float32, name="loss_scale")
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="loss_scale_good_steps")
        self.growth_interval = growth_interval

    @property
    def variables(self) -> list[tf.Variable]:
        return [self.scale, self.good_steps]

    def minimize(self, tape: tf.GradientTape, loss: tf.Tensor, variables, optimizer) -> None:
        grads = tape.gradient(loss, variables, output_gradients=self.scale)
        grads = [g / self.scale for g in grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

        def step():
            optimizer.apply(grads, variables)
            grow = self.good_steps + 1 >= self.growth_interval
            self.scale.assign(tf.where(grow, self.scale * 2.0, self.scale))
            self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), self.good_steps + 1))
            return tf.constant(True)

        def skip():
            self.scale.assign(tf.maximum(self.scale / 2.0, 1.0))
            self.good_steps.assign(0)
            return tf.constant(False)

        tf.cond(finite, step, skip)


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
        self.loss_scales = (
            (LossScale(), LossScale()) if resolve_precision(config.precision) == "mixed_float16" else None
        )  # (critic, generator)
        self.jit = use_xla(config, tuple(real.shape[1:3]), config.scale_iters(scale))
        # No data-dependent Python control flow inside: autograph only slows tracing.
        self._iteration = tf.function(self._iteration_impl, jit_compile=self.jit, autograph=False)

    def _adam(self, lr: float, steps_per_iter: int) -> keras.optimizers.Adam:
        schedule = lr_schedule(self.config, lr, steps_per_iter, self.scale)
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

    def _critic_step(self, prev: tf.Tensor, seed: tf.Tensor, with_gp: bool) -> dict[str, tf.Tensor]:
        fake = self._fake(prev, self._seed(seed, 0))
        critic = self.critic
        with tf.GradientTape() as tape:
            d_real = tf.reduce_mean(critic(self.real, training=True))
            d_fake = tf.reduce_mean(critic(fake, training=True))
            d_loss = d_fake - d_real
            if with_gp:
                mix = tf.random.stateless_uniform((), self._seed(seed, 1), alg="philox")
                gp = gradient_penalty(lambda x: critic(x, training=True), self.real, fake, mix)
                d_loss += self.config.gp_step_weight * gp
        self._minimize(tape, d_loss, critic.trainable_variables, self.d_opt, 0)
        # d_loss itself is logged once per iteration (_iteration_impl), in one form for any gp_every.
        metrics = {"d_real": d_real, "d_fake": d_fake}
        if with_gp:
            metrics["gp"] = gp
        return metrics

    def _generator_step(self, prev: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        gen = self.generator
        with tf.GradientTape() as tape:
            fake = self._fake(prev, seed)
            adv = -tf.reduce_mean(self.critic(fake, training=True))
            rec = reconstruction_loss(gen((self.rec_x, self.rec_prev), training=True), self.real)
            g_loss = adv + self.config.alpha * rec
        self._minimize(tape, g_loss, gen.trainable_variables, self.g_opt, 1)
        return {"g_loss": g_loss, "adv_loss": adv, "rec_loss": rec}

    def _minimize(self, tape: tf.GradientTape, loss: tf.Tensor, variables, optimizer, which: int) -> None:
        if self.loss_scales is None:
            optimizer.apply(tape.gradient(loss, variables), variables)
        else:
            self.loss_scales[which].minimize(tape, loss, variables, optimizer)

    def _iteration_impl(self, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """3 critic steps, then 3 generator steps (paper Alg. / DESIGN section 4)."""
        prev = self.random_prev(seed)
        metrics: dict[str, tf.Tensor] = {}
        gp_steps = self.config.gp_steps
        for k in range(self.config.critic_steps):
            metrics.update(self._critic_step(prev, self._seed(seed, 2 + 2 * k), k in gp_steps))
        # The paper's critic loss from the last step's scores and the last GP.
        metrics["d_loss"] = metrics["d_fake"] - metrics["d_real"] + self.config.gp_weight * metrics["gp"]
        for k in range(self.config.generator_steps):
            metrics.update(self._generator_step(prev, self._seed(seed, 16 + k)))
        metrics["rec_rmse"] = tf.sqrt(metrics["rec_loss"])
        return metrics

    # -- host loop -----------------------------------------------------
    def iteration_seed(self, iteration: int) -> tf.Tensor:
        return tf.constant([self.config.seed * 1009 + self.scale, iteration], tf.int32)

    def state(self) -> dict[str, list[np.ndarray]]:
        """Everything a resumed scale needs: weights (with BN statistics) and Adam slots."""
        return {
            "generator": self.generator.get_weights(),
            "critic": self.critic.get_weights(),
            "g_opt": [v.numpy() for v in self.g_opt.variables],
            "d_opt": [v.numpy() for v in self.d_opt.variables],
            "loss_scale": [v.numpy() for ls in self.loss_scales or () for v in ls.variables],
        }

    def load_state(self, state: dict[str, list[np.ndarray]]) -> None:
        self.generator.set_weights(state["generator"])
        self.critic.set_weights(state["critic"])
        for opt, values in ((self.g_opt, state["g_opt"]), (self.d_opt, state["d_opt"])):
            for var, value in zip(opt.variables, values, strict=True):
                var.assign(value)
        scale_vars = [v for ls in self.loss_scales or () for v in ls.variables]
        for var, value in zip(scale_vars, state.get("loss_scale", []), strict=False):
            var.assign(value)

    def run(self, start: int, stop: int, on_metrics=None, on_checkpoint=None) -> dict[str, float]:
        """Run iterations [start, stop).

        Losses are read back (a host sync) every ``log_every`` iterations and
        before every checkpoint; a non-finite loss raises before the
        checkpoint is written, so the last checkpoint is always a good one.
        """
        last: dict[str, float] = {}
        for it in range(start, stop):
            out = self._iteration(self.iteration_seed(it))
            done = it + 1
            log_now = done % self.config.log_every == 0 or done == stop
            checkpoint_now = on_checkpoint is not None and done % self.config.checkpoint_every == 0
            if log_now or checkpoint_now:
                last = {k: float(v) for k, v in out.items()}
                if not all(math.isfinite(v) for v in last.values()):
                    raise NonFiniteLossError(self.scale, it, last)
            if checkpoint_now and done < stop:
                on_checkpoint(done)
            if on_metrics:
                on_metrics(done, last if log_now else None)
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


def _check_resumable(run: RunDir, config: TrainConfig, image: np.ndarray | None) -> None:
    stored = run.read_config()
    changed = stored.differences(config)
    if changed:
        raise ConfigError(
            f"{run.path} was trained with different settings ({', '.join(changed)}); "
            "a resumed run keeps its settings"
        )
    if image is not None:
        geometry = PyramidGeometry.from_dict(run.read_manifest()["geometry"])
        same = tuple(image.shape[:2]) == geometry.input_size and np.allclose(
            working_image(image, geometry), run.read_image(), atol=1e-3
        )
        if not same:
            raise InputError(f"the image given is not the one {run.path} was trained on")


def train_pyramid(
    config: TrainConfig,
    image: np.ndarray | None,
    out: str | RunDir,
    callbacks: Sequence[TrainingCallback] = (),
    resume: bool = False,
) -> TrainResult:
    """Train every scale of a SinGAN pyramid on ``image`` into the run directory ``out``.

    Args:
        config: hyperparameters.
        image: [H, W, 3] float32 in [-1, 1] (``singan_tf.images.load_image``);
            may be None when resuming (the run directory keeps the image).
        out: the run directory.
        callbacks: progress / logging hooks.
        resume: continue the run in ``out``: finished scales are loaded, never
            retrained or rewritten; an unfinished scale continues from its
            last checkpoint.

    Returns:
        The run directory and the trained, frozen pyramid.
    """
    t0 = time.perf_counter()
    run = out if isinstance(out, RunDir) else RunDir(out)
    if config.precision == "auto":  # the run directory records what auto chose; a resume keeps it
        stored = run.read_config() if resume and run.exists() else None
        config = config.replace(precision=stored.precision if stored else resolve_precision("auto"))
        log.info("precision auto: %s", config.precision)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
        if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
            log.warning(
                "deterministic: oneDNN kernels are on, so runs may differ in the last bits; set "
                "TF_ENABLE_ONEDNN_OPTS=0 before importing TensorFlow (the CLI does) for bit-identical runs"
            )
    if run.exists():
        if not resume:
            raise InputError(f"{run.path} already holds a run; resume it or choose another directory")
        _check_resumable(run, config, image)
        geometry = PyramidGeometry.from_dict(run.read_manifest()["geometry"])
        working, rec_noise = run.read_image(), run.read_rec_noise()
        done = run.finished_scales()
    else:
        if image is None:
            raise InputError(f"{run.path}: no run to resume and no image given")
        geometry = geometry_for(config, image.shape[:2])
        working = working_image(image, geometry)
        rec_noise = draw_rec_noise(config, geometry.sizes[0])
        run.initialise(config, geometry, working, rec_noise)
        done = 0
    reals = build_pyramid(working, geometry)
    gens: list[ScaleGenerator] = load_nets(run, config, done)
    critics: list[PatchCritic] = load_nets(run, config, done, critics=True)
    amps = [float(s["noise_amp"]) for s in run.read_manifest()["scales"]]

    rec = None
    for n, real in enumerate(reals):
        size = geometry.sizes[n]
        # Reconstruction path: z* at the coarsest scale, zero noise above.
        if n == 0:
            rec_prev = tf.zeros((1, *size, 3))
            rec_input = (rec_noise + rec_prev, rec_prev)
        else:
            rec_prev = upsample(rec, size)
            rec_input = (rec_prev, rec_prev)
        if n < done:  # finished earlier: only replay its reconstruction
            rec = gens[n](rec_input, training=False)
            continue
        amp = 1.0 if n == 0 else noise_amplitude(real, rec_prev, config.noise_amp_factor)
        # Seed per scale, so a resumed run initialises scale n as a fresh one would.
        keras.utils.set_random_seed(config.seed * 1009 + n)
        g, d = init_scale_nets(config, n, gens, critics)
        iters = config.scale_iters(n)
        trainer = ScaleTrainer(config, n, real, g, d, gens, amps, geometry.sizes[:n], amp, rec_input)
        start = 0
        checkpoint = run.read_checkpoint(n)
        if checkpoint is not None:
            start, state = checkpoint
            trainer.load_state(state)
            log.info("scale %d: resuming from the checkpoint at iteration %d", n, start)
        info = {
            "scale": n,
            "num_scales": geometry.num_scales,
            "size": size,
            "channels": config.channels(n),
            "noise_amp": amp,
            "iters": iters,
            "start": start,
            "xla": trainer.jit,
        }
        for cb in callbacks:
            cb.on_scale_begin(n, info)
        ts = time.perf_counter()

        def report(it, metrics, n=n):
            for cb in callbacks:
                cb.on_iterations(n, it, metrics)

        def checkpoint_now(it, n=n, trainer=trainer):
            run.write_checkpoint(n, it, trainer.state())

        last = trainer.run(start, iters, report, checkpoint_now)
        g.trainable = False
        rec = g(rec_input, training=False)
        stats = {
            "seconds": round(time.perf_counter() - ts, 3),
            "iters": iters,
            "rec_rmse": float(tf.sqrt(reconstruction_loss(rec, real))),
            "final": last,
        }
        run.write_scale(n, g, d, amp, stats)
        run.clear_checkpoint(n)
        gens.append(g)
        critics.append(d)
        amps.append(amp)
        preview = Pyramid(config, geometry, list(gens), list(amps), rec_noise, traced=False)
        info.update(stats)
        for cb in callbacks:
            cb.on_scale_end(n, info, preview)
    pyramid = Pyramid(config, geometry, gens, amps, rec_noise)
    return TrainResult(run, pyramid, time.perf_counter() - t0)
