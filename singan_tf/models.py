"""Per-scale networks (docs/design.md §3): ConvBlock, ScaleGenerator, PatchCritic.

Both nets are five valid 3x3 convolutions (receptive field 11x11). The
generator zero-pads its input by 5 pixels per side so its output has the
input's size, and adds its result to the upsampled previous scale (it only
adds detail). The critic is Markovian: it returns a map of patch scores.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops


def conv_init() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02)


@keras.saving.register_keras_serializable(package="singan_tf")
class FusedBatchNorm(layers.BatchNormalization):
    """Keras ``BatchNormalization`` whose training pass is TensorFlow's fused kernel.

    Same variables and the same outputs as Keras' layer, so weight files of
    either load into the other. Keras' own training pass builds BatchNorm
    out of ~10 elementwise and reduction ops (upcasting bfloat16 to float32
    first) whose first and second derivatives, which the gradient penalty
    needs, are as many ops again; ``FusedBatchNormV3`` is one oneDNN/cuDNN
    kernel forward and one backward, and it updates the moving statistics
    itself.
    Its moving variance averages the unbiased batch variance, as PyTorch's
    BatchNorm (the reference code's) does; Keras averages the biased one
    (a factor n/(n-1), n >= 625 pixels here). Inference (``training=False``)
    is Keras' path: the exported graphs do not change. Layouts the fused
    kernel does not cover (other axes or ranks, no centre/scale, renorm,
    synchronized) also take Keras' path.

    ``update_statistics = False`` leaves the moving statistics alone in
    training (the critic's: nothing ever runs a critic in inference mode),
    and its double backward, the gradient penalty's, is written out
    (``_batch_norm_train``); elsewhere it is TensorFlow's registered one.
    """

    update_statistics = True

    def call(self, inputs, training=None, mask=None):
        fusable = (
            len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.center
            and self.scale
            and not self.renorm
            and not getattr(self, "synchronized", False)
            and keras.backend.backend() == "tensorflow"
        )
        if not (training and self.trainable) or mask is not None or not fusable:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        gamma, beta = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        if not self.update_statistics:
            return tf.cast(_batch_norm_train(inputs, gamma, beta, self.epsilon), self.compute_dtype)
        y, moving_mean, moving_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=gamma,
            offset=beta,
            mean=self.moving_mean.value,
            variance=self.moving_variance.value,
            epsilon=self.epsilon,
            exponential_avg_factor=1.0 - self.momentum,
            data_format="NHWC",
            is_training=True,
        )
        self.moving_mean.assign(moving_mean)
        self.moving_variance.assign(moving_variance)
        return tf.cast(y, self.compute_dtype)


def _batch_norm_train(x, gamma, beta, epsilon: float):
    """Training-mode BatchNorm over N, H, W (NHWC) without moving statistics: the critic's,
    which the gradient penalty differentiates twice.

    Forward and backward are TensorFlow's fused kernels. The backward's own gradient is
    written out here: TensorFlow's registered one rebuilds the backward from ~20 ops and
    differentiates that with a tape at trace time, per layer (the critic step's graph went
    from 1706 nodes to 1134; a run's first call from ~2.7 s to ~2.4 s, old and new code
    alternating on an Intel Xeon with AMX, lscpu "Intel(R) Xeon(R) Processor"; bench/README.md).
    With ``<v>`` the per-channel mean, ``x^ = (x - <x>) r``, ``r = 1 / sqrt(var(x) + eps)``
    and ``P(v) = v - <v> - x^ <v x^>``, the backward is ``dx = gamma r P(dy)``,
    ``dgamma = sum(dy x^)``, ``dbeta = sum(dy)``; given the gradients ``g, g_gamma, g_beta``
    of those, with ``c = <g dy> - <g><dy> - <g x^><dy x^>`` and m the pixels per channel:

    * to dy: ``gamma r P(g) + g_gamma x^ + g_beta``
    * to gamma: ``r m c``
    * to x: ``g_gamma r P(dy) - gamma r^2 (x^ c + P(g) <dy x^> + P(dy) <g x^>)``

    In the second derivative, the seven per-channel means are GEMMs, a row of ones times the
    tensor seen as pixels x channels: TensorFlow's mean over N, H, W walks the channels with a
    stride (~4 GB/s at 218x250x128, one thread, against 22 GB/s for the GEMM), and the change
    took 5-7% off an iteration at 128 channels in bfloat16 and at 64 in float32 (old and new
    code alternating on an Intel Xeon with AMX, lscpu "Intel(R) Xeon(R) Processor";
    bench/README.md, "per-channel means as GEMMs").

    Pinned against BatchNorm in float64 with its moments differentiated exactly
    (tests/test_models.py).
    """
    import tensorflow as tf

    @tf.custom_gradient
    def backward(dy, x, gamma, reserve_1, reserve_2, reserve_3):
        dx, dgamma, dbeta, *_ = tf.raw_ops.FusedBatchNormGradV3(
            y_backprop=dy,
            x=x,
            scale=gamma,
            reserve_space_1=reserve_1,
            reserve_space_2=reserve_2,
            reserve_space_3=reserve_3,
            epsilon=epsilon,
            data_format="NHWC",
            is_training=True,
        )

        def second(g, g_gamma, g_beta):  # (the tape passes zeros for outputs nothing used)
            shape, ch = tf.shape(x), x.shape[-1] or tf.shape(x)[-1]
            # As pixels x channels, so that <v> = ones^T v / m, a GEMM (see above).
            x32, a, g = (tf.reshape(tf.cast(v, tf.float32), [-1, ch]) for v in (x, dy, g))
            column = tf.ones_like(x32[:, :1])
            m = tf.reduce_sum(column)  # (fewer traced ops than from the shape)

            def mean(v):  # [1, channels]
                return tf.matmul(column, v, transpose_a=True) / m

            mu = mean(x32)  # the batch's moments, as the forward kernel's
            r = tf.math.rsqrt(mean(tf.square(x32 - mu)) + epsilon)
            xh = (x32 - mu) * r
            a_m, g_m = mean(a), mean(g)
            a_xh, g_xh = mean(a * xh), mean(g * xh)
            c = mean(g * a) - g_m * a_m - g_xh * a_xh
            p_a, p_g = a - a_m - xh * a_xh, g - g_m - xh * g_xh
            to_dy = gamma * r * p_g + g_gamma * xh + g_beta
            to_x = g_gamma * r * p_a - gamma * r * r * (xh * c + p_g * a_xh + p_a * g_xh)
            to_dy, to_x = tf.reshape(to_dy, shape), tf.reshape(to_x, shape)
            to_gamma = tf.reshape(r * m * c, [-1])
            return tf.cast(to_dy, dy.dtype), tf.cast(to_x, x.dtype), to_gamma, None, None, None

        return (dx, dgamma, dbeta), second

    @tf.custom_gradient
    def forward(x, gamma, beta):
        y, _, _, reserve_1, reserve_2, reserve_3 = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=gamma,
            offset=beta,
            mean=tf.constant([], tf.float32),
            variance=tf.constant([], tf.float32),
            epsilon=epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=True,
        )

        def first(dy):
            return backward(dy, x, gamma, reserve_1, reserve_2, reserve_3)

        return y, first

    return forward(x, gamma, beta)


def _call(layer: layers.Layer, x, **kwargs):
    """``layer.call(x)``, or ``layer(x)`` while it is not built yet.

    Inside a net's ``__call__``, Keras has already done its per-call work
    (input casting, the mixed-precision autocast scope); repeating it for
    every sub-layer was a third of the training step's tracing time.
    """
    return layer.call(x, **kwargs) if layer.built else layer(x, **kwargs)


@keras.saving.register_keras_serializable(package="singan_tf")
class ConvBlock(layers.Layer):
    """Conv2D 3x3 (valid) -> BatchNorm -> LeakyReLU(0.2).

    BatchNorm uses PyTorch's default momentum 0.1 (Keras ``momentum=0.9``)
    and eps 1e-5, with gamma ~ N(1, 0.02), as the reference code.

    Args:
        channels: output channels.
        kernel_size: square kernel size (3).

    Example:
        >>> block = ConvBlock(32)
        >>> tuple(block(keras.ops.zeros((1, 13, 13, 3))).shape)
        (1, 11, 11, 32)
    """

    def __init__(self, channels: int, kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.kernel_size = kernel_size
        # No bias: BatchNorm subtracts the batch mean right after, so a bias cancels in training
        # (its gradient is zero up to rounding) and, in inference, only shifts the moving mean.
        self.conv = layers.Conv2D(
            channels,
            kernel_size,
            padding="valid",
            use_bias=False,
            kernel_initializer=conv_init(),
            dtype=self.dtype_policy,
        )
        self.norm = FusedBatchNorm(
            momentum=0.9,
            epsilon=1e-5,
            gamma_initializer=keras.initializers.RandomNormal(mean=1.0, stddev=0.02),
            dtype=self.dtype_policy,
        )
        self.act = layers.LeakyReLU(negative_slope=0.2, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)
        shape = (*input_shape[:-1], self.channels)
        self.norm.build(shape)
        self.act.build(shape)

    def call(self, x, training=None):
        x = _call(self.norm, _call(self.conv, x), training=training)
        return _call(self.act, x)

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "kernel_size": self.kernel_size}


class _FiveConvNet(keras.Model):
    """Head ConvBlock, ``num_layers - 2`` body ConvBlocks, a plain conv tail."""

    def __init__(self, channels: int, out_channels: int, num_layers: int = 5, kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.num_layers = num_layers
        self.kernel_size = kernel_size
        self.blocks = [
            ConvBlock(channels, kernel_size, dtype=self.dtype_policy, name=f"block{i}")
            for i in range(num_layers - 1)
        ]
        self.tail = layers.Conv2D(
            out_channels,
            kernel_size,
            padding="valid",
            kernel_initializer=conv_init(),
            dtype=self.dtype_policy,
            name="tail",
        )

    @property
    def pad(self) -> int:
        return self.num_layers * (self.kernel_size - 1) // 2

    def build(self, input_shape=None):
        """Creates the weights from the channel counts alone (the input is always RGB), without
        the forward pass Keras would otherwise run to find shapes: that pass was two thirds of
        making a net."""
        shape = (None, None, None, 3)
        for block in self.blocks:
            block.build(shape)
            shape = (None, None, None, self.channels)
        self.tail.build(shape)

    def features(self, x, training=None):
        """The five convs; called inside this net's ``__call__`` (see ``ConvBlock.call``)."""
        for block in self.blocks:
            x = _call(block, x, training=training)
        return _call(self.tail, x)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "channels": self.channels,
            "num_layers": self.num_layers,
            "kernel_size": self.kernel_size,
        }


@keras.saving.register_keras_serializable(package="singan_tf")
class ScaleGenerator(_FiveConvNet):
    """G_n: ``out = tanh(net(pad(x))) + prev`` with ``x = amp * z + prev``.

    Call with ``(x, prev)``, both [B, h, w, 3]; returns [B, h, w, 3] float32.

    Example:
        >>> g = ScaleGenerator(32)
        >>> x = keras.ops.zeros((2, 25, 34, 3))
        >>> tuple(g((x, x)).shape)
        (2, 25, 34, 3)
    """

    def __init__(self, channels: int, num_layers: int = 5, kernel_size: int = 3, **kwargs):
        kwargs.pop("out_channels", None)
        super().__init__(channels, 3, num_layers, kernel_size, **kwargs)
        # prev is added back in float32: Keras would cast it to the compute dtype with x,
        # and in bfloat16 the residual would lose all but 8 bits of the coarser scale's image.
        self._convert_input_args = False

    def call(self, inputs, training=None):
        x, prev = inputs
        x = ops.cast(x, self.compute_dtype)
        p = self.pad
        x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        detail = ops.tanh(self.features(x, training=training))
        return ops.cast(detail, "float32") + ops.cast(prev, "float32")


@keras.saving.register_keras_serializable(package="singan_tf")
class PatchCritic(_FiveConvNet):
    """D_n: a map of scores, one per 11x11 patch (no padding, no activation).

    Example:
        >>> d = PatchCritic(32)
        >>> tuple(d(keras.ops.zeros((1, 25, 34, 3))).shape)
        (1, 15, 24, 1)
    """

    def __init__(self, channels: int, num_layers: int = 5, kernel_size: int = 3, **kwargs):
        kwargs.pop("out_channels", None)
        super().__init__(channels, 1, num_layers, kernel_size, **kwargs)
        for block in self.blocks:  # a critic only ever runs in training mode
            block.norm.update_statistics = False

    def call(self, x, training=None):
        return ops.cast(self.features(x, training=training), "float32")


def build_generator(channels: int, num_layers: int = 5, kernel_size: int = 3, dtype=None) -> ScaleGenerator:
    """A generator with its weights created (so weights can be loaded/copied)."""
    g = ScaleGenerator(channels, num_layers, kernel_size, dtype=dtype)
    g.build()
    return g


def build_critic(channels: int, num_layers: int = 5, kernel_size: int = 3, dtype=None) -> PatchCritic:
    d = PatchCritic(channels, num_layers, kernel_size, dtype=dtype)
    d.build()
    return d


# -- weights written when the block convs had a bias ------------------------------------
def fold_block_biases(weights: Sequence[np.ndarray], num_layers: int = 5) -> list[np.ndarray]:
    """A net's ``get_weights()`` list in today's layout, from either layout.

    Runs trained before the block convs lost their bias list kernel, bias,
    gamma, beta, moving mean, moving variance per block (then the tail's
    kernel and bias). BatchNorm of ``conv(x) + b`` with moving mean ``m`` is
    BatchNorm of ``conv(x)`` with moving mean ``m - b``, in training (the
    batch mean takes b away) and in inference alike, so each bias is folded
    into its moving mean. A list already in today's layout is returned as is.
    """
    weights = list(weights)
    if len(weights) != 6 * (num_layers - 1) + 2:
        return weights
    out: list[np.ndarray] = []
    for i in range(num_layers - 1):
        kernel, bias, gamma, beta, mean, variance = weights[6 * i : 6 * i + 6]
        out += [kernel, gamma, beta, np.asarray(mean - bias, np.float32), variance]
    return out + weights[-2:]


def drop_block_bias_slots(values: Sequence[np.ndarray], num_layers: int = 5) -> list[np.ndarray]:
    """An Adam's variables (iteration, [learning rate], then a momentum and a velocity per trained
    variable) without the slots of the block convs' biases, if it was written with them."""
    values = list(values)
    trained_then = 4 * (num_layers - 1) + 2  # kernel, bias, gamma, beta per block; the tail's two
    head = len(values) - 2 * trained_then
    if head not in (1, 2):
        return values
    bias_vars = {4 * i + 1 for i in range(num_layers - 1)}
    slots = values[head:]
    kept = [s for k in range(trained_then) if k not in bias_vars for s in slots[2 * k : 2 * k + 2]]
    return values[:head] + kept


def load_weights(net: _FiveConvNet, path: str | os.PathLike) -> None:
    """``net.load_weights(path)``; a file written when the block convs had a bias is read with
    h5py (Keras files the blocks under ``blocks/conv_block``, ``blocks/conv_block_1``, ...) and
    folded (``fold_block_biases``). A file that is not HDF5 raises an ``OSError`` naming it."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:  # h5py's message does not say which file
        raise OSError(errno.EIO, f"not a readable weights file ({err})", os.fspath(path)) from None
    with f:
        if "blocks/conv_block/conv/vars/1" not in f:
            legacy = None
        else:
            legacy = []
            # conv_block, conv_block_1, ...: in the order of the net's blocks
            for name in sorted(f["blocks"], key=lambda name: (len(name), name)):
                block = f["blocks"][name]
                legacy += [block["conv/vars/0"][()], block["conv/vars/1"][()]]
                legacy += [block[f"norm/vars/{k}"][()] for k in range(4)]
            # The tail: the one conv outside the blocks (Keras files it under "layers").
            (tail,) = (g for g in f["layers"].values() if "vars/0" in g and g["vars/0"].ndim == 4)
            legacy += [tail["vars/0"][()], tail["vars/1"][()]]
    if legacy is None:
        net.load_weights(path)
    else:
        net.set_weights(fold_block_biases(legacy, net.num_layers))
