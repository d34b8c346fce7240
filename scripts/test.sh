#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every check: ruff, mypy, the import contracts (lint-imports), then the
# tests (unit, integration, e2e, interop).
# Pass pytest arguments to narrow it, e.g. scripts/test.sh -m unit. STANDBY_SLOW=1 adds the opt-in slow suites.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff" && ruff check src tests bench
echo "== mypy" && mypy
echo "== import contracts" && lint-imports --no-cache  # no .import_linter_cache in the checkout
echo "== pytest"
set +e
pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$rc"
