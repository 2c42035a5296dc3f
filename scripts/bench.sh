#!/usr/bin/env bash
# End-to-end benchmarks of key_evt_amqp (issue 5): redis-benchmark with and without the module,
# delivery rate against a raw lapin publisher, a black-holed broker, a backlog drain, memory.
#
#   scripts/bench.sh            full run (3 rounds, about 10 minutes): writes docs/bench/
#                               results.md, results.json and chart.svg
#   scripts/bench.sh --quick    small sizes, 1 round, under a minute: writes target/bench-quick/
#                               (scripts/test.sh runs this one so the benchmark never rots; it
#                               fails only on errors, never on the figures)
#   scripts/bench.sh [--quick] --out DIR    write the results elsewhere
#   scripts/bench.sh [--quick] --only 1,4   run only these measurements (numbered as in the
#                               results; use with --out, not to overwrite docs/bench)
#   KEA_BENCH_CONFIG=key_evt_amqp.format=cloudevents scripts/bench.sh ...   module configs
#                               for every redis-server with the module (name=value,...)
#   scripts/bench.sh --server NAME ...      the redis-servers are another server of
#                               scripts/servers.sh (valkey-8.0, redis-8.0, valkey-8.1)
#
# Runs scripts/setup.sh first (packages, RabbitMQ on 127.0.0.1:5672, release build). The bench
# starts its own redis-server processes on free ports (never 6379, through the testkit) and ends
# every process it started, also on failure. Its consumer and redis-benchmark are killed with it
# (PR_SET_PDEATHSIG); the redis-servers when it ends, fails or gets Ctrl-C (same process group),
# but not when the bench alone is killed (the testkit sets no PR_SET_PDEATHSIG).
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
while [ $# -gt 0 ]; do
    if [ "$1" = --server ]; then
        [ $# -ge 2 ] || { echo "bench: --server needs a NAME" >&2; exit 2; }
        read -r _ REDIS_SERVER REDIS_CLI < <(scripts/servers.sh "$2") ||
            { echo "bench: scripts/servers.sh $2 failed" >&2; exit 1; }
        export REDIS_SERVER REDIS_CLI
        shift 2
    else
        args+=("$1")
        shift
    fi
done

scripts/setup.sh
exec cargo run --release --quiet --example bench -- "${args[@]}"
