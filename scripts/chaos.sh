#!/usr/bin/env bash
# Chaos soak: a steady write load while the broker link is refused, black-holed, cut, healed and
# closed by the broker, at random; then checks that every event arrived, in order, and that
# Redis kept answering quickly. Prints a summary (events, lost, duplicates, max PING latency,
# peak module heap, seed, faults injected) and exits with the test's status.
#
#   scripts/chaos.sh [SECONDS]     soak length, default 120 (scripts/test.sh runs it for 20 s)
#
# Environment:
#   CHAOS_SEED=N    replay the chaos schedule of an earlier run (its seed is printed)
#   CHAOS_RATE=N    writes per second (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
-h | --help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

seconds=${1:-120}
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "chaos: SECONDS must be a positive whole number, not '$seconds' (see --help)" >&2
    exit 2
fi

scripts/setup.sh
CHAOS_SECONDS=$seconds exec cargo test --release --test latency chaos:: -- --nocapture --test-threads=1
