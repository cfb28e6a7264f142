#!/usr/bin/env bash
# Set up, then run the whole test suite: lint, layering contracts, pytest.
# Usage: bash scripts/test.sh [pytest options]
set -euo pipefail
source "$(dirname "$0")/setup.sh" "dev"
# The web page test drives Debian's chromium; install it when possible (root or sudo -n).
if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      chromium chromium-driver >/dev/null; } \
    || echo "could not install chromium + chromium-driver: the browser test skips (fails under CI)" >&2
fi
.venv/bin/ruff check .
.venv/bin/lint-imports
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$code"
