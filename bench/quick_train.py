"""Wall time, peak memory and quality of a full quick-preset training run.

Trains the bundled image with ``--preset quick`` in a subprocess (so its
peak RSS is measured alone), then scores it with ``singan_tf.evaluation.evaluate``.

    python -m bench quick-train
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.common import machine_info, run_timed, write_result
from bench.rundirs import evaluate_run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--num", type=int, default=50, help="samples scored")
    parser.add_argument("--out", default="bench/results/quick_train.json")
    args = parser.parse_args(argv)
    from singan_tf.rundir import RunDir

    run = Path(tempfile.mkdtemp(prefix="singan-quick-")) / "run"
    command = [sys.executable, "-m", "singan_tf.train", "--preset", args.preset, "--out", str(run)]
    wall, peak_mb = run_timed([*command, "--no-progress"])
    manifest = RunDir(run).read_manifest()
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
        "metrics": evaluate_run(run, args.num),
        "run_dir": str(run),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    write_result(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
