"""Shared helpers of the benchmarks: machine info, analytic FLOPs, result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path


def git_commit() -> str:
    """The short hash of the checked-out code ("" outside a git checkout)."""
    try:
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        )
    except OSError:
        return ""
    return git.stdout.strip()


def machine_info() -> dict:
    """What the numbers were measured on."""
    import tensorflow as tf

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1) if mem_gib else None,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "commit": git_commit(),
    }


def conv_flops(
    h: int, w: int, channels: int, num_layers: int = 5, k: int = 3, out_last: int = 3, pad: bool = True
) -> int:
    """Multiply-add FLOPs (x2) of one forward pass of a 5-conv net on h x w.

    With ``pad`` (generator) the input is h+10 x w+10 and layer i outputs
    (h + 10 - 2i); without (critic) the input is h x w.
    """
    total = 0
    cin = 3
    size_h, size_w = (h + (k - 1) * num_layers, w + (k - 1) * num_layers) if pad else (h, w)
    for i in range(num_layers):
        cout = out_last if i == num_layers - 1 else channels
        size_h, size_w = size_h - (k - 1), size_w - (k - 1)
        total += 2 * k * k * cin * cout * max(size_h, 0) * max(size_w, 0)
        cin = cout
    return total


def conv_flops_per_iteration(config, sizes, scale: int) -> int:
    """Analytic conv FLOPs of one training iteration at ``scale``.

    Backward costs ~2x forward. Per critic step: G forward (fake), D forward
    + backward on real and fake, and the GP (D forward, double backward ~
    another 3 D passes). Per generator step: G forward + backward twice
    (fake and reconstruction) and D forward + backward on the fake. Plus one
    forward pass of every frozen coarser generator (the random ``prev``).
    """
    h, w = sizes[scale]
    ch = config.channels(scale)
    g = conv_flops(h, w, ch, config.num_layers, config.kernel_size, 3, pad=True)
    d = conv_flops(h, w, ch, config.num_layers, config.kernel_size, 1, pad=False)
    critic_step = g + 3 * d * 2  # + the GP on config.gp_steps only
    gp = 3 * d
    generator_step = 2 * 3 * g + 3 * d
    prev = sum(
        conv_flops(*sizes[m], config.channels(m), config.num_layers, config.kernel_size, 3, pad=True)
        for m in range(scale)
    )
    return (
        config.critic_steps * critic_step
        + len(config.gp_steps) * gp
        + config.generator_steps * generator_step
        + prev
    )


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
