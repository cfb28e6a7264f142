"""Training, coarse to fine (docs/design.md §4).

``TrainStep`` holds G_n and D_n of one width and precision, their
optimizers and ONE traced iteration; ``ScaleTrainer`` runs it on one
scale's images against the frozen coarser pyramid; ``train_pyramid`` runs
every scale, chooses each scale's runtime (``singan_tf.runtime``) and
writes the run directory.

Why a hand-written loop and not ``Model.fit``: one SinGAN iteration is
3 critic steps and 3 generator steps with a shared random-path ``prev``,
two optimizers, a reconstruction pass and a per-scale lr milestone; fusing
all of it into ONE traced function is what makes it fast, and ``fit``
would split it into per-batch steps with their own host round-trips.
Progress and TensorBoard come through the small callback protocol below;
resume through mid-scale checkpoints in the run directory.

Why the traced iteration takes the scale's images as arguments: tracing
and optimising the iteration's graph (thousands of ops: three gradient
penalties with their double backward, six optimizer updates) cost 7-11 s
per scale when every scale traced its own. With shape-relaxed arguments
all scales of a width share one trace, and the frozen coarser pyramid
runs as one small traced function per generator, so a new scale traces
only its newest frozen generator. The step of a new width is traced in a
second thread while the scale before it trains, and with XLA the next
scale's program is compiled there too (``_Session.prepare_ahead``).

Deliberate differences from the reference code (docs/design.md §4.7):

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
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf

from singan_tf import runtime
from singan_tf.config import TrainConfig
from singan_tf.errors import InputError, NonFiniteLossError
from singan_tf.losses import gradient_penalty, noise_amplitude, reconstruction_loss
from singan_tf.models import (
    PatchCritic,
    ScaleGenerator,
    build_critic,
    build_generator,
    drop_block_bias_slots,
    fold_block_biases,
)
from singan_tf.preflight import check_training_target, resumed_config
from singan_tf.pyramid import (
    PyramidGeometry,
    build_pyramid,
    geometry_for,
    noise_sizes,
    upsample,
    working_image,
)
from singan_tf.rundir import RunDir, load_nets
from singan_tf.runtime import Choice, Decision, Timing, Tuner, TuningCache
from singan_tf.sampling import Pyramid
from singan_tf.seeds import (
    COARSER_NOISE,
    CRITIC_FAKE,
    CRITIC_GP_MIX,
    CRITIC_STEP,
    GENERATOR_STEP,
    rec_noise_rng,
    scale_seed,
    substream,
)

log = logging.getLogger(__name__)


class _OneTracePerGenerator(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning for the frozen generators.

    Each frozen generator is its own traced function, traced once; TensorFlow counts traces
    by the Python code they came from, so a resumed run (which traces every finished scale's
    at once) saw a warning about "excessive retracing" that describes nothing wrong.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "RandomPath" in message)


tf.get_logger().addFilter(_OneTracePerGenerator())


class TrainingCallback(Protocol):
    """Hooks that observe training (progress bars, TensorBoard)."""

    def on_scale_begin(self, scale: int, info: dict) -> None: ...
    def on_iterations(self, scale: int, iteration: int, metrics: dict[str, float] | None) -> None: ...
    def on_scale_end(self, scale: int, info: dict, pyramid: Pyramid) -> None: ...


class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam with each variable's update as one fused kernel (``ResourceApplyAdam``).

    The same update (bias-corrected step size, epsilon outside the square
    root) and the same variables as ``keras.optimizers.Adam``; Keras writes
    each update as ~20 elementwise ops, which made up a sixth of the
    training step's graph and of its tracing time. Features this fast path
    does not cover (clipping, weight decay, EMA, AMSGrad, non-float32
    variables) take Keras' own path.
    """

    def _fusable(self, variables) -> bool:
        plain = not (self.amsgrad or self.use_ema or self.weight_decay)
        unclipped = self.clipnorm is None and self.clipvalue is None and self.global_clipnorm is None
        single = not getattr(self, "gradient_accumulation_steps", None)
        unscaled = getattr(self, "loss_scale_factor", None) is None
        return (
            self.built
            and plain
            and unclipped
            and single
            and unscaled
            and all(v.dtype == "float32" for v in variables)
        )

    def apply(self, grads, trainable_variables=None):
        variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        if not self._fusable(variables):
            return super().apply(grads, trainable_variables)
        step = tf.cast(self.iterations + 1, tf.float32)
        beta1, beta2 = tf.constant(self.beta_1, tf.float32), tf.constant(self.beta_2, tf.float32)
        beta1_power, beta2_power = tf.pow(beta1, step), tf.pow(beta2, step)
        lr, epsilon = tf.cast(self.learning_rate, tf.float32), tf.constant(self.epsilon, tf.float32)
        for grad, var in zip(grads, variables, strict=True):
            index = self._get_variable_index(var)
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle,
                m=self._momentums[index].handle,
                v=self._velocities[index].handle,
                beta1_power=beta1_power,
                beta2_power=beta2_power,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                epsilon=epsilon,
                grad=grad,
            )
        self.iterations.assign_add(1)


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
        self.initial = initial
        self.scale = tf.Variable(initial, trainable=False, dtype=tf.float32, name="loss_scale")
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="loss_scale_good_steps")
        self.growth_interval = growth_interval

    @property
    def variables(self) -> list[tf.Variable]:
        return [self.scale, self.good_steps]

    def reset(self) -> None:
        self.scale.assign(self.initial)
        self.good_steps.assign(0)

    def minimize(self, tape: tf.GradientTape, loss: tf.Tensor, groups) -> None:
        """One step of each ``(variables, optimizer)`` of ``groups`` on ``loss``, or none."""
        variables = [v for vs, _ in groups for v in vs]
        grads = tape.gradient(loss, variables, output_gradients=self.scale)
        grads = [g / self.scale for g in grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

        def step():
            _apply_groups(groups, grads)
            grow = self.good_steps + 1 >= self.growth_interval
            self.scale.assign(tf.where(grow, self.scale * 2.0, self.scale))
            self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), self.good_steps + 1))
            return tf.constant(True)

        def skip():
            self.scale.assign(tf.maximum(self.scale / 2.0, 1.0))
            self.good_steps.assign(0)
            return tf.constant(False)

        tf.cond(finite, step, skip)


def _apply_groups(groups, grads) -> None:
    """``grads`` (of every group's variables, in order) applied by each group's optimizer."""
    start = 0
    for variables, optimizer in groups:
        optimizer.apply(grads[start : start + len(variables)], variables)
        start += len(variables)


def _scale_noise(height, width, coarsest: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """z_n, [1, h, w, 3] standard normal; at the coarsest scale one channel repeated.

    One draw of h*w*3 values serves both cases (stateless Philox output is a
    prefix-stable sequence: the first h*w values are the 1-channel draw).
    """
    flat = tf.random.stateless_normal(tf.stack([height * width * 3]), seed, alg="philox")
    one = tf.reshape(flat[: height * width], tf.stack([1, height, width, 1]))
    three = tf.reshape(flat, tf.stack([1, height, width, 3]))
    return tf.where(coarsest, tf.broadcast_to(one, tf.shape(three)), three)


@dataclasses.dataclass(frozen=True)
class ScaleData:
    """What the traced iteration needs of one scale, as tensors."""

    real: tf.Tensor  # x_n, [1, h, w, 3]
    rec_x: tf.Tensor  # the reconstruction pass's input ...
    rec_prev: tf.Tensor  # ... and its prev
    noise_amp: tf.Tensor  # amp_n, a float32 scalar
    coarsest: tf.Tensor  # bool scalar: scale 0 (one-channel noise, no coarser pyramid)

    @classmethod
    def of(cls, scale: int, real, rec_input, noise_amp: float) -> ScaleData:
        return cls(
            tf.constant(real, tf.float32),
            tf.constant(rec_input[0], tf.float32),
            tf.constant(rec_input[1], tf.float32),
            tf.constant(noise_amp, tf.float32),
            tf.constant(scale == 0),
        )

    def args(self) -> tuple[tf.Tensor, ...]:
        return self.real, self.rec_x, self.rec_prev, self.noise_amp, self.coarsest


@dataclasses.dataclass(frozen=True)
class CoarserData:
    """What a step that trains G_{n-1} along with G_n (``TrainConfig.concurrent``) needs of
    scale n-1: G_{n-1}'s reconstruction input, its noise amplitude and whether it is scale 0.
    Its size is the reconstruction input's."""

    rec_x: tf.Tensor
    rec_prev: tf.Tensor
    noise_amp: tf.Tensor
    coarsest: tf.Tensor

    @classmethod
    def of(cls, scale: int, rec_input, noise_amp: float) -> CoarserData:
        """Scale ``scale`` (= n-1)'s."""
        return cls(
            tf.constant(rec_input[0], tf.float32),
            tf.constant(rec_input[1], tf.float32),
            tf.constant(noise_amp, tf.float32),
            tf.constant(scale == 0),
        )

    def args(self) -> tuple[tf.Tensor, ...]:
        return self.rec_x, self.rec_prev, self.noise_amp, self.coarsest


class TrainStep:
    """G and D of one width and precision, their optimizers, and one traced iteration.

    The iteration's arguments (the scale's images, noise amplitude and the
    coarser pyramid's output) have shape-relaxed signatures, so every scale
    of this width reuses the one trace. Between scales the nets get the
    scale's initial weights (``set_weights``) and the optimizers start over
    (``reset``); the learning rates are variables the host sets
    (``set_learning_rates``), so the lr milestone needs no retrace either.

    Args:
        config: hyperparameters (step counts, GP, alpha, optimizer settings).
        channels: width of both nets.
        precision: ``float32``, ``mixed_bfloat16`` or ``mixed_float16``.
        xla: compile the iteration with XLA (once per scale shape).
        coarser_channels: the width of G_{n-1} when the step trains it along with G_n
            (``TrainConfig.concurrent``); None: the coarser pyramid is frozen.

    With a coarser generator, the iteration's ``prev`` is the frozen pyramid's output one
    scale further down (G_0..G_{n-2}), and it takes the coarser scale's ``CoarserData``:
    G_{n-1} runs inside the step, on noise of the stream the frozen path would have drawn
    for it, and the generator steps' adversarial and reconstruction losses reach its
    weights (its own Adam, at ``concurrent_lr`` times G_n's rate).
    """

    def __init__(
        self,
        config: TrainConfig,
        channels: int,
        precision: str,
        xla: bool = False,
        coarser_channels: int | None = None,
    ):
        self.config = config
        self.channels = channels
        self.precision = precision
        self.xla = xla
        policy = runtime.dtype_policy(precision)
        self.generator = build_generator(channels, config.num_layers, config.kernel_size, dtype=policy)
        self.critic = build_critic(channels, config.num_layers, config.kernel_size, dtype=policy)
        self.g_opt = FusedAdam(config.lr_g, beta_1=config.beta_1, beta_2=config.beta_2)
        self.d_opt = FusedAdam(config.lr_d, beta_1=config.beta_1, beta_2=config.beta_2)
        self.g_opt.build(self.generator.trainable_variables)
        self.d_opt.build(self.critic.trainable_variables)
        self.coarser: ScaleGenerator | None = None  # G_{n-1}, trained along
        self.groups = [(self.generator.trainable_variables, self.g_opt)]  # what generator steps train
        if coarser_channels is not None:
            layers = (config.num_layers, config.kernel_size)
            self.coarser = build_generator(coarser_channels, *layers, dtype=policy)
            c_lr = config.lr_g * config.concurrent_lr
            self.c_opt = FusedAdam(c_lr, beta_1=config.beta_1, beta_2=config.beta_2)
            self.c_opt.build(self.coarser.trainable_variables)
            self.groups.append((self.coarser.trainable_variables, self.c_opt))
        # (critic, generator)
        self.loss_scales = (LossScale(), LossScale()) if precision == "mixed_float16" else None
        image = tf.TensorSpec([1, None, None, 3], tf.float32)
        amp, coarsest, seed = (
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.bool),
            tf.TensorSpec([2], tf.int32),
        )
        self._signature = [image, image, image, amp, coarsest, image, seed]  # the iteration's
        co_signature = [image, image, amp, coarsest] if self.coarser is not None else []
        self._signature += co_signature
        self._iteration = self._traced_iteration()
        # The 3 critic (generator) steps of an iteration: one traced function each, called 3
        # times, so there is a third of the graph to trace (so are the critic steps' 3 fakes).
        # Not inlined: the steps of each kind run one after the other anyway (each needs the
        # previous one's update). XLA compiles the whole iteration as one program instead.
        self._critic_steps = {gp: functools.partial(self._critic_step, with_gp=gp) for gp in (False, True)}
        self._generator_steps = self._generator_step
        self._critic_fakes = self._fake  # the critic steps' fakes: G's forward, outside any tape
        if not xla:
            options = {"autograph": False, "experimental_attributes": {"_noinline": True}}
            self._critic_fakes = tf.function(
                self._fake, input_signature=[image, image, amp, coarsest, seed], **options
            )
            self._critic_steps = {
                gp: tf.function(fn, input_signature=[image, image, seed], **options)
                for gp, fn in self._critic_steps.items()
            }
            co_inputs = [image] * 4 if self.coarser is not None else []  # G_{n-1}'s two inputs
            self._generator_steps = tf.function(
                self._generator_step,
                input_signature=[image, image, image, image, amp, coarsest, seed, *co_inputs],
                **options,
            )

    def _traced_iteration(self):
        # No data-dependent Python control flow inside: autograph only slows tracing.
        return tf.function(
            self._iteration_impl, input_signature=self._signature, jit_compile=self.xla, autograph=False
        )

    @property
    def choice(self) -> Choice:
        return Choice(self.precision, self.xla)

    @property
    def _optimizers(self) -> dict[str, FusedAdam]:
        opts = {"g_opt": self.g_opt, "d_opt": self.d_opt}
        return opts if self.coarser is None else {**opts, "c_opt": self.c_opt}

    # -- state between scales ----------------------------------------------
    def set_weights(
        self, generator: list[np.ndarray], critic: list[np.ndarray], coarser: list[np.ndarray] | None = None
    ) -> None:
        """The nets' weights; ``coarser``: G_{n-1}'s, where the step trains it."""
        self.generator.set_weights(generator)
        self.critic.set_weights(critic)
        if self.coarser is not None:
            if coarser is None:
                raise ValueError("a step that trains G_{n-1} needs its weights")
            self.coarser.set_weights(coarser)

    def reset(self) -> None:
        """Fresh optimizer state (a new scale starts its own Adam), rates at their base."""
        for opt in self._optimizers.values():
            for var in opt.variables:
                var.assign(tf.zeros_like(var))
        for ls in self.loss_scales or ():
            ls.reset()
        self.set_learning_rates(1.0)

    def set_learning_rates(self, factor: float) -> None:
        self.g_opt.learning_rate.assign(self.config.lr_g * factor)
        self.d_opt.learning_rate.assign(self.config.lr_d * factor)
        if self.coarser is not None:
            self.c_opt.learning_rate.assign(self.config.lr_g * self.config.concurrent_lr * factor)

    def state(self) -> dict[str, list[np.ndarray]]:
        """Everything a resumed scale needs: weights (with BN statistics) and Adam slots."""
        state = {
            "generator": self.generator.get_weights(),
            "critic": self.critic.get_weights(),
            **{name: [v.numpy() for v in opt.variables] for name, opt in self._optimizers.items()},
            "loss_scale": [v.numpy() for ls in self.loss_scales or () for v in ls.variables],
        }
        if self.coarser is not None:
            state["coarser"] = self.coarser.get_weights()
        return state

    def load_state(self, state: dict[str, list[np.ndarray]]) -> None:
        # A checkpoint written when the block convs had a bias: folded (models.fold_block_biases).
        layers = self.config.num_layers
        nets = [state["generator"], state["critic"], state.get("coarser")]
        self.set_weights(*(None if w is None else fold_block_biases(w, layers) for w in nets))
        for opt, values in ((opt, state[name]) for name, opt in self._optimizers.items()):
            values = drop_block_bias_slots(values, layers)
            variables = list(opt.variables)
            if len(values) == len(variables) - 1:  # written before the rate became a variable
                variables.remove(opt.learning_rate)
            for var, value in zip(variables, values, strict=True):
                var.assign(value)
        scale_vars = [v for ls in self.loss_scales or () for v in ls.variables]
        for var, value in zip(scale_vars, state.get("loss_scale", []), strict=False):
            var.assign(value)

    # -- one iteration, traced once per width ----------------------------------
    def iteration(
        self, data: ScaleData, prev: tf.Tensor, seed: tf.Tensor, coarser: CoarserData | None = None
    ) -> dict[str, tf.Tensor]:
        """One iteration on ``data``; ``prev`` is the frozen coarser pyramid's random output (any
        size); ``coarser``: scale n-1's data where the step trains G_{n-1}."""
        if (coarser is None) != (self.coarser is None):
            raise ValueError("CoarserData goes with a step that trains G_{n-1}, and only with one")
        args = (*data.args(), prev, seed, *(coarser.args() if coarser is not None else ()))
        try:
            return self._iteration(*args)
        except tf.errors.OpError as err:
            # A kept XLA program that cannot be read (or a new one written) fails the step before
            # it runs, and TensorFlow keeps that failure for the traced function: with the cache
            # emptied, a new trace compiles afresh.
            out_of_memory = isinstance(err, tf.errors.ResourceExhaustedError)
            if not self.xla or out_of_memory or not runtime.clear_xla_cache(err):
                raise
            self._iteration = self._traced_iteration()
            return self._iteration(*args)

    def graph(self) -> tf.Graph:
        return self._iteration.get_concrete_function().graph

    def _fake(self, real, prev, noise_amp, coarsest, seed):
        shape = tf.shape(real)
        z = _scale_noise(shape[1], shape[2], coarsest, seed)
        return self.generator((noise_amp * z + prev, prev), training=True)

    def _critic_step(self, real, fake, seed, with_gp: bool) -> dict[str, tf.Tensor]:
        critic = self.critic
        with tf.GradientTape() as tape:
            d_real = tf.reduce_mean(critic(real, training=True))
            d_fake = tf.reduce_mean(critic(fake, training=True))
            d_loss = d_fake - d_real
            if with_gp:
                mix = tf.random.stateless_uniform((), substream(seed, CRITIC_GP_MIX), alg="philox")
                gp = gradient_penalty(lambda x: critic(x, training=True), real, fake, mix)
                d_loss += self.config.gp_step_weight * gp
        self._minimize(tape, d_loss, [(critic.trainable_variables, self.d_opt)], 0)
        # d_loss itself is logged once per iteration (_iteration_impl), in one form for any gp_every.
        metrics = {"d_real": d_real, "d_fake": d_fake}
        if with_gp:
            metrics["gp"] = gp
        return metrics

    def _generator_step(self, real, rec_x, rec_prev, prev, noise_amp, coarsest, seed, *co) -> dict:
        gen = self.generator
        with tf.GradientTape() as tape:
            if co:  # G_{n-1} in the tape: prev and the reconstruction's input come out of it
                co_x, co_prev, co_rec_x, co_rec_prev = co
                size = tf.shape(real)[1:3]
                prev = upsample(self.coarser((co_x, co_prev), training=True), size)
                rec_x = rec_prev = upsample(self.coarser((co_rec_x, co_rec_prev), training=True), size)
            fake = self._fake(real, prev, noise_amp, coarsest, seed)
            adv = -tf.reduce_mean(self.critic(fake, training=True))
            rec = reconstruction_loss(gen((rec_x, rec_prev), training=True), real)
            g_loss = adv + self.config.alpha * rec
        self._minimize(tape, g_loss, self.groups, 1)
        return {"g_loss": g_loss, "adv_loss": adv, "rec_loss": rec}

    def _minimize(self, tape: tf.GradientTape, loss: tf.Tensor, groups, which: int) -> None:
        """A step of each ``(variables, optimizer)`` of ``groups`` on ``loss``."""
        if self.loss_scales is None:
            _apply_groups(groups, tape.gradient(loss, [v for vs, _ in groups for v in vs]))
        else:
            self.loss_scales[which].minimize(tape, loss, groups)

    def _iteration_impl(self, real, rec_x, rec_prev, noise_amp, coarsest, prev, seed, *co) -> dict:
        """3 critic steps, then 3 generator steps (paper Alg. 1; docs/design.md §4.3)."""
        co_inputs: tuple[tf.Tensor, ...] = ()
        if co:  # prev is out_{n-2}: G_{n-1} makes out_{n-1}, here for the critic steps' fakes
            co_rec_x, co_rec_prev, co_amp, co_coarsest = co
            co_size = tf.shape(co_rec_prev)[1:3]
            z = _scale_noise(co_size[0], co_size[1], co_coarsest, substream(seed, COARSER_NOISE))
            up = upsample(prev, co_size)
            co_inputs = (co_amp * z + up, up, co_rec_x, co_rec_prev)
            prev = self.coarser(co_inputs[:2], training=True)
        prev = upsample(prev, tf.shape(real)[1:3])
        metrics: dict[str, tf.Tensor] = {}
        config = self.config
        # The critic steps' fakes first: G does not change during them, and they run beside the steps.
        seeds = [substream(seed, CRITIC_STEP + 2 * k) for k in range(config.critic_steps)]
        fakes = [
            self._critic_fakes(real, prev, noise_amp, coarsest, substream(s, CRITIC_FAKE)) for s in seeds
        ]
        for k, (fake, step_seed) in enumerate(zip(fakes, seeds, strict=True)):
            metrics.update(self._critic_steps[k in config.gp_steps](real, fake, step_seed))
        # The paper's critic loss from the last step's scores and the last GP.
        metrics["d_loss"] = metrics["d_fake"] - metrics["d_real"] + config.gp_weight * metrics["gp"]
        for k in range(config.generator_steps):
            step_seed = substream(seed, GENERATOR_STEP + k)
            metrics.update(
                self._generator_steps(real, rec_x, rec_prev, prev, noise_amp, coarsest, step_seed, *co_inputs)
            )
        metrics["rec_rmse"] = tf.sqrt(metrics["rec_loss"])
        return metrics


class ScaleTrainer:
    """Adversarial + reconstruction training of scale n against the frozen pyramid below it.

    The one way a trainer is built: by training, fine-tuning and the tuner's timings.

    Args:
        step: the traced iteration and nets of the scale's width (``StepCache.get``), holding
            the scale's initial weights. Its config gives the schedule and the run's seed.
        coarser: the frozen scales G_0..G_{n-1}, a ``Pyramid`` of n scales; n is the scale
            trained (0: the coarsest, against no coarser pyramid).
        real: x_n, [1, h, w, 3].
        rec_input: the reconstruction pass's ``(x, prev)``: ``(z*, 0)`` at scale 0,
            ``(up(rec_{n-1}), up(rec_{n-1}))`` above.
        noise_amp: amp_n.
        scale_h: width of ``real`` relative to the pyramid's sizes (fine-tuning on an image of
            another aspect); the coarser scales' noise takes that width too.
        coarser_rec_input: scale n-1's reconstruction input, where ``step`` trains G_{n-1}
            along with G_n (its weights set by the caller); the random path then runs
            G_0..G_{n-2} and the step G_{n-1}.

    Iteration i draws its noise from the stateless seed pair
    ``(seeds.scale_seed(config.seed, n), i)``, so a resumed run draws the same noise.
    """

    def __init__(
        self,
        step: TrainStep,
        coarser: Pyramid,
        real: np.ndarray | tf.Tensor,
        rec_input: tuple[np.ndarray | tf.Tensor, np.ndarray | tf.Tensor],
        noise_amp: float,
        scale_h: float = 1.0,
        coarser_rec_input: tuple[np.ndarray | tf.Tensor, np.ndarray | tf.Tensor] | None = None,
    ):
        self.step = step
        self.config = step.config
        self.scale = n = coarser.num_scales
        self.data = ScaleData.of(self.scale, real, rec_input, noise_amp)
        self.coarser_data = None
        frozen = n  # scales the random path runs
        if step.coarser is not None:
            if coarser_rec_input is None or n == 0:
                raise ValueError("a step that trains G_{n-1} needs scale n-1's reconstruction input")
            self.coarser_data = CoarserData.of(n - 1, coarser_rec_input, coarser.noise_amps[n - 1])
            frozen = n - 1
        self.random_path = coarser.random_path(noise_sizes(coarser.sizes[:frozen], scale_h))
        self._zeros = tf.zeros_like(self.data.real if self.coarser_data is None else self.coarser_data.rec_x)

    @property
    def generator(self) -> ScaleGenerator:
        return self.step.generator

    @property
    def critic(self) -> PatchCritic:
        return self.step.critic

    def iteration_seed(self, iteration: int) -> tf.Tensor:
        return tf.constant([scale_seed(self.config.seed, self.scale), iteration], tf.int32)

    def iterate(self, iteration: int) -> dict[str, tf.Tensor]:
        seed = self.iteration_seed(iteration)
        prev = self.random_path(seed)
        return self.step.iteration(self.data, self._zeros if prev is None else prev, seed, self.coarser_data)

    def state(self) -> dict[str, list[np.ndarray]]:
        return self.step.state()

    def load_state(self, state: dict[str, list[np.ndarray]]) -> None:
        self.step.load_state(state)

    def run(self, start: int, stop: int, on_metrics=None, on_checkpoint=None) -> dict[str, float]:
        """Run iterations [start, stop).

        Losses are read back (a host sync) every ``log_every`` iterations and
        before every checkpoint; a non-finite loss raises before the
        checkpoint is written, so the last checkpoint is always a good one.
        """
        config, last = self.config, {}
        milestone = config.lr_milestone_iter(self.scale)
        for it in range(start, stop):
            if it in (start, milestone):
                self.step.set_learning_rates(config.learning_rate(1.0, it, self.scale))
            out = self.iterate(it)
            done = it + 1
            log_now = done % config.log_every == 0 or done == stop
            checkpoint_now = on_checkpoint is not None and done % config.checkpoint_every == 0
            if log_now or checkpoint_now:
                last = {k: float(v) for k, v in out.items()}
                if not all(math.isfinite(v) for v in last.values()):
                    raise NonFiniteLossError(self.scale, it, last)
            if checkpoint_now and done < stop:
                on_checkpoint(done)
            if on_metrics:
                on_metrics(done, last if log_now else None)
        return last

    def time(
        self, timed: int, warmup: int = runtime.WARMUP_ITERS, min_s: float = runtime.MIN_TIMED_S
    ) -> Timing:
        """Seconds of ``warmup`` iterations (the first traces), then ms per iteration of ``timed``
        iterations, or of as many as take ``min_s`` seconds where that is more (at most
        ``runtime.MAX_TIMED_ITERS``)."""
        t0 = time.perf_counter()
        for it in range(warmup):
            float(self.iterate(it)["g_loss"])
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        done = 0
        while done < timed or (time.perf_counter() - t0 < min_s and done < runtime.MAX_TIMED_ITERS):
            out = self.iterate(warmup + done)
            float(out["g_loss"])  # each iteration ends before the clock is read
            done += 1
        return Timing((time.perf_counter() - t0) * 1e3 / done, first, done)


def time_new_trainer(
    make: Callable[[], ScaleTrainer], timed: int, min_s: float = runtime.MIN_TIMED_S
) -> Timing:
    """``make()``'s ``time(timed, min_s=min_s)``, its first call counting the trainer's making
    (nets and optimizers are built on a step's first use): what a scale's first iteration costs."""
    t0 = time.perf_counter()
    trainer = make()
    built = time.perf_counter() - t0
    timing = trainer.time(timed, min_s=min_s)
    return dataclasses.replace(timing, first_call_s=timing.first_call_s + built)


@dataclasses.dataclass
class TrainResult:
    run_dir: RunDir
    pyramid: Pyramid
    seconds: float


def draw_rec_noise(config: TrainConfig, size: tuple[int, int]) -> np.ndarray:
    """z*, drawn once: [1, h_0, w_0, 1] standard normal from the run's seed."""
    return rec_noise_rng(config.seed).standard_normal((1, *size, 1), dtype=np.float32)


def init_scale_nets(config: TrainConfig, scale: int, gens: list, critics: list):
    """Fresh G_n, D_n, or copies of G_{n-1}, D_{n-1} when the width is unchanged.

    Fresh nets are drawn from the seed (config.seed, scale), so a resumed run
    initialises scale n as a fresh one would, whatever precision it runs in.
    """
    keras.utils.set_random_seed(scale_seed(config.seed, scale))
    ch = config.channels(scale)
    g = build_generator(ch, config.num_layers, config.kernel_size)
    d = build_critic(ch, config.num_layers, config.kernel_size)
    if scale > 0 and config.channels(scale - 1) == ch:
        g.set_weights(gens[scale - 1].get_weights())
        d.set_weights(critics[scale - 1].get_weights())
    return g, d


class StepCache:
    """The ``TrainStep`` of each (width, choice, coarser width) a run has used, created on first
    use, and a spare of it where the next scale's XLA program is compiled ahead. The coarser
    width is G_{n-1}'s where the step trains it too (``TrainConfig.concurrent``), else None."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self._steps: dict[tuple[int, Choice, int | None], TrainStep] = {}
        self._spares: dict[tuple[int, Choice, int | None], TrainStep] = {}

    def _new(self, key: tuple[int, Choice, int | None]) -> TrainStep:
        channels, choice, coarser = key
        return TrainStep(self.config, channels, choice.precision, choice.xla, coarser)

    def get(self, channels: int, choice: Choice, coarser: int | None = None) -> TrainStep:
        key = (channels, choice, coarser)
        if key not in self._steps:
            self._steps[key] = self._new(key)
        return self._steps[key]

    def spare(self, channels: int, choice: Choice, coarser: int | None = None) -> TrainStep:
        """A second step of (width, choice, coarser width), idle while ``get``'s trains a scale."""
        key = (channels, choice, coarser)
        if key not in self._spares:
            self._spares[key] = self._new(key)
        return self._spares[key]

    def promote(self, channels: int, choice: Choice, coarser: int | None = None) -> None:
        """The spare becomes the step ``get`` returns, and the step it returned the spare."""
        key = (channels, choice, coarser)
        self._steps[key], self._spares[key] = self.spare(*key), self.get(*key)


def compile_scale(step: TrainStep, sizes: Sequence[tuple[int, int]], scale: int) -> None:
    """Run one iteration of ``step`` on zero images of scale n's shapes (``sizes[n]``, and the
    frozen pyramid's output below it), so XLA compiles the scale's program before the scale
    starts. The step's nets and optimizers are left changed: the scale sets them."""
    zeros = tf.zeros((1, *sizes[scale], 3))
    data = ScaleData(zeros, zeros, zeros, tf.constant(0.1), tf.constant(False))
    coarser, below = None, scale - 1
    if step.coarser is not None:
        co_zeros = tf.zeros((1, *sizes[scale - 1], 3))
        coarser = CoarserData(co_zeros, co_zeros, tf.constant(0.1), tf.constant(scale == 1))
        below = scale - 2
    prev = tf.zeros((1, *sizes[max(below, 0)], 3))
    out = step.iteration(data, prev, tf.constant([0, 0], tf.int32), coarser)
    float(out["g_loss"])


def _check_same_image(run: RunDir, geometry: PyramidGeometry, image: np.ndarray) -> None:
    same = tuple(image.shape[:2]) == geometry.input_size and np.allclose(
        working_image(image, geometry), run.read_image(), atol=1e-3
    )
    if not same:
        raise InputError(f"the image given is not the one {run.path} was trained on")


DEFAULT_CACHE = object()  # train_pyramid's cache argument: the user's tuning cache


def train_pyramid(
    config: TrainConfig,
    image: np.ndarray | None,
    out: str | RunDir,
    callbacks: Sequence[TrainingCallback] = (),
    resume: bool = False,
    cache: TuningCache | None | object = DEFAULT_CACHE,
    tuning_budget: float = runtime.DEFAULT_BUDGET,
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
            last checkpoint, in the precision it started with.
        cache: the tuning cache for ``--precision auto`` / ``--jit auto``
            (default: the user's, ``runtime.cache_dir()``; None: measure
            without caching).
        tuning_budget: share of the estimated training time that measuring
            runtime choices may take.

    Returns:
        The run directory and the trained, frozen pyramid.
    """
    t0 = time.perf_counter()
    run = out if isinstance(out, RunDir) else RunDir(out)
    manifest = check_training_target(run.path, resume, complete_ok=True)
    if manifest is not None:
        stored = run.read_config()
        given = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        config = resumed_config(stored, given)
        geometry = PyramidGeometry.from_dict(manifest["geometry"])
        if image is not None:
            _check_same_image(run, geometry, image)
        working, rec_noise = run.read_image(), run.read_rec_noise()
        done = len(manifest["scales"])
    else:
        if image is None:
            raise InputError(f"{run.path}: no run to resume and no image given")
        geometry = geometry_for(config, image.shape[:2])
        working = working_image(image, geometry)
        rec_noise = draw_rec_noise(config, geometry.sizes[0])
        run.initialise(config, geometry, working, rec_noise)
        done = 0
    if config.deterministic:
        runtime.enable_determinism()
    reals = build_pyramid(working, geometry)
    gens: list[ScaleGenerator] = load_nets(run, config, done)
    critics: list[PatchCritic] = load_nets(run, config, done, critics=True)
    amps = [float(s["noise_amp"]) for s in run.read_manifest()["scales"]]
    plan = runtime.active_thread_plan()
    if cache is DEFAULT_CACHE:
        cache = TuningCache() if "auto" in (config.precision, config.jit_compile) else None
    tuner = Tuner(config, geometry.sizes, plan, cache, tuning_budget)
    session = _Session(
        config, run, Pyramid(config, geometry, gens, amps, rec_noise), critics, tuner, callbacks
    )
    with runtime.training_graph_options():
        rec = None
        try:
            for n, real in enumerate(reals):
                rec = session.replay(n, rec) if n < done else session.train(n, real, rec)
        finally:
            # Interrupted or failed: a second thread may still be preparing the next scale inside
            # TensorFlow; left running at exit, it aborts the process as the interpreter shuts down.
            session.join_ahead(stopping=True)
    return TrainResult(run, session.frozen, time.perf_counter() - t0)


def _load_checkpoint(trainer: ScaleTrainer, checkpoint: tuple[int, dict] | None) -> int:
    """The iteration to go on from: the checkpoint's, its state loaded into ``trainer``, or 0."""
    if checkpoint is None:
        return 0
    start, state = checkpoint
    trainer.load_state(state)
    return start


@dataclasses.dataclass
class _Session:
    """train_pyramid's state across scales: the frozen pyramid so far and the traced steps."""

    config: TrainConfig
    run: RunDir
    frozen: Pyramid  # the scales finished so far; grows by one per trained scale
    critics: list[PatchCritic]  # their critics (a scale of unchanged width starts from the last)
    tuner: Tuner
    callbacks: Sequence[TrainingCallback]

    def __post_init__(self) -> None:
        self.geometry = self.frozen.geometry
        self.steps = StepCache(self.config)
        self.rec_inputs: dict[int, tuple[tf.Tensor, tf.Tensor]] = {}
        self._ahead: threading.Thread | None = None
        self._compiled_ahead: tuple[int, Choice, bool] | None = None  # (scale, choice, on a spare step)

    def prepare_ahead(self, n: int, choice: Choice) -> None:
        """While scale n trains (in ``choice``), prepare scale n+1's first iteration in a second
        thread, which overlaps the iterations (they run in TensorFlow's executor, without the
        GIL):

        * XLA planned at n+1 (``Tuner.planned``): compile its program (27-41 s per scale on an
          AMD EPYC Zen 3) by running the step once on zeros of its shapes (``compile_scale``);
          on the spare of this scale's step when n+1 runs the same one. Not where the two
          scales' iterations side by side may not fit in memory (``runtime.fits_beside``).
        * else a new width at n+1: trace the steps it may use (~1.5 s of mostly Python).

        Steps are built here, on the calling thread: building draws initial weights, and only
        this thread may touch the random state (``init_scale_nets`` seeds it). Preparing only
        saves time: if it fails, the next scale traces and compiles when it starts.
        """
        try:
            self._prepare_ahead(n, choice)
        except Exception as err:
            self._not_prepared(n + 1, err)

    def _not_prepared(self, scale: int, err: Exception) -> None:
        log.warning("scale %d: not prepared ahead (%s)", scale, err)
        self._compiled_ahead = None

    def _prepare_ahead(self, n: int, choice: Choice) -> None:
        nxt = n + 1
        if nxt >= self.geometry.num_scales:
            return
        config = self.config
        ch, co = config.channels(nxt), config.coarser_channels(nxt)
        width = self.tuner.step_width(nxt)
        same_step = width == self.tuner.step_width(n)
        planned = self.tuner.planned(nxt) if runtime.compile_ahead() else None
        if planned is not None and planned.xla and runtime.fits_beside(config, self.geometry, n):
            spare = same_step and planned == choice
            step = self.steps.spare(ch, planned, co) if spare else self.steps.get(ch, planned, co)
            self.tuner.traced.add((width, planned))
            self._compiled_ahead = (nxt, planned, spare)
            work = functools.partial(compile_scale, step, self.geometry.sizes, nxt)
        elif not same_step:
            choices = self.tuner.candidates(nxt)
            steps = [self.steps.get(ch, c, co) for c in choices]
            self.tuner.traced.update((width, c) for c in choices)

            def work() -> None:
                for step in steps:
                    step.graph()
        else:
            return

        def prepare() -> None:
            try:
                work()
            except Exception as err:  # the scale then traces or compiles on its own
                self._not_prepared(nxt, err)

        self._ahead = threading.Thread(target=prepare, name=f"prepare-scale-{nxt}", daemon=True)
        self._ahead.start()

    def join_ahead(self, n: int | None = None, stopping: bool = False) -> None:
        """Wait for the second thread preparing scale n (the log says so if it is still at work:
        an XLA compile may outlast the scale before), or, ``stopping``, for the one preparing
        whichever scale it is at."""
        if self._ahead is not None:
            if self._ahead.is_alive() and (n is not None or stopping):
                if stopping:
                    log.info("stopping once the next scale's step, prepared in a second thread, is ready")
                else:
                    log.info("scale %d: waiting for its step, prepared in a second thread", n)
            self._ahead.join()
            self._ahead = None

    def take_compiled(self, n: int, choice: Choice) -> bool:
        """Scale n starts in ``choice``: whether its program was compiled ahead (if on a spare
        step, that step becomes the one it trains)."""
        ahead, self._compiled_ahead = self._compiled_ahead, None
        if ahead is None or ahead[:2] != (n, choice):
            return False
        if ahead[2]:
            self.steps.promote(self.config.channels(n), choice, self.config.coarser_channels(n))
        return True

    def rec_input(self, n: int, rec: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        """The reconstruction path's (x, prev): z* at the coarsest scale, zero noise above.
        Kept per scale: a scale that trains G_{n-1} needs scale n-1's."""
        size = self.geometry.sizes[n]
        if n == 0:
            prev = tf.zeros((1, *size, 3))
            self.rec_inputs[n] = (self.frozen.rec_noise + prev, prev)
        else:
            prev = upsample(rec, size)
            self.rec_inputs[n] = (prev, prev)
        return self.rec_inputs[n]

    def replay(self, n: int, rec: tf.Tensor | None) -> tf.Tensor:
        """A scale finished earlier: only its reconstruction."""
        return self.frozen.generators[n](self.rec_input(n, rec), training=False)

    def train(self, n: int, real: tf.Tensor, rec: tf.Tensor | None) -> tf.Tensor:
        """Train scale n (from its checkpoint if there is one); returns its reconstruction."""
        t_wait = time.perf_counter()
        self.join_ahead(n)
        waited = time.perf_counter() - t_wait  # part of the first call: the scale could not start
        config, run = self.config, self.run
        size, ch, co = self.geometry.sizes[n], config.channels(n), config.coarser_channels(n)
        rec_input = self.rec_input(n, rec)
        amp = 1.0 if n == 0 else noise_amplitude(real, rec_input[1], config.noise_amp_factor)
        g0, d0 = init_scale_nets(config, n, self.frozen.generators, self.critics)
        init = (g0.get_weights(), d0.get_weights())
        # Trained along (config.concurrent): G_{n-1} from where scale n-1 left it.
        coarser_init = self.frozen.generators[n - 1].get_weights() if co is not None else None
        coarser_rec_input = self.rec_inputs[n - 1] if co is not None else None

        def trainer_for(choice: Choice) -> ScaleTrainer:
            step = self.steps.get(ch, choice, co)
            step.set_weights(*init, coarser_init)
            step.reset()
            return ScaleTrainer(step, self.frozen, real, rec_input, amp, coarser_rec_input=coarser_rec_input)

        checkpoint = run.read_checkpoint(n)
        recorded = run.read_checkpoint_runtime(n) if checkpoint is not None else None
        if recorded is not None:
            decision = Decision(Choice(recorded["precision"], bool(recorded["xla"])), "recorded")
        else:
            decision = self.tuner.decide(
                n, lambda choice, timed: time_new_trainer(lambda: trainer_for(choice), timed)
            )
        log.info("scale %d: %s", n, decision.describe())
        if co is not None:
            log.info(
                "scale %d: trains G_%d along, at %g times its learning rate", n, n - 1, config.concurrent_lr
            )
        ahead = self.take_compiled(n, decision.choice)
        t_first = time.perf_counter() - waited  # the first iteration's cost counts building the step
        trainer = trainer_for(decision.choice)
        start = _load_checkpoint(trainer, checkpoint)
        if checkpoint is not None:
            log.info("scale %d: resuming from the checkpoint at iteration %d", n, start)
        iters = config.scale_iters(n)
        info = {
            "scale": n,
            "num_scales": self.geometry.num_scales,
            "size": size,
            "channels": ch,
            "noise_amp": amp,
            "iters": iters,
            "start": start,
            "xla": decision.choice.xla,
            "precision": decision.choice.precision,
            "trains_coarser": co is not None,
        }
        for cb in self.callbacks:
            cb.on_scale_begin(n, info)
        ts = time.perf_counter()
        earlier_s = float(recorded.get("seconds", 0.0)) if recorded is not None else 0.0  # before a stop

        def spent() -> float:  # the scale's training seconds, a resumed scale's earlier session too
            return round(earlier_s + time.perf_counter() - ts + decision.tuning_s, 3)

        first_call: list[float] = []

        def report(it, metrics):
            if not first_call:
                first_call.append(time.perf_counter() - t_first)
                self.prepare_ahead(n, decision.choice)  # after this scale's first call, which it would slow
            for cb in self.callbacks:
                cb.on_iterations(n, it, metrics)

        while True:
            record = decision.to_dict(self.tuner.plan)

            def checkpoint_now(it, trainer=trainer, record=record):
                run.write_checkpoint(n, it, trainer.state(), {**record, "seconds": spent()})

            try:
                last = trainer.run(start, iters, report, checkpoint_now)
                break
            except NonFiniteLossError as err:
                if decision.choice.precision == "float32":
                    raise
                decision, trainer, start = self._fall_back(n, decision, err, trainer_for)
        policy = runtime.dtype_policy(decision.choice.precision)
        g = build_generator(ch, config.num_layers, config.kernel_size, dtype=policy)
        g.set_weights(trainer.generator.get_weights())
        g.trainable = False
        d = build_critic(ch, config.num_layers, config.kernel_size)
        d.set_weights(trainer.critic.get_weights())
        refined = None
        if co is not None:  # the frozen G_{n-1} (its traced random path too) takes what scale n left
            refined = self.frozen.generators[n - 1]
            refined.set_weights(trainer.step.coarser.get_weights())
            rec_input = (upsample(refined(coarser_rec_input, training=False), size),) * 2
            self.rec_inputs[n] = rec_input
        rec = g(rec_input, training=False)
        stats = {
            "seconds": spent(),
            "iters": iters,
            "first_call_s": round(first_call[0], 3) if first_call else None,
            "compiled_ahead": ahead,
            "rec_rmse": float(tf.sqrt(reconstruction_loss(rec, real))),
            "runtime": record,
            "final": last,
        }
        run.write_scale(n, g, d, amp, stats, refined_coarser=refined)
        run.clear_checkpoint(n)
        self.frozen.append_scale(g, amp)
        self.critics.append(d)
        preview = dataclasses.replace(self.frozen.coarser(n + 1), traced=False)
        info.update(stats)
        for cb in self.callbacks:
            cb.on_scale_end(n, info, preview)
        return rec

    def _fall_back(self, n: int, decision: Decision, err: NonFiniteLossError, trainer_for):
        """A reduced precision went non-finite: the scale goes on in float32 from its last good
        checkpoint (or its start), and so do the following scales. oneDNN's bfloat16 kernels on
        an AMX CPU produced NaNs here with two threads per op (bench/README.md); float32 is the
        paper's precision."""
        self.join_ahead()  # the step it goes on with may be the one compiling the next scale
        failed = decision.choice
        self.tuner.excluded.add(failed.precision)  # the rest of the run trains without it
        decision = Decision(
            Choice("float32", failed.xla),
            "fallback",
            note=f"non-finite loss in {failed.label} at iteration {err.iteration}",
        )
        trainer = trainer_for(decision.choice)
        start = _load_checkpoint(trainer, self.run.read_checkpoint(n))
        log.warning(
            "scale %d: non-finite loss in %s at iteration %d; going on in float32 from iteration %d",
            n,
            failed.label,
            err.iteration,
            start,
        )
        return decision, trainer, start
