#!/bin/sh
# The one command of BENCHMARKS.md: every row of issue 8, each figure next to its baseline from the same run.
#   bench/bench.sh                 all rows, default sizes (P2 60 s, P6 20 VMs)
#   bench/bench.sh --full          P2 for 10 min, P6 with 200 VMs
#   bench/bench.sh --only P4,P10   some rows;  --quick: a smoke run;  --repeat N: medians over N runs
set -eu
cd "$(dirname "$0")/.."
exec .venv/bin/python -m bench.run "$@"
