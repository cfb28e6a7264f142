import numpy as np
import pytest
import tensorflow as tf

from singan_tf.config import TrainConfig
from singan_tf.models import ConvBlock, PatchCritic, ScaleGenerator, build_critic, build_generator
from singan_tf.training import init_scale_nets


@pytest.mark.parametrize("size", [(25, 34), (33, 43), (17, 60)])
def test_generator_keeps_size_critic_removes_ten_pixels(size):
    g, d = build_generator(32), build_critic(32)
    x = tf.random.normal((2, *size, 3))
    assert g((x, x)).shape == (2, *size, 3)
    assert d(x).shape == (2, size[0] - 10, size[1] - 10, 1)


def _receptive_field(fn, size=31):
    x = tf.random.normal((1, size, size, 3))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        c = y.shape[1] // 2
        center = y[0, c, c, 0]
    grad = tape.gradient(center, x)[0]
    rows = np.nonzero(np.abs(grad.numpy()).sum(axis=(1, 2)))[0]
    cols = np.nonzero(np.abs(grad.numpy()).sum(axis=(0, 2)))[0]
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_receptive_field_is_11x11():
    d = build_critic(32)
    assert _receptive_field(lambda x: d(x, training=False)) == (11, 11)
    g = build_generator(32)
    # The generator's residual adds `prev` (a 1x1 path), the nets see 11x11.
    assert _receptive_field(lambda x: g((x, tf.zeros_like(x)), training=False)) == (11, 11)


def test_generator_only_adds_detail_to_prev():
    g = build_generator(32)
    tail = g.tail
    tail.kernel.assign(tf.zeros_like(tail.kernel))
    tail.bias.assign(tf.zeros_like(tail.bias))
    prev = tf.random.normal((1, 20, 30, 3))
    out = g((tf.random.normal((1, 20, 30, 3)), prev), training=False)
    np.testing.assert_allclose(out.numpy(), prev.numpy(), atol=1e-6)  # tanh(0) + prev


def test_coarsest_noise_single_channel_broadcasts():
    g = build_generator(32)
    z = tf.random.normal((1, 25, 34, 1))
    prev = tf.zeros((1, 25, 34, 3))
    assert g((z + prev, prev)).shape == (1, 25, 34, 3)


def test_conv_block_batchnorm_settings():
    block = ConvBlock(32)
    block(tf.zeros((1, 5, 5, 3)))
    assert block.norm.momentum == pytest.approx(0.9)  # PyTorch momentum 0.1
    assert block.norm.epsilon == pytest.approx(1e-5)
    assert block.conv.padding == "valid" and block.conv.kernel_size == (3, 3)
    assert block.act.negative_slope == pytest.approx(0.2)


def test_initialisation_statistics():
    g = build_generator(128)
    kernels = np.concatenate([b.conv.kernel.numpy().ravel() for b in g.blocks[1:]])
    assert kernels.mean() == pytest.approx(0.0, abs=2e-4)
    assert kernels.std() == pytest.approx(0.02, rel=0.03)
    gammas = np.concatenate([b.norm.gamma.numpy() for b in g.blocks])
    assert gammas.mean() == pytest.approx(1.0, abs=0.01)
    assert gammas.std() == pytest.approx(0.02, rel=0.25)
    assert all(np.all(b.norm.beta.numpy() == 0) for b in g.blocks)


def test_five_layers_and_width():
    g = ScaleGenerator(64)
    d = PatchCritic(64)
    assert len(g.blocks) == 4 and len(d.blocks) == 4  # head + 3 body, then the tail
    build_generator(64)
    assert g.get_config()["channels"] == 64


def test_warm_start_copies_previous_scale_when_width_matches():
    config = TrainConfig()
    g0, d0 = init_scale_nets(config, 0, [], [])
    g1, d1 = init_scale_nets(config, 1, [g0], [d0])  # 32 -> 32: copied
    for a, b in zip(g0.get_weights(), g1.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(d0.get_weights(), d1.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    g3, d3 = init_scale_nets(config, 3, [g0, g1, g1], [d0, d1, d1])
    g4, _ = init_scale_nets(config, 4, [g0, g1, g1, g3], [d0, d1, d1, d3])  # 32 -> 64: fresh
    assert g4.channels == 64


def test_weights_round_trip(tmp_path):
    g = build_generator(32)
    path = tmp_path / "g.weights.h5"
    g.save_weights(path)
    h = build_generator(32)
    h.load_weights(path)
    x = tf.random.normal((1, 20, 20, 3))
    np.testing.assert_array_equal(g((x, x), training=False).numpy(), h((x, x), training=False).numpy())


def _with_block_biases(monkeypatch, build, channels=32):
    """A net as runs trained before the block convs lost their bias wrote it: every conv with a
    bias, the biases and moving statistics far from their initial values."""
    import keras

    from singan_tf import models

    keras.utils.set_random_seed(3)
    conv = keras.layers.Conv2D
    with monkeypatch.context() as m:
        m.setattr(models.layers, "Conv2D", lambda *a, **k: conv(*a, **{**k, "use_bias": True}))
        net = build(channels)
    rng = np.random.default_rng(1)
    for block in net.blocks:
        block.conv.bias.assign(rng.normal(0, 0.3, channels).astype(np.float32))
        block.norm.moving_mean.assign(rng.normal(0, 0.3, channels).astype(np.float32))
        block.norm.moving_variance.assign(rng.uniform(0.5, 2, channels).astype(np.float32))
    return net


def test_block_convs_have_no_bias_and_runs_written_with_one_still_load(rocket, tmp_path, monkeypatch):
    from singan_tf.models import load_weights

    g = build_generator(32)
    assert all(not b.conv.use_bias for b in g.blocks) and g.tail.use_bias
    assert len(g.get_weights()) == 4 * 5 + 2  # kernel, gamma, beta and the moving statistics
    x = tf.constant(rocket[None, :40, :56] * 2 - 1)
    for build in (build_generator, build_critic):
        old = _with_block_biases(monkeypatch, build)
        assert len(old.get_weights()) == 4 * 6 + 2
        path = tmp_path / f"{old.name}.weights.h5"
        old.save_weights(path)
        new = build(32)
        load_weights(new, path)
        inputs = (x, x) if build is build_generator else x
        # The moving mean takes the bias; the batch mean cancels it. Up to float32 rounding, which
        # the critic's last layers amplify (up to ~6e-5 of the largest output seen); without the
        # fold, inference is off by far more.
        for training in (False, True):
            want, got = old(inputs, training=training).numpy(), new(inputs, training=training).numpy()
            np.testing.assert_allclose(got, want, atol=3e-4 * np.abs(want).max())
        # A file written today loads as Keras writes it.
        new.save_weights(tmp_path / "today.weights.h5")
        again = build(32)
        load_weights(again, tmp_path / "today.weights.h5")
        for a, b in zip(again.get_weights(), new.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def _bn_pair(channels=16, dtype=None):
    import keras

    from singan_tf.models import FusedBatchNorm

    kwargs = dict(momentum=0.9, epsilon=1e-5, dtype=dtype)
    fused, plain = FusedBatchNorm(**kwargs), keras.layers.BatchNormalization(**kwargs)
    for layer in (fused, plain):
        layer.build((1, 9, 11, channels))
    rng = np.random.default_rng(0)
    weights = [
        rng.normal(1, 0.3, channels),
        rng.normal(0, 0.3, channels),
        rng.normal(0, 0.1, channels),
        rng.uniform(0.5, 2, channels),
    ]
    for layer in (fused, plain):
        layer.set_weights([w.astype(np.float32) for w in weights])
    return fused, plain


def _penalty_grads(norm, x, params):
    """``y = norm(x)``, the input gradient a gradient penalty takes through it, and that
    penalty's gradient to ``params`` and to ``x`` (what reaches the convs below the layer);
    the penalty also takes the weights' gradients, so every second derivative is used."""
    with tf.GradientTape() as outer:
        tensors = [p for p in params if isinstance(p, tf.Tensor)]  # Keras variables are watched
        outer.watch([x, *tensors])
        xx = tf.identity(x)
        with tf.GradientTape() as inner:
            inner.watch([xx, *tensors])
            y = norm(xx)
            # the square makes the score's gradient depend on y, as the next conv does in a net
            score = tf.reduce_sum(tf.nn.leaky_relu(y, 0.2) * tf.range(16.0, dtype=y.dtype) + 0.3 * y**2)
        gx, *g_params = inner.gradient(score, [xx, *params])
        penalty = tf.reduce_mean((tf.norm(gx, axis=-1) - 1.0) ** 2)
        penalty += 0.01 * sum(tf.reduce_sum(tf.square(g)) for g in g_params)
    return [t.numpy().astype(np.float64) for t in (y, gx, *outer.gradient(penalty, [*params, x]))]


@pytest.mark.parametrize("update_statistics", [True, False], ids=["generator", "critic"])
def test_fused_batchnorm_is_batchnorm_to_second_derivatives(rocket, update_statistics):
    """The fused training pass: outputs, moving statistics, and the first and second
    derivatives the gradient penalty takes through it (TensorFlow's registered second
    derivative in the generator's, which keeps statistics; the critic's written out by hand).

    Against BatchNorm in float64 with its batch moments differentiated exactly. Not against
    Keras' layer here: its moments (``tf.nn.moments``) stop the gradient at the mean, which
    leaves first derivatives exact but not second ones to the input (3e-4 of the largest
    here, where the fused layer is within 1e-6).
    """
    fused, plain = _bn_pair()
    fused.update_statistics = update_statistics
    # Conv features of a crop of the image: what BatchNorm sees in the nets.
    kernel = tf.random.stateless_normal((3, 3, 3, 16), (3, 4), stddev=0.5)
    x = tf.nn.conv2d(tf.constant(rocket[None, 200:211, 300:313]), kernel, 1, "VALID") + 0.1
    gamma, beta = (tf.constant(w.numpy(), tf.float64) for w in (fused.gamma, fused.beta))

    def exact(x):
        mean = tf.reduce_mean(x, axis=[0, 1, 2])
        variance = tf.reduce_mean(tf.square(x - mean), axis=[0, 1, 2])
        return (x - mean) * tf.math.rsqrt(variance + 1e-5) * gamma + beta

    got = _penalty_grads(lambda x: fused(x, training=True), x, fused.trainable_variables)
    want = _penalty_grads(exact, tf.cast(x, tf.float64), [gamma, beta])
    for name, a, b in zip(["y", "gx", "to gamma", "to beta", "to x"], got, want, strict=True):
        # float32 round-off only, relative to the largest entry (the gradient to beta is ~0:
        # a shift of y per channel leaves its normalized gradient alone)
        np.testing.assert_allclose(a, b, atol=2e-5 * max(np.abs(b).max(), 1.0), err_msg=name)
    assert np.abs(got[2]).max() > 1e-3 and np.abs(got[4]).max() > 1e-3  # the checks are not vacuous
    # Keras' layer: the same outputs and first derivatives
    y, gx = _penalty_grads(lambda x: plain(x, training=True), x, plain.trainable_variables)[:2]
    np.testing.assert_allclose(got[0], y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], gx, rtol=1e-4, atol=1e-5)
    if not update_statistics:
        np.testing.assert_array_equal(fused.moving_mean, _bn_pair()[0].moving_mean)
        return
    # Moving statistics: the mean as Keras; the variance averages the unbiased batch variance,
    # as PyTorch's BatchNorm (the reference code's) does.
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-5)
    n, biased = x.shape[1] * x.shape[2], tf.math.reduce_variance(x, axis=[0, 1, 2]).numpy()
    initial = (plain.moving_variance.numpy() - 0.1 * biased) / 0.9  # Keras: 0.9 * initial + 0.1 * biased
    want_variance = 0.9 * initial + 0.1 * biased * n / (n - 1)
    np.testing.assert_allclose(fused.moving_variance, want_variance, rtol=1e-4)
    assert not np.allclose(fused.moving_variance, plain.moving_variance, rtol=1e-4)
    # Inference is Keras' own path.
    plain.moving_variance.assign(fused.moving_variance)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-6)


def test_fused_batchnorm_in_bfloat16():
    fused, plain = _bn_pair(dtype="mixed_bfloat16")
    x = tf.random.stateless_normal((1, 9, 11, 16), (1, 2)) * 2 + 1
    y1, y2 = fused(x, training=True), plain(x, training=True)
    assert y1.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y1, tf.float32), tf.cast(y2, tf.float32), atol=0.05)
    # The critic's hand-written second derivative in bfloat16: float32's, to bfloat16's precision.
    fused.update_statistics = False
    in_float32 = _bn_pair()[0]
    in_float32.update_statistics = False
    got = _penalty_grads(lambda x: fused(x, training=True), x, fused.trainable_variables)
    want = _penalty_grads(lambda x: in_float32(x, training=True), x, in_float32.trainable_variables)
    for name, a, b in zip(["y", "gx", "to gamma", "to beta", "to x"], got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=0.03 * np.abs(b).max(), err_msg=name)


def test_conv_block_trains_through_the_fused_kernel():
    block = ConvBlock(8)
    block(tf.zeros((1, 7, 7, 3)))
    train = tf.function(lambda x: block(x, training=True)).get_concrete_function(tf.TensorSpec((1, 9, 9, 3)))
    infer = tf.function(lambda x: block(x, training=False)).get_concrete_function(tf.TensorSpec((1, 9, 9, 3)))
    assert "FusedBatchNormV3" in {op.type for op in train.graph.get_operations()}
    assert "FusedBatchNormV3" not in {op.type for op in infer.graph.get_operations()}


def test_only_the_generator_keeps_moving_statistics():
    """A critic never runs in inference mode: its BatchNorm statistics are not updated."""
    g, d = build_generator(8), build_critic(8)
    x = tf.random.stateless_normal((1, 16, 16, 3), (5, 6))
    g_stats, d_stats = (
        [w.numpy() for w in g.non_trainable_weights],
        [w.numpy() for w in d.non_trainable_weights],
    )
    g((x, x), training=True)
    d(x, training=True)
    assert all(not np.allclose(a, b.numpy()) for a, b in zip(g_stats, g.non_trainable_weights, strict=True))
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(d_stats, d.non_trainable_weights, strict=True))


def test_a_checkpoint_written_with_block_biases_resumes(rocket, monkeypatch):
    from singan_tf.training import TrainStep

    old = {"generator": _with_block_biases(monkeypatch, build_generator)}
    old["critic"] = _with_block_biases(monkeypatch, build_critic)
    rng = np.random.default_rng(2)
    # An Adam as it was written: iteration, rate, a momentum and a velocity per trained variable.
    slots = {
        name: [
            (v.path, rng.normal(size=v.shape).astype(np.float32))
            for v in net.trainable_variables
            for _ in "mv"
        ]
        for name, net in old.items()
    }
    state = {name: net.get_weights() for name, net in old.items()}
    state["g_opt"] = [np.int64(7), np.float32(5e-4), *(a for _, a in slots["generator"])]
    state["d_opt"] = [np.int64(7), np.float32(5e-4), *(a for _, a in slots["critic"])]
    step = TrainStep(TrainConfig(), 32, "float32")
    step.load_state(state)
    x = tf.constant(rocket[None, :40, :56] * 2 - 1)
    want, got = old["generator"]((x, x), training=False), step.generator((x, x), training=False)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-5 * np.abs(want.numpy()).max())
    for name, opt in (("generator", step.g_opt), ("critic", step.d_opt)):
        assert int(opt.iterations) == 7
        kept = [a for path, a in slots[name] if not (path.endswith("/bias") and "tail" not in path)]
        got = [v.numpy() for v in opt.variables[2:]]
        assert len(got) == len(kept) == 2 * (3 * 4 + 2)
        for a, b in zip(got, kept, strict=True):
            np.testing.assert_array_equal(a, b)
