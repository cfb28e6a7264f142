"""The training step, the trainer and the schedule (singan_tf/training.py)."""

import json
import logging

import numpy as np
import pytest
import tensorflow as tf

from singan_tf.config import TrainConfig
from singan_tf.models import build_generator
from singan_tf.pyramid import build_pyramid, pyramid_geometry
from singan_tf.sampling import Pyramid
from singan_tf.training import ScaleTrainer, TrainStep


def test_lr_drops_at_80_percent_of_the_scale(rocket):
    t = _trainer(rocket, 0, iters=10)
    rates = []
    original = t.step.iteration

    def spy(*args):
        rates.append((float(t.step.g_opt.learning_rate.numpy()), float(t.step.d_opt.learning_rate.numpy())))
        return original(*args)

    t.step.iteration = spy
    t.run(0, 10)
    want = [(5e-4, 5e-4)] * 8 + [(5e-5, 5e-5)] * 2  # milestone: 80% of 10
    np.testing.assert_allclose(rates, want, rtol=1e-6)
    rates.clear()
    t.run(9, 10)  # a resumed scale starts at its iteration's rate
    np.testing.assert_allclose(rates, [(5e-5, 5e-5)], rtol=1e-6)


def _trainer(rocket, scale, precision="float32", xla=False, noise_amp=0.05, **cfg):
    config = TrainConfig(**{"max_size": 48, "iters": 20, **cfg})
    geometry = pyramid_geometry(rocket.shape[:2], config.min_size, config.max_size)
    reals = build_pyramid(rocket, geometry)
    amps = ([1.0] + [0.05] * (scale - 1))[:scale]
    rec_noise = np.zeros((1, *geometry.sizes[0], 1), np.float32)
    coarser = Pyramid(config, geometry, [build_generator(32) for _ in range(scale)], amps, rec_noise)
    prev = tf.zeros((1, *geometry.sizes[scale], 3))
    return ScaleTrainer(TrainStep(config, 32, precision, xla), coarser, reals[scale], (prev, prev), noise_amp)


def test_iteration_updates_both_nets_and_is_reproducible(rocket):
    t = _trainer(rocket, 1)
    g0 = [w.copy() for w in t.generator.get_weights()]
    d0 = [w.copy() for w in t.critic.get_weights()]
    metrics = t.run(0, 2)
    assert set(metrics) >= {"d_loss", "g_loss", "gp", "rec_rmse", "d_real", "d_fake"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert int(t.step.d_opt.iterations) == 2 * 3 and int(t.step.g_opt.iterations) == 2 * 3
    assert any(not np.array_equal(a, b) for a, b in zip(g0, t.generator.get_weights(), strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(d0, t.critic.get_weights(), strict=True))
    # The random path is a function of the iteration's seed: same seed, same prev.
    a = t.random_path(t.iteration_seed(5)).numpy()
    b = t.random_path(t.iteration_seed(5)).numpy()
    c = t.random_path(t.iteration_seed(6)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("gp_every, expected", [(1, 3), (2, 2), (3, 1)])
def test_gradient_penalty_only_on_its_critic_steps(rocket, gp_every, expected):
    t = _trainer(rocket, 1, gp_every=gp_every)
    graph = t.step.graph()
    # The critic steps are calls of two traced functions, with and without the GP.
    with_gp = t.step._critic_steps[True].get_concrete_function().name.decode()
    calls = [op.get_attr("f").name for op in graph.get_operations() if op.type == "StatefulPartitionedCall"]
    assert sum(name == with_gp for name in calls) == expected
    gp_graph = t.step._critic_steps[True].get_concrete_function().graph
    assert any(op.name.startswith("gradient_penalty") for op in gp_graph.get_operations())
    plain_graph = t.step._critic_steps[False].get_concrete_function().graph
    assert not any(op.name.startswith("gradient_penalty") for op in plain_graph.get_operations())
    d0 = [w.copy() for w in t.critic.get_weights()]
    metrics = t.run(0, 2)
    assert np.isfinite(metrics["gp"]) and np.isfinite(metrics["d_loss"])
    # The logged critic loss has one meaning whatever gp_every is.
    want = metrics["d_fake"] - metrics["d_real"] + 0.1 * metrics["gp"]
    assert metrics["d_loss"] == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert int(t.step.d_opt.iterations) == 2 * 3
    assert any(not np.array_equal(a, b) for a, b in zip(d0, t.critic.get_weights(), strict=True))


def test_the_critic_steps_fakes_are_one_traced_function(rocket):
    """G's forward for the 3 critic steps' fakes is traced once and called 3 times (each
    with its own noise), like the steps themselves: a third of that part of the trace."""
    t = _trainer(rocket, 1)
    fakes = t.step._critic_fakes.get_concrete_function().name.decode()
    ops = t.step.graph().get_operations()
    calls = [op.get_attr("f").name for op in ops if op.type == "StatefulPartitionedCall"]
    assert sum(name == fakes for name in calls) == 3
    # the three fakes differ: each step's own noise
    real, prev = t.data.real, tf.zeros_like(t.data.real)
    a, b = (t.step._critic_fakes(real, prev, 1.0, False, tf.constant([0, k])) for k in (1, 2))
    assert float(tf.reduce_max(tf.abs(a - b))) > 0.01


def test_xla_and_plain_compute_the_same_step(rocket):
    # XLA orders Philox output differently, so the step's own noise is switched off (amp_n = 0,
    # no GP); the coarser pyramid's noise is drawn outside the compiled step, the same for both.
    # Then two whole iterations (3 critic + 3 generator steps each) must make the same updates.
    plain = _trainer(rocket, 1, seed=1, gp_weight=0.0, noise_amp=0.0)
    xla = _trainer(rocket, 1, xla=True, seed=1, gp_weight=0.0, noise_amp=0.0)
    xla.generator.set_weights(plain.generator.get_weights())
    xla.critic.set_weights(plain.critic.get_weights())
    xla.random_path = plain.random_path  # the same frozen coarser generator

    def weights(t):
        return np.concatenate([w.ravel() for w in t.generator.get_weights() + t.critic.get_weights()])

    before = weights(plain)
    m1, m2 = plain.run(0, 2), xla.run(0, 2)
    assert m2["rec_loss"] == pytest.approx(m1["rec_loss"], rel=1e-3)
    assert m2["g_loss"] == pytest.approx(m1["g_loss"], rel=5e-3)
    assert m2["d_loss"] == pytest.approx(m1["d_loss"], abs=0.01)
    assert m2["d_real"] == pytest.approx(m1["d_real"], abs=0.01)
    # The 12 updates agree to about 1% (measured 0.5-0.9%: Adam's first steps are nearly the
    # gradients' signs, which float reassociation flips where a gradient is near zero).
    u1, u2 = weights(plain) - before, weights(xla) - before
    assert np.linalg.norm(u1) > 0.1  # the iterations did update the nets
    assert np.linalg.norm(u1 - u2) < 0.05 * np.linalg.norm(u1)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_step(rocket, precision):
    t = _trainer(rocket, 0, precision, iters=4)
    g = t.generator
    assert g.blocks[0].conv.compute_dtype == precision.removeprefix("mixed_")
    before = [w.copy() for w in g.get_weights()]
    metrics = t.run(0, 4)
    assert all(np.isfinite(v) for v in metrics.values())
    assert any(not np.array_equal(a, b) for a, b in zip(before, g.get_weights(), strict=True))
    prev = tf.zeros((1, 25, 37, 3))
    assert g((prev, prev), training=False).dtype == tf.float32  # images stay float32
    state = t.state()  # float16's loss scales are part of a resumable checkpoint
    assert len(state["loss_scale"]) == (4 if precision == "mixed_float16" else 0)
    if state["loss_scale"]:
        t.step.loss_scales[0].scale.assign(1.0)
        t.load_state(state)
        assert float(t.step.loss_scales[0].scale.numpy()) == float(state["loss_scale"][0])


def test_generator_adds_the_coarser_image_back_in_float32():
    """In mixed precision the residual ``prev`` must not be rounded to bfloat16 (8 bits)."""
    g = build_generator(32, dtype="mixed_bfloat16")
    prev = tf.fill((1, 12, 12, 3), 0.123456)
    out = g((prev, prev), training=False)
    detail = tf.cast(tf.cast(out - prev, tf.bfloat16), tf.float32)  # what the nets added
    np.testing.assert_allclose(out.numpy(), (prev + detail).numpy(), atol=1e-6)
    assert abs(0.123456 - float(tf.cast(tf.constant(0.123456, tf.bfloat16), tf.float32))) > 1e-5


def test_one_trace_serves_every_scale_of_a_width(rocket):
    """Scales of one width reuse one traced iteration: shapes are arguments, not constants."""
    config = TrainConfig(max_size=64, iters=4)
    geometry = pyramid_geometry(rocket.shape[:2], config.min_size, config.max_size)
    reals = build_pyramid(rocket, geometry)
    step = TrainStep(config, 32, "float32")
    frozen = Pyramid(config, geometry, [], [], np.zeros((1, *geometry.sizes[0], 1), np.float32))
    for n, size in enumerate(geometry.sizes):
        prev = tf.zeros((1, *size, 3))
        ScaleTrainer(step, frozen, reals[n], (prev, prev), 0.1).run(0, 2)
        frozen.append_scale(build_generator(32), 0.1)
    assert len(geometry.sizes) == 3
    assert step._iteration.experimental_get_tracing_count() == 1
    assert step._critic_steps[True].experimental_get_tracing_count() == 1  # one trace for 3 steps
    assert step._generator_steps.experimental_get_tracing_count() == 1


def _concurrent_trainer(rocket, **cfg):
    """Scale 2 of a 56-px pyramid, training G_1 along (``concurrent=2``), G_0 and G_1 frozen."""
    config = TrainConfig(**{"max_size": 56, "iters": 10, "concurrent": 2, "seed": 3, **cfg})
    geometry = pyramid_geometry(rocket.shape[:2], config.min_size, config.max_size)
    reals = build_pyramid(rocket, geometry)
    rec_noise = np.zeros((1, *geometry.sizes[0], 1), np.float32)
    frozen = Pyramid(config, geometry, [build_generator(32) for _ in range(2)], [1.0, 0.05], rec_noise)
    step = TrainStep(config, 32, "float32", coarser_channels=32)
    step.set_weights(
        build_generator(32).get_weights(), step.critic.get_weights(), frozen.generators[1].get_weights()
    )
    co_prev = tf.zeros((1, *geometry.sizes[1], 3))
    prev = tf.zeros((1, *geometry.sizes[2], 3))
    trainer = ScaleTrainer(step, frozen, reals[2], (prev, prev), 0.05, coarser_rec_input=(co_prev, co_prev))
    return trainer, frozen


def test_a_concurrent_step_trains_the_coarser_generator_at_its_lower_rate(rocket):
    t, frozen = _concurrent_trainer(rocket, concurrent_lr=0.1)
    step = t.step
    frozen_before = [w.copy() for w in frozen.generators[1].get_weights()]
    c0 = [w.copy() for w in step.coarser.get_weights()]
    # The random path stops one scale short: G_1 runs inside the step.
    assert tuple(t.random_path(t.iteration_seed(0)).shape[1:3]) == frozen.sizes[0]
    rates = []
    original = step.iteration

    def spy(*args):
        rates.append((float(step.g_opt.learning_rate.numpy()), float(step.c_opt.learning_rate.numpy())))
        return original(*args)

    step.iteration = spy
    metrics = t.run(0, 10)
    assert all(np.isfinite(v) for v in metrics.values())
    np.testing.assert_allclose(rates, [(5e-4, 5e-5)] * 8 + [(5e-5, 5e-6)] * 2, rtol=1e-6)
    assert int(step.c_opt.iterations) == 10 * 3  # one update per generator step
    moved = [np.abs(a - b).max() for a, b in zip(c0, step.coarser.get_weights(), strict=True)]
    assert max(moved) > 0  # the losses at scale 2 reach G_1
    # ...and the pyramid's own G_1 is a different object, left as it was until the scale ends.
    for a, b in zip(frozen_before, frozen.generators[1].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    state = t.state()  # a checkpoint holds G_1 and its optimizer
    assert {"coarser", "c_opt"} <= set(state)
    step.coarser.set_weights(c0)
    t.load_state(state)
    for a, b in zip(state["coarser"], step.coarser.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_coarser_generator_moves_with_its_learning_rate(rocket):
    """The rate is what G_{n-1}'s updates scale with: Adam's first steps are about lr in size."""

    def first_update(lr: float) -> float:
        t, _ = _concurrent_trainer(rocket, concurrent_lr=lr)
        before = np.concatenate([w.numpy().ravel() for w in t.step.coarser.trainable_weights])
        t.run(0, 1)
        after = np.concatenate([w.numpy().ravel() for w in t.step.coarser.trainable_weights])
        return float(np.abs(after - before).max())

    big, small = first_update(1.0), first_update(0.01)
    assert 5e-4 < big < 3.5 * 5e-4  # 3 Adam steps of about lr each, at G_n's rate
    assert 50 < big / small < 200  # a hundredth of the rate, about a hundredth of the step


def test_a_concurrent_step_needs_the_coarser_scale(rocket):
    t, _ = _concurrent_trainer(rocket)
    with pytest.raises(ValueError, match="CoarserData"):
        t.step.iteration(t.data, tf.zeros((1, 25, 37, 3)), t.iteration_seed(0))


def test_fused_adam_is_keras_adam():
    import keras

    from singan_tf.training import FusedAdam

    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 3, 2, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    results = []
    for cls in (keras.optimizers.Adam, FusedAdam):
        variables = [keras.Variable(v) for v in start]
        opt = cls(5e-4, beta_1=0.5, beta_2=0.999)
        opt.build(variables)
        for k in range(5):
            grads = [tf.constant(np.sin(v * (k + 1)), tf.float32) for v in start]
            opt.apply(grads, variables)
        results.append([v.numpy() for v in variables] + [int(opt.iterations.numpy())])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not np.allclose(results[1][0], start[0])


def test_loss_scale_skips_overflow_and_grows():
    """float16's dynamic loss scale: a non-finite step changes nothing and halves the
    scale; finite steps apply the unscaled gradient and double it every interval."""
    import keras

    from singan_tf.training import LossScale

    ls = LossScale(initial=8.0, growth_interval=2)
    w = tf.Variable([1.0, 2.0])
    opt = keras.optimizers.SGD(0.5)
    opt.build([w])

    @tf.function(autograph=False)
    def step(factor):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(w * w) * factor
        ls.minimize(tape, loss, [([w], opt)])

    step(tf.constant(np.inf, tf.float32))
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
    assert float(ls.scale.numpy()) == 4.0
    step(tf.constant(1.0))  # gradient 2w, unscaled: w - 0.5 * 2w = 0
    np.testing.assert_allclose(w.numpy(), [0.0, 0.0])
    assert float(ls.scale.numpy()) == 4.0 and int(ls.good_steps.numpy()) == 1
    step(tf.constant(1.0))
    assert float(ls.scale.numpy()) == 8.0 and int(ls.good_steps.numpy()) == 0


def test_the_next_width_is_traced_while_the_current_scale_trains(rocket, tmp_path, monkeypatch, caplog):
    """A scale that starts a new width finds its step traced: a second thread traced it during
    the scale before (after that scale's first iteration), and training is unchanged by it.
    A scale that has to wait for that thread says so."""
    import threading
    import time

    from singan_tf.training import train_pyramid

    traced = []
    original = TrainStep.graph
    waiting = "scale 2: waiting for its step, prepared in a second thread"

    def graph(self):
        traced.append((self.channels, threading.current_thread().name))
        deadline = time.monotonic() + 60  # outlast scale 1's 3 iterations: scale 2 must wait
        while waiting not in caplog.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        return original(self)

    monkeypatch.setattr(TrainStep, "graph", graph)
    config = TrainConfig(max_size=52, iters=3, channel_step=2, precision="float32", jit_compile="off")
    with caplog.at_level(logging.INFO, logger="singan_tf.training"):
        result = train_pyramid(config, rocket, tmp_path / "run", cache=None)
    assert waiting in caplog.messages
    assert [config.channels(n) for n in range(result.pyramid.geometry.num_scales)] == [32, 32, 64]
    assert traced == [(64, "prepare-scale-2")]
    manifest = json.loads((tmp_path / "run" / "pyramid.json").read_text())
    assert all(np.isfinite(s["final"]["g_loss"]) for s in manifest["scales"])


def test_a_failure_to_prepare_the_next_scale_is_only_a_warning(rocket, tmp_path, monkeypatch, caplog):
    from singan_tf.training import train_pyramid

    def broken(self):
        raise RuntimeError("no trace today")

    monkeypatch.setattr(TrainStep, "graph", broken)  # the second thread's tracing of the next width
    config = TrainConfig(max_size=52, iters=3, channel_step=2, precision="float32", jit_compile="off")
    with caplog.at_level(logging.WARNING, logger="singan_tf.training"):
        result = train_pyramid(config, rocket, tmp_path / "run", cache=None)
    assert result.pyramid.num_scales == 3
    assert [r.getMessage() for r in caplog.records] == ["scale 2: not prepared ahead (no trace today)"]


def test_training_stopped_by_an_error_waits_for_the_thread_preparing_the_next_scale(
    rocket, tmp_path, monkeypatch, caplog
):
    """An exception out of training (Ctrl-C, a callback) leaves no second thread inside
    TensorFlow: one still preparing the next scale at exit aborted the process
    ("terminate called ... exception not rethrown") after the CLI's own message."""
    import threading
    import time

    from singan_tf.training import train_pyramid

    stopping = "stopping once the next scale's step, prepared in a second thread, is ready"
    original = TrainStep.graph

    def graph(self):  # still at work when scale 1 ends: returns only once training is stopping
        deadline = time.monotonic() + 60
        while stopping not in caplog.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        return original(self)

    class Interrupt(Exception):
        pass

    class InterruptAfterScale1:
        def on_scale_begin(self, scale, info):
            pass

        def on_iterations(self, scale, iteration, metrics):
            pass

        def on_scale_end(self, scale, info, pyramid):
            if scale == 1:
                raise Interrupt

    monkeypatch.setattr(TrainStep, "graph", graph)
    config = TrainConfig(max_size=52, iters=3, channel_step=2, precision="float32", jit_compile="off")
    with caplog.at_level(logging.INFO, logger="singan_tf.training"), pytest.raises(Interrupt):
        train_pyramid(config, rocket, tmp_path / "run", [InterruptAfterScale1()], cache=None)
    assert stopping in caplog.messages
    assert not [t for t in threading.enumerate() if t.name.startswith("prepare-scale")]
    assert json.loads((tmp_path / "run" / "pyramid.json").read_text())["scales"][1]["iters"] == 3
