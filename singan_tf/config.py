"""Training configuration: one frozen dataclass with the paper's defaults.

Every run directory stores it as ``config.json``; the CLIs only parse their
arguments into it (``TrainConfig.from_preset(...).replace(**overrides)``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Literal

from singan_tf.errors import ConfigError

# mixed_float16 trains with dynamic loss scaling (training.LossScale; float16's range is small);
# bfloat16 has float32's range and needs none.
Precision = Literal["float32", "mixed_bfloat16", "mixed_float16", "auto"]
JitMode = Literal["auto", "on", "off"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one SinGAN training run (Shaham et al., 2019).

    The defaults are the paper's / reference code's numbers (docs/design.md
    §2-§4); ``preset="quick"`` shrinks image size and iterations so
    the bundled demo trains in minutes on two CPU cores.
    """

    # Pyramid (docs/design.md §2).
    max_size: int = 250
    min_size: int = 25
    scale_factor: float = 0.75
    # Networks (§3): width doubles every channel_step (4) scales, capped.
    base_channels: int = 32
    max_channels: int = 128
    channel_step: int = 4
    num_layers: int = 5
    kernel_size: int = 3
    # Losses (§4).
    alpha: float = 10.0  # reconstruction weight
    gp_weight: float = 0.1  # WGAN-GP lambda
    # Gradient penalty on every k-th critic step of an iteration (0, k, 2k, ...),
    # weighted so its mean weight per critic step stays gp_weight ("lazy"
    # regularisation; 1 = every step, as in the paper).
    gp_every: int = 1
    noise_amp_factor: float = 0.1  # amp_n = factor * RMSE(x_n, up(rec_{n-1}))
    # Optimisation (§4).
    iters: int = 2000  # iterations at the coarsest scale (every scale, in the paper)
    # Iterations at scale n: iters * iters_decay**n (1 = the paper's flat
    # schedule). Below 1, coarse scales, which set the global layout and cost
    # little, train longer than the expensive finest ones.
    iters_decay: float = 1.0
    critic_steps: int = 3
    generator_steps: int = 3
    lr_g: float = 5e-4
    lr_d: float = 5e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    lr_milestone: float = 0.8  # fraction of a scale's iters after which lr *= lr_gamma
    lr_gamma: float = 0.1
    # Scales trained at once (Hinz et al., ConSinGAN, WACV 2021): 2 trains G_{n-1} along with
    # G_n at scale n, through scale n's losses, at concurrent_lr times G_n's learning rate.
    # 1 = the paper's: each scale trains against a frozen coarser pyramid.
    concurrent: int = 1
    concurrent_lr: float = 0.1
    # Execution.
    seed: int = 0
    jit_compile: JitMode = "auto"
    precision: Precision = "float32"
    deterministic: bool = False  # TF op determinism (bitwise-reproducible on CPU)
    log_every: int = 25  # iterations between loss read-outs (host sync)
    checkpoint_every: int = 100  # iterations between mid-scale checkpoints
    preset: str = "paper"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Reject values that cannot train, with the option's CLI name."""
        checks = [
            (self.iters >= 1, "--iters must be >= 1"),
            (0.0 < self.iters_decay <= 1.0, "--iters-decay must be in (0, 1]"),
            (0.0 < self.scale_factor < 1.0, "--scale-factor must be in (0, 1)"),
            (self.min_size >= 11, "--min-size must be >= 11 (the nets' receptive field)"),
            (self.max_size >= self.min_size, "--max-size must be >= --min-size"),
            (self.alpha >= 0.0, "--alpha must be >= 0"),
            (self.gp_weight >= 0.0, "gp_weight must be >= 0"),
            (self.gp_every >= 1, "gp_every must be >= 1"),
            (self.critic_steps >= 1 and self.generator_steps >= 1, "step counts must be >= 1"),
            (self.lr_g > 0 and self.lr_d > 0, "learning rates must be > 0"),
            (0.0 < self.lr_milestone <= 1.0, "lr_milestone must be in (0, 1]"),
            (self.concurrent in (1, 2), "--concurrent must be 1 or 2"),
            (0.0 < self.concurrent_lr <= 1.0, "--concurrent-lr must be in (0, 1]"),
            (self.num_layers >= 2, "num_layers must be >= 2"),
            (
                self.channel_step >= 1 and self.base_channels >= 1,
                "channel_step and base_channels must be >= 1",
            ),
            (self.kernel_size % 2 == 1, "kernel_size must be odd"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.checkpoint_every >= 1, "--checkpoint-every must be >= 1"),
            (self.jit_compile in ("auto", "on", "off"), "--jit must be auto, on or off"),
            (
                self.precision in ("float32", "mixed_bfloat16", "mixed_float16", "auto"),
                "--precision must be float32, mixed_bfloat16, mixed_float16 or auto",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    # Derived quantities, each a paper formula pinned by tests.
    def channels(self, scale: int) -> int:
        """Width at scale n: ``min(32 * 2**floor(n / 4), 128)`` (base, step and cap are fields)."""
        return min(self.base_channels * 2 ** (scale // self.channel_step), self.max_channels)

    @property
    def receptive_field(self) -> int:
        """Receptive field of G and D: every valid conv adds ``k - 1``."""
        return self.num_layers * (self.kernel_size - 1) + 1

    @property
    def pad(self) -> int:
        """Zero padding per side of the generator input (5 for 5 3x3 convs)."""
        return self.num_layers * (self.kernel_size - 1) // 2

    def scale_iters(self, scale: int) -> int:
        """Iterations at scale n: ``round(iters * iters_decay**n)``, at least 1."""
        return max(1, round(self.iters * self.iters_decay**scale))

    def trains_coarser(self, scale: int) -> bool:
        """Whether scale n trains G_{n-1} along with G_n (``concurrent``; not at scale 0)."""
        return self.concurrent > 1 and scale > 0

    def coarser_channels(self, scale: int) -> int | None:
        """The width of G_{n-1} where scale n trains it too (``trains_coarser``), else None."""
        return self.channels(scale - 1) if self.trains_coarser(scale) else None

    def lr_milestone_iter(self, scale: int = 0) -> int:
        """Iteration of scale n at which the learning rates drop (80% of its iterations)."""
        return max(1, math.ceil(self.lr_milestone * self.scale_iters(scale)))

    def learning_rate(self, base: float, iteration: int, scale: int = 0) -> float:
        """Learning rate at a given iteration (0-based) of scale n."""
        return base * (self.lr_gamma if iteration >= self.lr_milestone_iter(scale) else 1.0)

    @property
    def gp_steps(self) -> list[int]:
        """Critic steps of an iteration that apply the gradient penalty."""
        return list(range(0, self.critic_steps, self.gp_every))

    @property
    def gp_step_weight(self) -> float:
        """GP weight on those steps: gp_weight * critic_steps / len(gp_steps)."""
        return self.gp_weight * self.critic_steps / len(self.gp_steps)

    def differences(self, other: TrainConfig) -> list[str]:
        """Fields that change the trained model (so a resumed run must keep them)."""
        return [
            f.name
            for f in dataclasses.fields(self)
            if f.name not in RUNTIME_FIELDS and getattr(self, f.name) != getattr(other, f.name)
        ]

    # Serialisation.
    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TrainConfig:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], "preset": name, **overrides})


# The train CLI's option for each config field it sets (error messages name options, not fields).
OPTION_NAMES = {
    "max_size": "--max-size",
    "min_size": "--min-size",
    "scale_factor": "--scale-factor",
    "iters": "--iters",
    "iters_decay": "--iters-decay",
    "concurrent": "--concurrent",
    "concurrent_lr": "--concurrent-lr",
    "alpha": "--alpha",
    "seed": "--seed",
    "jit_compile": "--jit",
    "precision": "--precision",
    "checkpoint_every": "--checkpoint-every",
    "deterministic": "--deterministic",
}


def option_name(field: str) -> str:
    """How the user names a config field: its train option, or the field itself."""
    return OPTION_NAMES.get(field, field)


# Fields that only change how training runs, not what it computes; a resumed
# run may change them. (jit_compile changes the noise stream's order, not its
# distribution: XLA and plain kernels order Philox output differently.)
RUNTIME_FIELDS = frozenset({"log_every", "checkpoint_every", "jit_compile", "preset"})

# "quick" trains the bundled image in about three minutes on 2 CPU cores: a
# small finest scale (4 scales for the bundled image, all 32 channels wide)
# and a fifth of the iterations.
#
# "fast" is the best of the 250-px quality/time sweep that trains within 15
# minutes on 2 CPU cores (bench/README.md, bench/results/preset_sweep_250.json):
# the paper's pyramid and losses, 32 channels at every scale instead of up
# to 128, 1000 iterations at the coarsest scale falling by 0.8x per scale
# (210 at the 8th: the coarse scales that set the layout train longest, the
# fine ones, which only add texture, train shortest), and the precision
# measured fastest on the machine (``auto``). Since 2026-12-03 it also trains
# G_{n-1} along with G_n (``concurrent = 2``, ConSinGAN's lever): on china.jpg
# and the Hubble deep field at 250 px it took the worst band-pass SWD band
# from 1.44x and 1.40x the 400-iteration paper preset's (three seeds) to
# 0.99x and 1.01x (two seeds each), diversity 0.89x and 1.02x, for ~1.2-1.3x the time
# (lscpu "AMD EPYC", Zen 3: against the plain preset in the same run, at
# 128 px; bench/README.md, "--concurrent 2 at 250 px"); on the bundled rocket,
# three seeds of each, its worst band is 0.73x the anchor's, diversity 0.89x; on
# scikit-image's gravel (two seeds, one anchor) 0.49x, diversity 0.98x; against
# two anchor seeds, on china 0.81x, diversity 0.90x, on the Hubble deep field
# 0.97x, diversity 1.00x (Intel Xeon with AMX, 2026-12-05).
# The bundled image trains in 11.7 min on an Intel Xeon with AMX (lscpu
# "Intel(R) Xeon(R) Processor", 2026-12-04, bfloat16; the anchor 24.5 min; wall
# times, no PyTorch run beside them); before concurrent training, ~10 min on an
# AMD EPYC Zen 4 and 13.5 min on that Xeon (README.md).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": {"max_size": 80, "iters": 400},
    "fast": {"max_channels": 32, "iters": 1000, "iters_decay": 0.8, "precision": "auto", "concurrent": 2},
}
