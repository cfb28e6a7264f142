"""First call per scale with an empty and with a filled XLA program cache.

Runs the same training command twice, one after the other, with a fresh
cache folder (``SINGAN_TF_CACHE_DIR``): the first run compiles every scale's
XLA program and keeps it (``runtime.enable_xla_cache``), the second loads
them. Reports each scale's first call (``pyramid.json``: ``first_call_s``),
each run's wall time, and the programs kept. The runtime choices are fixed
(``--jit on --cpu-threads tf --precision float32`` unless given), so both
runs trace the same steps and nothing is measured in between.

    python -m bench first-call [--image rocket] [--out FILE] [-- TRAIN OPTIONS]
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="rocket", help="a bench image's name, or a path")
    parser.add_argument("--out", default="bench/results/first_call.json")
    parser.add_argument("train", nargs="*", help=f"train options (default: {' '.join(DEFAULT_TRAIN)})")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="singan-first-call-"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "SINGAN_TF_CACHE_DIR": str(work / "cache")}
    env.pop("TF_XLA_FLAGS", None)
    env.pop("SINGAN_TF_XLA_CACHE", None)
    train = args.train or DEFAULT_TRAIN
    command = [sys.executable, "-m", "singan_tf.train", image_path(args.image), *train]
    runs = {}
    for name in ("cold", "warm"):
        out = work / name
        t0 = time.perf_counter()
        once = ["--out", str(out), "--no-progress", "--num-samples", "1"]
        subprocess.run([*command, *once], env=env, check=True)
        manifest = json.loads((out / "pyramid.json").read_text())
        runs[name] = {
            "wall_s": round(time.perf_counter() - t0, 1),
            "first_call_s": [s["first_call_s"] for s in manifest["scales"]],
            "scale_s": [s["seconds"] for s in manifest["scales"]],
            "sizes": [s["size"] for s in manifest["scales"]],
            "xla": [s["runtime"]["xla"] for s in manifest["scales"]],
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
