# Sourced by demo.sh and test.sh: create .venv (once) and install the project
# into it with the given extras. Needs only Python >= 3.11 on the PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ -n "${1:-}" ]; then spec=".[$1]"; else spec="."; fi
.venv/bin/python -m pip install --quiet -e "$spec"
