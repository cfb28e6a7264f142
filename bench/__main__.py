"""``python -m bench <name> [--verbose] [options]``: run one benchmark (see bench/README.md).

train-speed   ms/iteration per scale of the paper preset (plain vs XLA)
infer-speed   latency/throughput per runtime (TF, SavedModel, onnxruntime, int8)
peak          this machine's conv/matmul peak, for achieved/peak ratios
quick-train   wall time, peak RSS and quality of a whole quick-preset run
preset-sweep  quality (SWD, diversity) against training time for several settings
fast-preset   the fast preset against the paper preset at 400 iterations, on several images
coarse-screen settings' coarsest scales against an anchor's, over seeds (minutes per run)
serve-load    throughput, latency and memory of `python -m serving` under concurrent clients
browser-speed ms/sample in headless Chromium (onnxruntime-web) vs onnxruntime in Python
sr-quality    super-resolution PSNR/SSIM vs bicubic on a held-out original
first-call    each scale's first call: empty or filled XLA program cache, compiled ahead or not
speed-report  per-scale speed (fp32, mixed) and the fast preset's time and SWD vs the paper preset's
torch-reference  the reference algorithm in PyTorch on this machine (needs torch)
plot          bench/results/train_speed.png from the train-speed results

--verbose shows TensorFlow's start-up lines (hidden otherwise).
"""

import importlib
import sys

BENCHMARKS = {
    "train-speed": "bench.train_speed",
    "infer-speed": "bench.infer_speed",
    "peak": "bench.peak",
    "quick-train": "bench.quick_train",
    "preset-sweep": "bench.preset_sweep",
    "fast-preset": "bench.fast_preset",
    "coarse-screen": "bench.coarse_screen",
    "serve-load": "bench.serve_load",
    "browser-speed": "bench.browser_speed",
    "sr-quality": "bench.sr_quality",
    "train-many": "bench.train_many",
    "first-call": "bench.first_call",
    "speed-report": "bench.speed_report",
    "torch-reference": "bench.torch_reference",
    "plot": "bench.plot",
}
# Benchmarks that run without TensorFlow (torch-reference: in a venv with torch only).
WITHOUT_TENSORFLOW = {"torch-reference", "plot"}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print(__doc__, file=sys.stderr)
        return 2
    name, options = sys.argv[1], sys.argv[2:]
    if name not in WITHOUT_TENSORFLOW:
        from singan_tf.preflight import import_tensorflow

        import_tensorflow("--verbose" in options)
    importlib.import_module(BENCHMARKS[name]).main([o for o in options if o != "--verbose"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
