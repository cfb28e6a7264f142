#!/usr/bin/env bash
# Set up, then run the whole test suite: lint, layering contracts, pytest.
# Usage: bash scripts/test.sh [pytest options]
set -euo pipefail
source "$(dirname "$0")/setup.sh" "dev"
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
