"""Sampling in the browser: ms/sample with onnxruntime-web against onnxruntime in Python.

Exports a run (``--run``; or ``--random``: the paper geometry of a 186x248
image with untrained weights, whose speed equals a trained one's), serves it
with ``python -m serving``'s app on loopback, opens ``/browser/`` in headless
Chromium (Debian's chromium + chromium-driver) and times, at 1x and 2x width,
the page's noise recipe (JavaScript) and graph run (onnxruntime-web,
WebAssembly SIMD with threads: the page is cross-origin isolated) against
``serving.Sampler`` on the same machine (numpy noise + onnxruntime). Medians
of ``--reps`` calls after a warm-up; the browser and Python use the same
number of threads (all cores). Optionally saves a screenshot of the page.

    python -m bench browser-speed --random [--reps 10] [--screenshot docs/images/browser_page.png]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.common import machine_info, write_result

FACTORS = (1.0, 2.0)


def python_times(onnx_path: Path, reps: int) -> dict:
    from serving import Sampler

    sampler = Sampler(onnx_path)
    out = {}
    for factor in FACTORS:
        sampler.sample(seed=0, scale_h=factor)  # warm-up
        noise_ms, graph_ms = [], []
        for seed in range(1, reps + 1):
            t0 = time.perf_counter()
            feeds = sampler.noise(seed, 1, scale_h=factor)
            t1 = time.perf_counter()
            sampler.generate(feeds)
            noise_ms.append((t1 - t0) * 1e3)
            graph_ms.append((time.perf_counter() - t1) * 1e3)
        out[f"{factor:g}x"] = _summary(noise_ms, graph_ms, sampler.output_size(scale_h=factor))
    return out


def _summary(noise_ms: list[float], graph_ms: list[float], size) -> dict:
    total = [a + b for a, b in zip(noise_ms, graph_ms, strict=True)]
    return {
        "size": list(size),
        "ms_per_sample": round(statistics.median(total), 1),
        "noise_ms": round(statistics.median(noise_ms), 1),
        "graph_ms": round(statistics.median(graph_ms), 1),
    }


def _serve(folder: Path) -> tuple[str, object]:
    import uvicorn

    from serving.app import create_app
    from serving.models import discover

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(discover(folder)), port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def browser_times(onnx_path: Path, reps: int, screenshot: Path | None, threads: int = 0) -> dict:
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from serving import Sampler

    base, server = _serve(onnx_path.parent)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(600)
    sizes = Sampler(onnx_path).output_size
    try:
        driver.get(f"{base}/browser/?model={onnx_path.stem}" + (f"&threads={threads}" if threads else ""))
        wait_for_samples = WebDriverWait(driver, 300).until
        wait_for_samples(lambda d: "ms per sample" in d.find_element(By.ID, "status").text)
        info = driver.execute_script(
            "return {userAgent: navigator.userAgent, isolated: self.crossOriginIsolated,"
            " threads: navigator.hardwareConcurrency};"
        )
        out = {"browser": info}
        for factor in FACTORS:
            runs = driver.execute_async_script(
                "const [reps, factor, done] = arguments; (async () => {"
                "  await window.singan.timed(0, factor);"  # warm-up at this size
                "  const out = [];"
                "  for (let s = 1; s <= reps; s++) out.push(await window.singan.timed(s, factor));"
                "  return out; })().then(done, (e) => done({error: String(e)}));",
                reps,
                factor,
            )
            if isinstance(runs, dict):
                raise RuntimeError(runs["error"])
            out[f"{factor:g}x"] = _summary(
                [r["noise"] for r in runs], [r["graph"] for r in runs], sizes(scale_h=factor)
            )
            out["threads"] = runs[0]["threads"]
        if screenshot:
            driver.get(f"{base}/browser/?model={onnx_path.stem}")
            wait_for_samples(lambda d: "ms per sample" in d.find_element(By.ID, "status").text)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
        return out
    finally:
        driver.quit()
        server.should_exit = True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a trained run directory")
    source.add_argument("--random", action="store_true", help="the paper geometry of 186x248, random weights")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--screenshot", type=Path, help="save the page with its samples here")
    p.add_argument("--threads", type=int, default=0, help="WebAssembly threads (default: all cores)")
    p.add_argument("--out", type=Path, default=Path("bench/results/browser_speed.json"))
    args = p.parse_args(argv)

    from export import to_onnx

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if args.random:
            from bench.rundirs import random_run

            run = random_run(Path(tmp) / "run")
        name = "rocket" if args.random is False and "rocket" in str(run) else "model"
        onnx_path = to_onnx(run, Path(tmp) / "export", name=name)
        result = {
            "machine": machine_info(),
            "model": {"run": "random paper geometry 186x248" if args.random else str(run)},
            "reps": args.reps,
            "python_onnxruntime": python_times(onnx_path, args.reps),
            "browser_onnxruntime_web": browser_times(onnx_path, args.reps, args.screenshot, args.threads),
        }
    for factor in FACTORS:
        key = f"{factor:g}x"
        py, web = result["python_onnxruntime"][key], result["browser_onnxruntime_web"][key]
        ratio = web["ms_per_sample"] / py["ms_per_sample"]
        print(
            f"{key} {py['size'][0]}x{py['size'][1]}: browser {web['ms_per_sample']} ms/sample "
            f"(noise {web['noise_ms']}, graph {web['graph_ms']}) vs Python {py['ms_per_sample']} "
            f"(noise {py['noise_ms']}, graph {py['graph_ms']}): {ratio:.2f}x"
        )
    write_result(args.out, result)
    print(f"wrote {args.out} ({result['machine']['cpu']}, {result['machine']['cores']} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
