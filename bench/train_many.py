"""Images per hour of ``train-many``: local engine at 1 and 2 runs side by side, and Ray's local cluster.

Every configuration trains the same images with the same options into a
fresh batch folder. Per configuration: batch wall time, images per hour,
and the engine's overhead per run, which is split into

* process overhead: a run's wall time minus its training seconds (the
  scales' own time in pyramid.json): the training process's start-up
  (TensorFlow import, thread probe), writing samples;
* engine overhead: the batch's wall time minus the runs' wall times divided
  by the concurrency: starting the pool or the Ray cluster, scheduling.

    python -m bench train-many --images rocket china gravel hubble --configs local:1 local:2 ray:1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import image_path, machine_info, write_result


def run_config(engine: str, workers: int, images: list[str], train_args: list[str]) -> dict:
    from singan_tf import batch
    from singan_tf.rundir import RunDir

    out = Path(tempfile.mkdtemp(prefix=f"singan-many-{engine}{workers}-"))
    t0 = time.perf_counter()
    summary = batch.train_many(images, out, train_args, engine=engine, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    runs = []
    for entry in summary["runs"]:
        training = sum(s["seconds"] for s in RunDir(entry["run_dir"]).read_manifest()["scales"])
        runs.append(
            {
                "name": entry["name"],
                "status": entry["status"],
                "wall_s": entry["wall_s"],
                "training_s": training,
            }
        )
    concurrency = workers  # ray: each task declares cores // workers CPUs, so as many run at once
    done = [r for r in runs if r["status"] != "failed"]
    return {
        "engine": engine,
        "concurrent_runs": concurrency,
        "batch_wall_s": round(wall, 1),
        "images_per_hour": round(len(done) * 3600 / wall, 2),
        "process_overhead_s_per_run": round(sum(r["wall_s"] - r["training_s"] for r in done) / len(done), 1),
        "engine_overhead_s_per_run": round(
            (wall - sum(r["wall_s"] for r in runs) / concurrency) / len(runs), 1
        ),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=["rocket", "china", "gravel", "hubble"])
    parser.add_argument(
        "--configs", nargs="+", default=["local:1", "local:2", "ray:1"], help="ENGINE:WORKERS"
    )
    parser.add_argument("--train-args", default="--preset quick", help="train options of every run")
    parser.add_argument("--out", default="bench/results/train_many.json")
    args = parser.parse_args(argv)
    images = [image_path(name) for name in args.images]
    rows = []
    for config in args.configs:
        engine, _, workers = config.partition(":")
        row = run_config(engine, int(workers or 1), images, args.train_args.split())
        print(
            f"{engine} x{row['concurrent_runs']}: {row['images_per_hour']} images/h "
            f"(batch {row['batch_wall_s']} s; overhead per run: "
            f"process {row['process_overhead_s_per_run']} s, engine {row['engine_overhead_s_per_run']} s)"
        )
        rows.append(row)
    result = {
        "benchmark": "train_many",
        "machine": machine_info(),
        "images": args.images,
        "train_args": args.train_args,
        "configs": rows,
    }
    write_result(Path(args.out), result)
    return result
