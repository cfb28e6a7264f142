"""First call per scale: with an empty and a filled XLA program cache, with and without
compiling the next scale's program ahead.

Runs the same training command several times, one after the other (``--runs``):

* ``cold``: a fresh cache folder (``SINGAN_TF_CACHE_DIR``); every scale's XLA program is
  compiled (the next scale's while a scale trains, ``_Session.prepare_ahead``) and kept
  (``runtime.enable_xla_cache``);
* ``warm``: the same folder again, so the programs are loaded;
* ``cold-not-ahead``: another fresh folder and ``SINGAN_TF_COMPILE_AHEAD=0``: every scale
  compiles its own program when it starts.

Reports each scale's first call (``pyramid.json``: ``first_call_s``; a wait for the
program compiled ahead counts), each scale's and run's wall time, and the programs kept.
The runtime choices are fixed (``--jit on --cpu-threads tf --precision float32`` unless
given), so every run traces the same steps and nothing is measured in between. With the
default 10 iterations per scale nothing is left to overlap a compile; give the preset's
own schedule (or ``--iters 300``) to see what compiling ahead saves.

    python -m bench first-call [--image rocket] [--runs cold,warm] [--out FILE] [-- TRAIN OPTIONS]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import image_path, machine_info, write_result

DEFAULT_TRAIN = ["--preset", "fast", "--iters", "10", "--jit", "on", "--cpu-threads", "tf"]
DEFAULT_TRAIN += ["--precision", "float32"]
RUNS = {  # name: (cache folder, compile ahead)
    "cold": ("cache", True),
    "warm": ("cache", True),
    "cold-not-ahead": ("cache-not-ahead", False),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="rocket", help="a bench image's name, or a path")
    parser.add_argument("--out", default="bench/results/first_call.json")
    parser.add_argument("--runs", default="cold,warm", help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("train", nargs="*", help=f"train options (default: {' '.join(DEFAULT_TRAIN)})")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="singan-first-call-"))
    names = args.runs.split(",")
    if not set(names) <= set(RUNS):
        parser.error(f"--runs: choose from {', '.join(RUNS)}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for name in ("TF_XLA_FLAGS", "SINGAN_TF_XLA_CACHE", "SINGAN_TF_COMPILE_AHEAD"):
        env.pop(name, None)
    train = args.train or DEFAULT_TRAIN
    command = [sys.executable, "-m", "singan_tf.train", image_path(args.image), *train]
    runs = {}
    for name in names:
        folder, ahead = RUNS[name]
        out = work / name
        t0 = time.perf_counter()
        once = ["--out", str(out), "--no-progress", "--num-samples", "1"]
        run_env = {**env, "SINGAN_TF_CACHE_DIR": str(work / folder)}
        run_env["SINGAN_TF_COMPILE_AHEAD"] = str(int(ahead))
        subprocess.run([*command, *once], env=run_env, check=True)
        manifest = json.loads((out / "pyramid.json").read_text())
        runs[name] = {
            "wall_s": round(time.perf_counter() - t0, 1),
            "first_call_s": [s["first_call_s"] for s in manifest["scales"]],
            "scale_s": [s["seconds"] for s in manifest["scales"]],
            "sizes": [s["size"] for s in manifest["scales"]],
            "xla": [s["runtime"]["xla"] for s in manifest["scales"]],
            "compiled_ahead": [s.get("compiled_ahead", False) for s in manifest["scales"]],
        }
    programs = list((work / "cache" / "xla").glob("*/*.pb"))
    result = {
        "benchmark": "first_call",
        "machine": machine_info(),
        "command": [Path(image_path(args.image)).name, *train],
        **runs,
        "first_call_total_s": {k: round(sum(r["first_call_s"]), 1) for k, r in runs.items()},
        "programs": len(programs),
        "programs_mb": round(sum(p.stat().st_size for p in programs) / 2**20, 1),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    write_result(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
