#!/usr/bin/env bash
# Set up, train the bundled image with the quick preset, write samples, export.
# Usage: bash scripts/demo.sh [extra train options]
set -euo pipefail
source "$(dirname "$0")/setup.sh" "export,serving"
out="runs/demo-$(date +%Y%m%d-%H%M%S)"
.venv/bin/python -m singan_tf.train --preset quick --out "$out" "$@"
.venv/bin/python -m singan_tf.sample "$out" --num 8 --scale-h 2 --out "$out/samples/wide"
.venv/bin/python -m export "$out" --out "$out/export" --name rocket
echo "run directory: $out (samples in $out/samples, SavedModel + ONNX in $out/export," \
  "TensorBoard: .venv/bin/tensorboard --logdir $out/logs)"
echo "browse samples: .venv/bin/python -m serving --models $out/export  (then open http://127.0.0.1:8501/," \
  "or http://127.0.0.1:8501/browser/ to sample in the browser)"
