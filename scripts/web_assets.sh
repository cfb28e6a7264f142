#!/usr/bin/env bash
# Install onnxruntime-web from the npm registry (pinned by serving/ort-web/package-lock.json)
# and copy the three files the in-browser page loads into serving/static/ort/: the ES module
# (WebAssembly with SIMD and threads, WebGPU through JSEP) and its WebAssembly binary.
# Nothing is fetched at run time: the page works offline once this has run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../serving/ort-web"
files=(ort.min.mjs ort-wasm-simd-threaded.jsep.mjs ort-wasm-simd-threaded.jsep.wasm)
dist=node_modules/onnxruntime-web/dist
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found (apt-get install npm)" >&2
  exit 1
fi
if [ ! -f "$dist/${files[0]}" ] || ! cmp -s package-lock.json node_modules/.package-lock.json.copy; then
  npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
  cp package-lock.json node_modules/.package-lock.json.copy
fi
mkdir -p ../static/ort
for f in "${files[@]}"; do cp -u "$dist/$f" ../static/ort/; done
