"""Shared helpers of the benchmarks: machine info, the bench images, child processes, result files.

Light on purpose: the standard library only at module level (TensorFlow and
singan_tf are imported inside the functions that need them), so that
``torch_reference.py`` can use it in a venv with torch and numpy alone. The
helpers on run directories (train, score, compare) are in ``bench.rundirs``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
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

# The benchmarks time each step for at least this long (at most singan_tf.runtime.MAX_TIMED_ITERS
# iterations), longer than the tuner's probes: five coarse-scale iterations, about 0.6 s, read the
# same XLA step at 124 ms in one process and 88 ms in another on an AMD EPYC Zen 3
# (bench/README.md, the speed report at 8402b60).
MIN_TIMED_S = 2.0


def image_path(name_or_path: str) -> str:
    """A name of ``IMAGES`` as an absolute path; anything else is taken as a path."""
    return str(ROOT / IMAGES[name_or_path]) if name_or_path in IMAGES else name_or_path


def quiet_env() -> dict[str, str]:
    """This process's environment for a child that loads TensorFlow, without its start-up lines."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_timed(command: list[str]) -> tuple[float, float]:
    """Run ``command`` (with ``quiet_env``); its wall time (s) and its own peak RSS (MB).

    The peak is the child's alone (``os.wait4``), not the maximum over every child this
    process has had. Raises ``CalledProcessError`` when the command fails.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=quiet_env())
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, command)
    return wall, usage.ru_maxrss / 1024


def write_result(path: Path, result: dict) -> None:
    """``result`` as JSON at ``path`` (written to a temp name, then renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
