"""Training many images: one run directory per image, a pool of processes or a Ray cluster.

A SinGAN is trained per image, so a batch is a set of independent runs.
Each run is one ``python -m singan_tf.train IMAGE --out RUNS/NAME`` process
(``run_one``): it checks its image and options in a fraction of a second,
trains with the usual progress log and checkpoints, and resumes through the
run directory's own resume contract (docs/design.md §8.1). The engines only
decide where those processes run:

* ``local``: a pool of ``workers`` threads on this machine, each starting
  one training process at a time, pinned to its share of the cores;
* ``ray``: each run is a Ray task with declared CPUs (and a GPU where the
  cluster has one), retried when its worker dies; a retry resumes the run
  from its last checkpoint, so it loses at most the iterations since then.
  RUNS and the images must be at the same path on every node (a shared
  file system).

A second call with the same RUNS skips finished runs and resumes unfinished
ones; a bad image fails its own run (one line in the summary), never the
batch. The driver imports neither TensorFlow nor Ray unless asked to.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from singan_tf.config import OPTION_NAMES
from singan_tf.errors import ConfigError, InputError
from singan_tf.images import atomic_write_bytes
from singan_tf.preflight import manifest_path, read_manifest

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
NAMES_FILE = "batch.json"  # image -> run name, so a second call finds the same runs
SUMMARY_FILE = "summary.json"
RAY_RETRIES = 3  # a run's Ray task is retried this often when its worker dies
EXIT_PARTIAL = 3  # train-many's exit code when some runs failed
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} runs [{elapsed}<{remaining}{postfix}]"


@dataclasses.dataclass(frozen=True)
class BatchRun:
    """One image of a batch and the run directory it trains into."""

    image: str
    name: str
    run_dir: str


# -- the batch's images and runs -------------------------------------------------
def find_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files from paths and folders (a folder: its image files, sorted, not recursive).

    A path that is not an image stays in the list: its run fails with the
    training command's own one-line error.
    """
    images: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            images.append(item)
    if not images:
        raise InputError(f"no images in {', '.join(map(str, inputs)) or 'the arguments'}")
    return list(dict.fromkeys(p.absolute() for p in images))


def _run_name(stem: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("._-") or "image"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    return name


def plan_runs(images: Sequence[Path], out: str | os.PathLike) -> list[BatchRun]:
    """One run directory per image under ``out``, named after the file (made unique).

    Names are kept in ``out/batch.json``, so a later call (with the same or
    more images) maps every image to the run it trained before.
    """
    out = Path(out).absolute()  # the same path for every worker (a Ray node has its own cwd)
    names_path = out / NAMES_FILE
    names: dict[str, str] = json.loads(names_path.read_text()) if names_path.is_file() else {}
    taken = set(names.values())
    for image in images:
        if str(image) not in names:
            names[str(image)] = _run_name(image.stem, taken)
            taken.add(names[str(image)])
    atomic_write_bytes(names_path, (json.dumps(names, indent=2, sort_keys=True) + "\n").encode())
    return [BatchRun(str(image), names[str(image)], str(out / names[str(image)])) for image in images]


def train_arguments(preset: str | None = None, **overrides: Any) -> list[str]:
    """``train`` options for config fields, e.g. ``(preset="quick", iters=50)``."""
    unknown = sorted(set(overrides) - set(OPTION_NAMES))
    if unknown:
        raise ConfigError(f"not train options: {', '.join(unknown)} (known: {', '.join(OPTION_NAMES)})")
    args = ["--preset", preset] if preset else []
    for field, value in overrides.items():
        if isinstance(value, bool):
            args += [OPTION_NAMES[field]] if value else []
        elif value is not None:
            args += [OPTION_NAMES[field], str(value)]
    return args


def _progress(run_dir: str | os.PathLike) -> tuple[int, int] | None:
    """(finished scales, scales) of a run directory, or None where there is no run (yet)."""
    if not manifest_path(run_dir).is_file():
        return None
    try:
        manifest = read_manifest(run_dir)
    except InputError:
        return None
    return len(manifest["scales"]), len(manifest["geometry"]["sizes"])


# -- one run: the unit both engines execute ---------------------------------------
def _error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    return (errors or lines or ["failed without a message"])[-1]


def _child_setup(cpus: Sequence[int] | None) -> Callable[[], None]:
    def setup() -> None:
        if sys.platform.startswith("linux"):  # the training process dies with its worker
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


def _thread_option(share: int | None, pinned: bool) -> list[str]:
    """The training process's ``--cpu-threads`` for its share of the cores.

    One core: one thread. Several cores it is pinned to: ``auto`` measures within them. Several
    cores it is not pinned to (a Ray task): one thread per op, ``share`` ops at a time, what
    ``auto`` chose for the quick preset on 2 cores (``2,1`` trained it 2.4x slower).
    """
    if not share:
        return []
    if share == 1:
        return ["--cpu-threads", "1,1"]
    return [] if pinned else ["--cpu-threads", f"1,{share}"]


def run_one(
    run: BatchRun,
    train_args: Sequence[str] = (),
    cpus: Sequence[int] | None = None,
    evaluate: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train (or resume, or skip) one run of a batch in a ``singan_tf.train`` process.

    Args:
        run: the image and its run directory.
        train_args: ``train`` options (``train_arguments``).
        cpus: cores to pin the process to (its ``--cpu-threads`` is sized to them).
        evaluate: score the finished run on this many samples (``singan_tf.evaluate``).
        threads: threads per op without pinning (a Ray task's CPUs); with neither, the
            process decides (``--cpu-threads auto``).

    Returns:
        The run's summary entry: image, name, run_dir, status (``finished``,
        ``resumed``, ``skipped`` or ``failed``), error, wall_s, scales and, with
        ``evaluate``, patch_swd, bandpass_swd and diversity.
    """
    t0 = time.perf_counter()
    entry: dict[str, Any] = {**dataclasses.asdict(run), "error": None}
    before = _progress(run.run_dir)
    if before is not None and before[0] == before[1]:
        entry["status"] = "skipped"
    else:
        command = [sys.executable, "-m", "singan_tf.train", run.image, "--out", run.run_dir, "--no-progress"]
        command += [*(["--resume"] if before is not None else []), *train_args]
        command += _thread_option(len(cpus) if cpus else threads, pinned=bool(cpus))
        log_path = Path(run.run_dir).parent / "logs" / f"{run.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log_file:
            log_file.write(f"$ {' '.join(command)}\n")
            log_file.flush()
            proc = subprocess.run(
                command, stdout=log_file, stderr=subprocess.PIPE, text=True, preexec_fn=_child_setup(cpus)
            )
            log_file.write(proc.stderr)
        if proc.returncode != 0:
            entry.update(status="failed", error=_error_line(proc.stderr))
        else:
            entry["status"] = "resumed" if before is not None else "finished"
    progress = _progress(run.run_dir)
    entry["scales"] = progress[1] if progress else None
    if entry["status"] != "failed" and evaluate:
        entry.update(_evaluate(run, evaluate))
    entry["wall_s"] = round(time.perf_counter() - t0, 1)
    return entry


def _evaluate(run: BatchRun, num: int) -> dict[str, Any]:
    out = Path(run.run_dir) / "eval" / f"batch_num{num}.json"
    if not out.is_file():
        command = [
            sys.executable,
            "-m",
            "singan_tf.evaluate",
            run.run_dir,
            "--num",
            str(num),
            "--out",
            str(out),
        ]
        proc = subprocess.run(command, capture_output=True, text=True, preexec_fn=_child_setup(None))
        if proc.returncode != 0:
            return {"error": f"evaluate: {_error_line(proc.stderr)}"}
    report = json.loads(out.read_text())
    return {k: report[k] for k in ("patch_swd", "bandpass_swd", "diversity")}


def _cores() -> list[int]:
    """The cores this process may run on (its affinity mask), as ``runtime.core_count`` counts them."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


# -- engines -----------------------------------------------------------------------
def default_workers(cores: int) -> int:
    """Runs side by side on ``cores`` cores: one per core.

    Measured on 2 cores (bench/README.md, "Many images"): two quick-preset
    runs side by side, one core each, trained 14% more images per hour than
    one run at a time with both cores (a scale's ops are small, so a second
    thread per op adds less than a second run does).
    """
    return max(1, cores)


def _run_local(runs, unit: Callable[..., dict], workers: int, on_result: Callable[[dict], None]) -> None:
    cores = _cores()
    share = max(1, len(cores) // workers)
    slots: queue.Queue = queue.Queue()
    for k in range(workers):  # each worker its own cores; with one worker, the process decides
        slots.put(None if workers == 1 else cores[k * share : (k + 1) * share])

    def job(run: BatchRun) -> dict:
        cpus = slots.get()
        try:
            return unit(run, cpus=cpus)
        finally:
            slots.put(cpus)

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(job, run) for run in runs]
        for future in concurrent.futures.as_completed(futures):
            on_result(future.result())


def _run_ray(
    runs, unit: _Unit, address: str | None, cpus_per_run: int, on_result: Callable[[dict], None]
) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'singan-tf[ray]'") from None
    ray.init(address=address, log_to_driver=False, include_dashboard=False, configure_logging=False)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus, max_retries=RAY_RETRIES)(run_one)
        pending = {task.remote(run, unit.train_args, None, unit.evaluate, cpus_per_run): run for run in runs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                run = pending.pop(ref)
                try:
                    on_result(ray.get(ref))
                except ray.exceptions.RayError as err:  # retries used up
                    on_result(
                        {
                            **dataclasses.asdict(run),
                            "status": "failed",
                            "error": f"ray: {err}".splitlines()[0],
                        }
                    )
    finally:
        ray.shutdown()


# -- the batch ---------------------------------------------------------------------
class _Progress:
    """One bar for the batch (runs done of total, ETA), with each active run's scale."""

    def __init__(self, runs: Sequence[BatchRun], enabled: bool):
        self.runs, self.done = runs, set()
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=len(runs),
                desc="train-many",
                bar_format=BAR_FORMAT,
            )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        if self.bar is not None:
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(2.0):
            self.refresh()

    def refresh(self) -> None:
        active, fraction = [], 0.0
        for run in self.runs:
            if run.name in self.done:
                continue
            progress = _progress(run.run_dir)
            if progress and progress[0] < progress[1]:
                active.append(f"{run.name} {progress[0]}/{progress[1]}")
                fraction += progress[0] / progress[1]
        if self.bar is not None:
            self.bar.n = len(self.done) + fraction
            self.bar.set_postfix_str(
                ", ".join(active[:3]) + (" ..." if len(active) > 3 else ""), refresh=False
            )
            self.bar.refresh()

    def finished(self, entry: dict) -> None:
        self.done.add(entry["name"])
        message = f"{entry['name']}: {entry['status']}" + (
            f" ({entry['error']})" if entry.get("error") else ""
        )
        if self.bar is not None:
            self.bar.write(message)
            self.refresh()
        else:
            log.info("%s", message)

    def close(self) -> None:
        self._stop.set()
        if self.bar is not None:
            self.bar.close()


def train_many(
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    train_args: Sequence[str] = (),
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    evaluate: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one SinGAN per image into ``out/NAME``; resumable as a whole.

    Args:
        images: image files and folders of images.
        out: the batch folder: one run directory per image, ``batch.json``
            (image -> run name), ``summary.json``, ``logs/NAME.log``.
        train_args: ``train`` options for every run (``train_arguments``
            builds them from config fields).
        engine: ``local`` (a process pool on this machine) or ``ray``.
        workers: runs side by side (default ``default_workers``: one per core); a Ray
            task declares cores / workers of this machine's CPUs.
        address: a Ray cluster to join (``ray start --head`` prints it); None
            starts a local one.
        evaluate: score each finished run on this many samples (0: no).
        progress: a progress bar (else one log line per finished run).

    Returns:
        The summary: ``runs`` (one entry per image, see ``run_one``),
        ``counts`` by status, ``wall_s``; also written to ``out/summary.json``.
    """
    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be local or ray, got {engine!r}")
    if workers is not None and workers < 1:
        raise ConfigError("--workers must be >= 1")
    t0 = time.perf_counter()
    runs = plan_runs(find_images(images), out)
    cores = len(_cores())
    workers = workers or default_workers(cores)
    entries: dict[str, dict] = {}
    bar = _Progress(runs, progress)

    def on_result(entry: dict) -> None:
        entries[entry["name"]] = entry
        bar.finished(entry)

    unit = _Unit(list(train_args), evaluate)
    try:
        if engine == "local":
            _run_local(runs, unit, min(workers, len(runs)), on_result)
        else:
            _run_ray(runs, unit, address, max(1, cores // workers), on_result)
    finally:
        bar.close()
    return _summary(out, [entries[run.name] for run in runs if run.name in entries], t0)


@dataclasses.dataclass(frozen=True)
class _Unit:
    """``run_one`` with the batch's options: a picklable callable for process pools and Ray."""

    train_args: list[str]
    evaluate: int

    def __call__(self, run: BatchRun, cpus: Sequence[int] | None = None) -> dict[str, Any]:
        return run_one(run, self.train_args, cpus, self.evaluate)


def _summary(out: str | os.PathLike, entries: list[dict], t0: float) -> dict[str, Any]:
    """Merge with an earlier summary (a skipped run keeps its training's wall time and scores)."""
    path = Path(out) / SUMMARY_FILE
    earlier = {e["name"]: e for e in json.loads(path.read_text())["runs"]} if path.is_file() else {}
    merged = []
    for entry in entries:
        old = earlier.get(entry["name"])
        if entry["status"] == "skipped" and old and old["status"] != "failed":
            entry = {
                **old,
                **{k: v for k, v in entry.items() if v is not None},
                "status": "skipped",
                "trained_wall_s": old.get("trained_wall_s", old.get("wall_s")),
            }
        elif entry["status"] in ("finished", "resumed"):
            entry = {**entry, "trained_wall_s": entry["wall_s"]}
        merged.append(entry)
    counts: dict[str, int] = {}
    for entry in merged:
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    summary = {"runs": merged, "counts": counts, "wall_s": round(time.perf_counter() - t0, 1)}
    atomic_write_bytes(path, (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def table(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table (image, status, wall time, scales, scores)."""
    rows = [("run", "status", "wall", "scales", "SWD", "band SWD", "diversity", "image / error")]
    for e in summary["runs"]:
        scores = [
            f"{e[k]:.3f}" if isinstance(e.get(k), float) else "-"
            for k in ("patch_swd", "bandpass_swd", "diversity")
        ]
        wall = e.get("trained_wall_s") or e.get("wall_s")
        when = f"{wall / 60:.1f} min" if wall else "-"
        rows.append(
            (
                e["name"],
                e["status"],
                when,
                str(e.get("scales") or "-"),
                *scores,
                e["error"] or Path(e["image"]).name,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def exit_code(summary: dict[str, Any]) -> int:
    """0: every run finished; 3: some failed (partial); 1: none finished."""
    failed = summary["counts"].get("failed", 0)
    if failed == 0:
        return 0
    return 1 if failed == len(summary["runs"]) else EXIT_PARTIAL
