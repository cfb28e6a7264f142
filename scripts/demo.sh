#!/usr/bin/env bash
# Set up, then train the bundled image with the quick preset and write samples.
# Usage: bash scripts/demo.sh [extra train options]
set -euo pipefail
source "$(dirname "$0")/setup.sh" ""
out="runs/demo-$(date +%Y%m%d-%H%M%S)"
.venv/bin/python -m singan_tf.train --preset quick --out "$out" "$@"
.venv/bin/python -m singan_tf.sample "$out" --num 8 --scale-h 2 --out "$out/samples/wide"
echo "run directory: $out (samples in $out/samples, TensorBoard: .venv/bin/tensorboard --logdir $out/logs)"
