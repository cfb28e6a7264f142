"""End to end on the bundled image, plus the schedule and the training step."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from singan_tf.config import TrainConfig
from singan_tf.images import load_image
from singan_tf.models import build_generator
from singan_tf.pyramid import build_pyramid, pyramid_geometry
from singan_tf.rundir import RunDir, load_pyramid
from singan_tf.training import RandomPath, ScaleData, ScaleTrainer, TrainStep


def test_lr_drops_at_80_percent_of_the_scale(rocket):
    t = _trainer(rocket, 0, iters=10)
    rates = []
    original = t.step.iteration

    def spy(data, prev, seed):
        rates.append((float(t.step.g_opt.learning_rate.numpy()), float(t.step.d_opt.learning_rate.numpy())))
        return original(data, prev, seed)

    t.step.iteration = spy
    t.run(0, 10)
    want = [(5e-4, 5e-4)] * 8 + [(5e-5, 5e-5)] * 2  # milestone: 80% of 10
    np.testing.assert_allclose(rates, want, rtol=1e-6)
    rates.clear()
    t.run(9, 10)  # a resumed scale starts at its iteration's rate
    np.testing.assert_allclose(rates, [(5e-5, 5e-5)], rtol=1e-6)


def _trainer(rocket, scale, precision="float32", xla=False, **cfg):
    config = TrainConfig(**{"max_size": 48, "iters": 20, **cfg})
    geometry = pyramid_geometry(rocket.shape[:2], config.min_size, config.max_size)
    reals = build_pyramid(rocket, geometry)
    amps = ([1.0] + [0.05] * (scale - 1))[:scale]
    path = RandomPath([build_generator(32) for _ in range(scale)], amps, geometry.sizes[:scale])
    prev = tf.zeros((1, *geometry.sizes[scale], 3))
    data = ScaleData.of(scale, reals[scale], (prev, prev), 0.05)
    return ScaleTrainer(config, scale, data, TrainStep(config, 32, precision, xla), path)


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
    a = t.random_prev(t.iteration_seed(5)).numpy()
    b = t.random_prev(t.iteration_seed(5)).numpy()
    c = t.random_prev(t.iteration_seed(6)).numpy()
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


def test_xla_and_plain_compute_the_same_step(rocket):
    # With one critic step, d_real depends only on the weights and the image
    # (the noise stream itself differs: XLA's Philox orders its output differently).
    plain = _trainer(rocket, 0, seed=1, critic_steps=1, generator_steps=1)
    xla = _trainer(rocket, 0, xla=True, seed=1, critic_steps=1, generator_steps=1)
    xla.generator.set_weights(plain.generator.get_weights())
    xla.critic.set_weights(plain.critic.get_weights())
    m1, m2 = plain.run(0, 1), xla.run(0, 1)
    assert m1["d_real"] == pytest.approx(m2["d_real"], rel=1e-4, abs=1e-6)
    assert all(np.isfinite(v) for v in m2.values())


# -- end to end on the trained fixture (see conftest.TINY_ARGS) ----------------
def test_run_directory_is_complete(trained_run):
    run = RunDir(trained_run)
    manifest = json.loads(run.manifest_path.read_text())
    config = run.read_config()
    sizes = [tuple(s) for s in manifest["geometry"]["sizes"]]
    assert sizes == [(25, 38), (33, 49), (43, 64)]
    assert len(manifest["scales"]) == 3
    assert manifest["scales"][0]["noise_amp"] == 1.0
    assert all(0 < s["noise_amp"] < 0.2 for s in manifest["scales"][1:])
    for n in range(3):
        assert run.generator_path(n).is_file() and run.critic_path(n).is_file()
        assert (run.samples / f"scale_{n:02d}.png").is_file()
    assert np.load(run.rec_noise_path).shape == (1, 25, 38, 1)
    assert config.iters == 150 and config.seed == 3
    assert len(list((run.samples).glob("sample_*.png"))) == 4
    events = list(run.logs.glob("events.out.tfevents.*"))
    assert events
    tags = set()
    for path in events:  # evaluate may add its own event file
        for e in tf.compat.v1.train.summary_iterator(str(path)):
            tags |= {v.tag for v in e.summary.value}
    assert {"scale_00/d_loss", "scale_02/rec_rmse", "pyramid/noise_amp", "samples"} <= tags


def test_reconstruction_matches_the_image(pyramid, trained_run):
    real = load_image(RunDir(trained_run).image_path)
    rec = pyramid.reconstruct()[0]
    rmse = float(np.sqrt(np.mean((rec - real) ** 2)))
    assert rmse < 0.1, rmse  # image std is ~0.5 on the [-1, 1] scale


def test_samples_differ_from_each_other_and_from_the_image(pyramid, trained_run):
    real = load_image(RunDir(trained_run).image_path)
    samples = pyramid.sample(6, seed=11)
    assert samples.shape == (6, 43, 64, 3)
    diversity = samples.std(axis=0).mean() / real.std()
    assert diversity > 0.05, diversity
    for s in samples:
        assert np.sqrt(np.mean((s - real) ** 2)) > 0.05
    # ...yet they look like the image: colour statistics stay close.
    assert abs(samples.mean() - real.mean()) < 0.15


def test_two_times_wider_sample_has_no_border_seams(pyramid):
    wide = pyramid.sample(4, seed=5, scale_h=2.0)
    assert wide.shape == (4, 43, 128, 3)

    def edge_energy(x):
        return np.abs(np.diff(x, axis=2)).mean(axis=(0, 1, 3))

    e = edge_energy(wide)
    border = np.concatenate([e[:5], e[-5:]]).mean()
    centre = e[20:-20].mean()
    assert 0.33 < border / centre < 3.0, (border, centre)
    # no constant/saturated band at the borders
    assert wide[:, :, :5].std() > 0.3 * wide[:, :, 20:-20].std()


def test_start_scale_keeps_the_layout(pyramid, trained_run):
    real = load_image(RunDir(trained_run).image_path)

    def dist(start):
        s = pyramid.sample(8, seed=2, start_scale=start)
        return float(np.mean((s - real[None]) ** 2))

    free = dist(0)
    assert dist(1) < 0.8 * free
    assert dist(pyramid.num_scales - 1) < 0.8 * free


def test_reload_reproduces_samples(pyramid, trained_run):
    again = load_pyramid(trained_run)
    np.testing.assert_array_equal(pyramid.sample(2, seed=9), again.sample(2, seed=9))
    assert not np.array_equal(pyramid.sample(2, seed=9), pyramid.sample(2, seed=10))


def test_injection_runs_the_finer_scales(pyramid, trained_run):
    real = load_image(RunDir(trained_run).image_path)
    out = pyramid.inject(real, scale=1, seed=0)
    assert out.shape == (1, 43, 64, 3)
    assert np.sqrt(np.mean((out[0] - real) ** 2)) < 0.2


def test_sample_cli_writes_pngs(trained_run, tmp_path):
    from PIL import Image

    from singan_tf.cli import command_main

    out = tmp_path / "s"
    code = command_main(
        "sample", [trained_run, "--num", "3", "--scale-h", "1.5", "--seed", "4", "--out", str(out)]
    )
    assert code == 0
    files = sorted(Path(out).glob("sample_*.png"))
    assert len(files) == 3
    assert Image.open(files[0]).size == (96, 43)
    assert (out / "contact_sheet.png").is_file()


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
    step, path = TrainStep(config, 32, "float32"), RandomPath()
    for n, size in enumerate(geometry.sizes):
        prev = tf.zeros((1, *size, 3))
        ScaleTrainer(config, n, ScaleData.of(n, reals[n], (prev, prev), 0.1), step, path).run(0, 2)
        path.append(build_generator(32), 0.1, size)
    assert len(geometry.sizes) == 3
    assert step._iteration.experimental_get_tracing_count() == 1
    assert step._critic_steps[True].experimental_get_tracing_count() == 1  # one trace for 3 steps
    assert step._generator_steps.experimental_get_tracing_count() == 1


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
        ls.minimize(tape, loss, [w], opt)

    step(tf.constant(np.inf, tf.float32))
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
    assert float(ls.scale.numpy()) == 4.0
    step(tf.constant(1.0))  # gradient 2w, unscaled: w - 0.5 * 2w = 0
    np.testing.assert_allclose(w.numpy(), [0.0, 0.0])
    assert float(ls.scale.numpy()) == 4.0 and int(ls.good_steps.numpy()) == 1
    step(tf.constant(1.0))
    assert float(ls.scale.numpy()) == 8.0 and int(ls.good_steps.numpy()) == 0


def test_the_next_width_is_traced_while_the_current_scale_trains(rocket, tmp_path, monkeypatch):
    """A scale that starts a new width finds its step traced: a second thread traced it during
    the scale before (after that scale's first iteration), and training is unchanged by it."""
    import threading

    from singan_tf.training import train_pyramid

    traced = []
    original = TrainStep.graph

    def graph(self):
        traced.append((self.channels, threading.current_thread().name))
        return original(self)

    monkeypatch.setattr(TrainStep, "graph", graph)
    config = TrainConfig(max_size=52, iters=3, channel_step=2, precision="float32", jit_compile="off")
    result = train_pyramid(config, rocket, tmp_path / "run", cache=None)
    assert [config.channels(n) for n in range(result.pyramid.geometry.num_scales)] == [32, 32, 64]
    assert traced == [(64, "trace-scale-2")]
    manifest = json.loads((tmp_path / "run" / "pyramid.json").read_text())
    assert all(np.isfinite(s["final"]["g_loss"]) for s in manifest["scales"])
