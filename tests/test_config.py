import json

import pytest

from singan_tf.config import PRESETS, TrainConfig
from singan_tf.errors import ConfigError


def test_defaults_are_the_papers():
    c = TrainConfig()
    assert (c.max_size, c.min_size, c.scale_factor) == (250, 25, 0.75)
    assert (c.alpha, c.gp_weight, c.noise_amp_factor) == (10.0, 0.1, 0.1)
    assert (c.iters, c.critic_steps, c.generator_steps) == (2000, 3, 3)
    assert (c.lr_g, c.lr_d, c.beta_1, c.beta_2) == (5e-4, 5e-4, 0.5, 0.999)
    assert (c.num_layers, c.kernel_size) == (5, 3)
    assert c.precision == "float32"
    assert c.concurrent == 1 and not any(c.trains_coarser(n) for n in range(9))  # one scale at a time


@pytest.mark.parametrize(
    ("scale", "channels"),
    [(0, 32), (3, 32), (4, 64), (7, 64), (8, 128), (11, 128), (12, 128), (20, 128)],
)
def test_width_doubles_every_four_scales_capped_at_128(scale, channels):
    assert TrainConfig().channels(scale) == channels


def test_width_schedule_fields():
    wide_late = TrainConfig(max_channels=64, channel_step=6)  # 32 up to scale 5, then 64
    assert [wide_late.channels(n) for n in range(9)] == [32] * 6 + [64] * 3
    assert TrainConfig(max_channels=32).channels(8) == 32


def test_receptive_field_and_padding():
    c = TrainConfig()
    assert c.receptive_field == 11
    assert c.pad == 5


def test_lr_milestone_is_80_percent_of_iterations():
    c = TrainConfig()
    assert c.lr_milestone_iter() == 1600  # the reference's fixed milestone at 2000 iterations
    assert c.learning_rate(5e-4, 1599) == pytest.approx(5e-4)
    assert c.learning_rate(5e-4, 1600) == pytest.approx(5e-5)
    q = TrainConfig(iters=400)
    assert q.lr_milestone_iter() == 320


def test_iteration_schedule_decays_per_scale():
    paper = TrainConfig()
    assert [paper.scale_iters(n) for n in range(9)] == [2000] * 9  # the paper's flat schedule
    c = TrainConfig(iters=800, iters_decay=0.5)
    assert [c.scale_iters(n) for n in range(4)] == [800, 400, 200, 100]
    assert c.scale_iters(30) == 1  # never zero
    # Each scale's learning rate drops at 80% of its own iterations.
    assert [c.lr_milestone_iter(n) for n in range(3)] == [640, 320, 160]
    assert c.learning_rate(5e-4, 159, scale=2) == pytest.approx(5e-4)
    assert c.learning_rate(5e-4, 160, scale=2) == pytest.approx(5e-5)


def test_json_round_trip():
    c = TrainConfig.from_preset("quick", seed=7)
    again = TrainConfig.from_dict(json.loads(c.to_json()))
    assert again == c
    assert again.preset == "quick" and again.seed == 7


def test_presets():
    assert TrainConfig.from_preset("paper") == TrainConfig()
    quick = TrainConfig.from_preset("quick")
    assert quick.max_size == PRESETS["quick"]["max_size"] < 250
    assert quick.iters < 2000
    fast = TrainConfig.from_preset("fast")
    # The paper's pyramid and losses; thinner nets, fewer iterations, the machine's precision.
    assert (fast.max_size, fast.min_size, fast.scale_factor) == (250, 25, 0.75)
    assert (fast.alpha, fast.gp_weight, fast.gp_every, fast.critic_steps) == (10.0, 0.1, 1, 3)
    assert [fast.channels(n) for n in range(9)] == [32] * 9
    assert (fast.iters, fast.iters_decay, fast.precision) == (1000, 0.8, "auto")
    # G_{n-1} trains along with G_n at a tenth of the rate (ConSinGAN); not at scale 0.
    assert (fast.concurrent, fast.concurrent_lr) == (2, 0.1)
    assert [fast.trains_coarser(n) for n in (0, 1, 7)] == [False, True, True]
    # Coarse scales train longest: 1000 iterations at scale 0, 210 at scale 7 (a 250-px pyramid's finest).
    assert [fast.scale_iters(n) for n in (0, 1, 4, 7)] == [1000, 800, 410, 210]
    assert TrainConfig.from_preset("fast", iters=800).iters == 800  # options still override
    with pytest.raises(ConfigError, match="unknown preset"):
        TrainConfig.from_preset("nope")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"iters": 0}, "--iters"),
        ({"iters": -5}, "--iters"),
        ({"iters_decay": 0.0}, "--iters-decay"),
        ({"iters_decay": 1.5}, "--iters-decay"),
        ({"scale_factor": 1.0}, "--scale-factor"),
        ({"scale_factor": 0.0}, "--scale-factor"),
        ({"min_size": 300}, "--max-size must be >= --min-size"),
        ({"min_size": 5}, "--min-size"),
        ({"alpha": -1.0}, "--alpha"),
        ({"precision": "float64"}, "--precision"),
        ({"precision": "float16"}, "--precision must be float32, mixed_bfloat16, mixed_float16 or auto"),
        ({"concurrent": 3}, "--concurrent must be 1 or 2"),
        ({"concurrent_lr": 0.0}, "--concurrent-lr"),
    ],
)
def test_invalid_values_rejected_up_front(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**change)


def test_unknown_keys_rejected():
    with pytest.raises(ConfigError, match="unknown config keys: bogus"):
        TrainConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize(
    "critic_steps, gp_every, steps, weight",
    [(3, 1, [0, 1, 2], 0.1), (3, 2, [0, 2], 0.15), (3, 3, [0], 0.3), (3, 7, [0], 0.3), (4, 2, [0, 2], 0.2)],
)
def test_lazy_gradient_penalty_keeps_its_mean_weight(critic_steps, gp_every, steps, weight):
    c = TrainConfig(critic_steps=critic_steps, gp_every=gp_every)
    assert c.gp_steps == steps
    assert c.gp_step_weight == pytest.approx(weight)
    assert c.gp_step_weight * len(c.gp_steps) == pytest.approx(c.gp_weight * critic_steps)


def test_concurrent_training_starts_at_scale_1_and_has_its_own_timings():
    from singan_tf.runtime import Choice, timing_key

    c = TrainConfig(concurrent=2)
    assert [c.trains_coarser(n) for n in range(3)] == [False, True, True]
    assert c.concurrent_lr == 0.1  # ConSinGAN's rate for the stage below the newest
    sizes, choice = [(25, 34), (33, 45), (44, 60)], Choice("float32", False)
    plain, concurrent = (
        [timing_key(cfg, sizes, n, choice, (1, 2)) for n in range(3)] for cfg in (TrainConfig(), c)
    )
    assert plain[0] == concurrent[0]  # scale 0 trains alone either way
    assert plain[1] != concurrent[1] and plain[2] != concurrent[2]
