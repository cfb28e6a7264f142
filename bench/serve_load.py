"""Load on the local endpoint: C concurrent clients for T seconds, on 127.0.0.1 only.

Starts ``python -m serving`` in a subprocess on a free loopback port, warms
it up, then lets ``--clients`` threads send requests back to back for
``--seconds``: the ``sample`` signature through ``serving.Client`` (the TF
Serving REST contract, uint8 JSON answers) or ``sample.png``. Reports
throughput, p50/p90/p99 latency, errors, and the server's RSS before and
after (and its peak) to show memory stays flat.

    python -m bench serve-load --random [--clients 8 --seconds 30 --route predict|png]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.common import machine_info, write_result
from serving import Client, ClientError


def rss_mb(pid: int) -> dict[str, float]:
    """Resident and peak-resident memory of a process, MB (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields["VmRSS"], 1), "peak_rss_mb": round(fields["VmHWM"], 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exported_models(args, tmp: Path) -> tuple[Path, str]:
    """A folder with one exported ONNX model and its name."""
    if args.models:
        return Path(args.models), args.name
    from bench.rundirs import random_run
    from export import to_onnx

    run = Path(args.run) if args.run else random_run(tmp / "run")
    to_onnx(run, tmp / "exported", name=args.name)
    return tmp / "exported", args.name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--models", help="an exported folder (python -m export RUN --out DIR)")
    source.add_argument("--run", help="a trained run directory (exported to ONNX first)")
    source.add_argument("--random", action="store_true", help="random weights, 186x248 paper geometry")
    parser.add_argument("--name", default="singan", help="model name")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--route", choices=["predict", "png"], default="predict")
    parser.add_argument("--scale-h", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=1, help="server --concurrency")
    parser.add_argument("--out", default="bench/results/serve_load.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    with tempfile.TemporaryDirectory() as tmp:
        folder, name = exported_models(args, Path(tmp))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "serving", "--models", str(folder), "--port", str(port)]
            + ["--concurrency", str(args.concurrency)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            result = _load(args, server, url, name)
        finally:
            server.terminate()
            server.wait(timeout=30)
    result["machine"] = machine_info()
    write_result(Path(args.out), result)
    print(
        f"{result['requests']} requests in {result['seconds']:.0f} s: {result['requests_per_s']:.2f}/s, "
        f"p50 {result['latency_ms']['p50']:.0f} ms, p99 {result['latency_ms']['p99']:.0f} ms, "
        f"errors {result['errors']}, server RSS {result['server_before']['rss_mb']} -> "
        f"{result['server_after']['rss_mb']} MB (peak {result['server_after']['peak_rss_mb']}); "
        f"RSS every 5 s {[mb for _, mb in result['server_rss_timeline']]}"
    )


def _load(args, server, url: str, name: str) -> dict:
    client = Client(url, name, timeout=300)
    deadline = time.monotonic() + 120
    while True:
        try:
            client.status()
            break
        except ClientError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {server.stderr.read()}") from None
            time.sleep(0.2)

    png_url = f"{url}/v1/models/{name}/sample.png?scale_h={args.scale_h}&seed="

    def request(seed: int) -> None:
        if args.route == "png":
            with urllib.request.urlopen(png_url + str(seed), timeout=300) as r:
                r.read()
        else:
            client.sample(seed=seed, batch=1, scale_h=args.scale_h)

    for seed in range(3):  # warm-up: first-run allocations are not a leak
        request(seed)
    before = rss_mb(server.pid)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + args.seconds

    def worker(index: int) -> None:
        seed = 1000 * (index + 1)
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                request(seed)
                with lock:
                    latencies.append(time.perf_counter() - t0)
            except Exception as err:  # count every failure, whatever its kind
                with lock:
                    errors.append(repr(err))
            seed += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    timeline = []  # (seconds, RSS MB) every ~5 s: flat after the first requests, or a leak
    while any(t.is_alive() for t in threads):
        time.sleep(5.0)
        timeline.append((round(time.monotonic() - t0, 1), rss_mb(server.pid)["rss_mb"]))
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    after = rss_mb(server.pid)
    ms = np.asarray(latencies) * 1000
    meta = client.metadata()["metadata"]["singan_tf"]
    return {
        "benchmark": "serve_load",
        "route": args.route,
        "model_sizes": meta["sizes"],
        "scale_h": args.scale_h,
        "clients": args.clients,
        "server_concurrency": args.concurrency,
        "seconds": elapsed,
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "latency_ms": {
            q: float(np.percentile(ms, p)) if len(ms) else None
            for q, p in (("p50", 50), ("p90", 90), ("p99", 99))
        },
        "errors": len(errors),
        "error_examples": errors[:3],
        "server_before": before,
        "server_after": after,
        "server_rss_timeline": timeline,
    }


if __name__ == "__main__":
    main()
