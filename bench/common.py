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
    """What the numbers were measured on (the CPU model as lscpu names it)."""
    import tensorflow as tf

    from singan_tf.runtime import cpu_flags, cpu_model

    cpu = cpu_model()
    features = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"})
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_features": features,  # what decides bfloat16's speed
        "memory_gib": round(mem_gib, 1) if mem_gib else None,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "commit": git_commit(),
    }


# The images the fast preset is judged on: different characters, all openly licensed
# (bench/images/ATTRIBUTION.md; the first two ship with singan_tf as its bundled images).
IMAGES = {
    "rocket": "singan_tf/data/rocket.jpg",  # objects against a night sky, lights
    "china": "bench/images/china.jpg",  # a landscape: pagoda, trees, water, sky
    "gravel": "bench/images/gravel.png",  # a stochastic texture (grayscale)
    "hubble": "singan_tf/data/hubble_deep_field.jpg",  # many small sources on black
}
ROOT = Path(__file__).resolve().parent.parent


def image_path(name_or_path: str) -> str:
    """A name of ``IMAGES`` as an absolute path; anything else is taken as a path."""
    return str(ROOT / IMAGES[name_or_path]) if name_or_path in IMAGES else name_or_path


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
