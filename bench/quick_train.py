"""Wall time, peak memory and quality of a full quick-preset training run.

Trains the bundled image with ``--preset quick`` in a subprocess (so its
peak RSS is measured alone), then scores it with ``singan_tf.evaluate``.

    python -m bench quick-train
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_info, write_result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--num", type=int, default=50, help="samples scored")
    parser.add_argument("--out", default="bench/results/quick_train.json")
    args = parser.parse_args(argv)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = Path(tempfile.mkdtemp(prefix="singan-quick-")) / "run"
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "singan_tf.train",
            "--preset",
            args.preset,
            "--out",
            str(run),
            "--no-progress",
        ],
        check=True,
        env=env,
    )
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    metrics = run / "eval" / "metrics.json"
    subprocess.run(
        [sys.executable, "-m", "singan_tf.evaluate", str(run), "--num", str(args.num), "--out", str(metrics)],
        check=True,
        env=env,
    )
    manifest = json.loads((run / "pyramid.json").read_text())
    result = {
        "benchmark": "quick_train",
        "preset": args.preset,
        "machine": machine_info(),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "scales": [
            {"size": s["size"], "channels": s["channels"], "seconds": s["seconds"]}
            for s in manifest["scales"]
        ],
        "metrics": json.loads(metrics.read_text()),
        "run_dir": str(run),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    write_result(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
