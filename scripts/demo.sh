#!/usr/bin/env bash
# The main job, on one fresh Debian machine: set up (scripts/setup.sh), then run the whole story with two
# hosts (two daemons in their own network namespaces, or on two loopback addresses): a test-guest VM writing
# records, replication, failover, revert, failover to another point, commit, reverse, failback, with the
# verifier's verdict at each step. Steps whose engine piece is not implemented yet say "not available yet".
# Everything the demo starts is stopped and removed at the end. Needs root for namespaces (falls back).
# Options go to the demo: --network auto|netns|loopback, --keep (keep logs and images), --debug.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m standby.testing.demo "$@"
