"""``python -m bench <name> [options]``: run one benchmark (see bench/README.md).

train-speed   ms/iteration per scale of the paper preset (plain vs XLA)
infer-speed   latency/throughput per runtime (TF, SavedModel, onnxruntime, int8)
peak          this machine's conv/matmul peak, for achieved/peak ratios
quick-train   wall time, peak RSS and quality of a whole quick-preset run
preset-sweep  quality (SWD, diversity) against training time for several settings
fast-preset   the fast preset against the paper preset at 400 iterations, on several images
serve-load    throughput, latency and memory of `python -m serving` under concurrent clients
sr-quality    super-resolution PSNR/SSIM vs bicubic on a held-out original
speed-report  per-scale speed (fp32, mixed) and the fast preset's time and SWD vs the paper preset's
torch-reference  the reference algorithm in PyTorch on this machine (needs torch)
plot          bench/results/train_speed.png from the train-speed results
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
    "serve-load": "bench.serve_load",
    "sr-quality": "bench.sr_quality",
    "speed-report": "bench.speed_report",
    "torch-reference": "bench.torch_reference",
    "plot": "bench.plot",
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print(__doc__, file=sys.stderr)
        return 2
    importlib.import_module(BENCHMARKS[sys.argv[1]]).main(sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
