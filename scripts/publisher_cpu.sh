#!/usr/bin/env bash
# CPU time of the publisher thread per confirmed event, for each message format (issue 15).
#
#   scripts/publisher_cpu.sh [--n N] [--formats LIST] [--headers yes|no] [--routing-key RK]
#
# For each format of LIST (comma-separated, default text,json,cloudevents): starts a
# throw-away redis-server (free port, never 6379) with the module forwarding every key to the
# local RabbitMQ (127.0.0.1:5672, guest/guest) under a fresh routing key, with
# key_evt_amqp.format FORMAT and key_evt_amqp.headers (default no); a consumer
# (target/release/examples/tail) takes the messages off a queue bound to it; drives N SETs
# (default 200000) with `redis-benchmark -t set -r 1000000 -P 16 -c 1`; waits until INFO shows
# N events confirmed; prints the kea-publisher thread's CPU (utime + stime from
# /proc/PID/task/*/stat, clock ticks) divided by N. --routing-key sets ROUTING_KEY (a
# template such as 'bench.{db}.{event}.{partition:4}'; the consumer is then bound to what the
# default renders, so use a template only to measure, not to check delivery).
# Needs a release build with examples (cargo build --release --examples).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=200000
FORMATS=text,json,cloudevents
HEADERS=no
RK=
while [ $# -gt 0 ]; do
    case "$1" in
        --n) N=$2; shift 2 ;;
        --formats) FORMATS=$2; shift 2 ;;
        --headers) HEADERS=$2; shift 2 ;;
        --routing-key) RK=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
SO="$ROOT/target/release/libkey_evt_amqp.so"
TAIL="$ROOT/target/release/examples/tail"
for f in "$SO" "$TAIL"; do
    [ -x "$f" ] || [ -f "$f" ] || { echo "missing $f (cargo build --release --examples)" >&2; exit 1; }
done
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    local p
    for p in $(shuf -i 20000-40000 -n 50); do
        if ! (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null; then echo "$p"; return; fi
    done
    echo "no free port" >&2; exit 1
}

publisher_ticks() { # pid
    local t sum=0
    for t in /proc/"$1"/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = kea-publisher ] || continue
        # Fields after the ")" of the name: utime and stime are the 12th and 13th.
        read -r -a f < <(sed 's/^.*) //' "$t/stat")
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}

printf "%-12s %8s %10s %12s\n" format headers events "us/event"
IFS=, read -ra LIST <<<"$FORMATS"
run=0
for format in "${LIST[@]}"; do
    run=$((run + 1))
    ready="$TMP/ready-$run"
    port=$(free_port)
    rk="pubcpu-$$-$format-$RANDOM"
    routing=${RK:-$rk}
    "$TAIL" --count "$N" --ready-file "$ready" amq.direct "$rk" >/dev/null 2>"$TMP/tail.log" &
    tail_pid=$!
    PIDS+=("$tail_pid")
    for _ in $(seq 1 100); do [ -f "$ready" ] && break; sleep 0.1; done
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
        --logfile "$TMP/redis-$run.log" \
        --loadmodule "$SO" '$' 127.0.0.1 5672 guest guest 30 amq.direct "$routing" 1 0 ALL \
        --key_evt_amqp.format "$format" --key_evt_amqp.headers "$HEADERS" &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    before=$(publisher_ticks "$pid")
    redis-benchmark -p "$port" -t set -n "$N" -r 1000000 -P 16 -c 1 -q >/dev/null
    for _ in $(seq 1 600); do
        confirmed=$(redis-cli -p "$port" info key_evt_amqp | tr -d '\r' |
            awk -F: '/^key_evt_amqp_events_confirmed:/ { print $2 }')
        [ "${confirmed:-0}" -ge "$N" ] && break
        sleep 0.1
    done
    after=$(publisher_ticks "$pid")
    hz=$(getconf CLK_TCK)
    awk -v f="$format" -v h="$HEADERS" -v n="$confirmed" -v t=$((after - before)) -v hz="$hz" \
        'BEGIN { printf "%-12s %8s %10d %12.2f\n", f, h, n, t / hz * 1e6 / n }'
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$pid" 2>/dev/null || true
    kill "$tail_pid" 2>/dev/null || true
    wait "$tail_pid" 2>/dev/null || true
done
