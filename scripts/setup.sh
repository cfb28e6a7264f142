# Sourced by demo.sh and test.sh: create .venv (once) and install the project
# into it with the given extras. Needs only Python >= 3.11 on the PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# The TensorFlow-free serving distribution first: singan-tf's serving extra depends on it.
.venv/bin/python -m pip install --quiet -e ./serving
if [ -n "${1:-}" ]; then spec=".[$1]"; else spec="."; fi
.venv/bin/python -m pip install --quiet -e "$spec"
# The browser page's onnxruntime-web, pinned by serving/ort-web/package-lock.json (npm registry).
bash scripts/web_assets.sh || echo "onnxruntime-web not installed: the in-browser page is unavailable" >&2
