#!/usr/bin/env bash
# Set up, then run the whole test suite: lint, layering contracts, pytest.
# Usage: bash scripts/test.sh [pytest options]
# pytest runs tests/ and the library's docstring examples, leaving out the tests
# marked slow (pyproject.toml); `bash scripts/test.sh -m slow` runs only those.
set -euo pipefail
cd "$(dirname "$0")/.."
# The browser tests drive Debian's chromium and load onnxruntime-web from the npm registry
# (serving/web); install what is missing when possible (root or sudo -n).
missing=()
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium chromium-driver)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      "${missing[@]}" >/dev/null; } \
    || echo "could not install ${missing[*]}: the browser tests skip (fail under CI)" >&2
fi
source scripts/setup.sh "dev"
.venv/bin/ruff check .
.venv/bin/lint-imports
set +e
.venv/bin/python -m pytest --durations=20 "$@"  # the slowest tests, for keeping CI under its limit
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$code"
