#!/usr/bin/env bash
# The whole suite: setup, format, lints (the workspace: the module and testkit/), unit tests,
# each integration topic, the latency tests one at a time, and an end-to-end smoke run. Every
# step runs even when an earlier one failed; the script exits non-zero if any failed and ends
# with "N passed, N failed".
#
# Integration test binaries are tests/*.rs and tests/*/main.rs: today tests/it (every topic) and
# tests/latency (the timing tests). A binary made of modules (tests/NAME/TOPIC.rs beside its
# main.rs) runs one step per module, `cargo test --release --test NAME TOPIC::`, so that a failure
# names its topic and STEP_TIMEOUT bounds a hang per topic. The binary `latency` (and any named
# `latency_*`) measures timing: it runs after all others, one step at a time, single-threaded.
# Just before it, scripts/servers.sh prepares Valkey 8.0, Redis 8.0 and Valkey 8.1 (the kill soak,
# latency::chaos_kill, picks one of them itself); after it every integration topic but the timing
# ones runs again on each (steps named `test it::TOPIC [SERVER]`); the default server is Debian
# 12's Redis 7.0.
#
# Environment:
#   STEP_TIMEOUT=1200   seconds allowed per step (build included)
set -euo pipefail
cd "$(dirname "$0")/.."

STEP_TIMEOUT=${STEP_TIMEOUT:-1200}
passed=0
failed=0
failures=()

summary() {
    echo
    [ "${#failures[@]}" -eq 0 ] || echo "test: failed: ${failures[*]}"
    echo "$passed passed, $failed failed"
}

# `timeout` gives each step its own process group (so a timeout also ends the test binary and
# any redis-server it started); that group no longer gets the terminal's Ctrl-C, so forward it.
current=''
interrupted() {
    if [ -n "$current" ]; then
        kill -TERM "$current" 2>/dev/null || true
        wait "$current" 2>/dev/null || true
    fi
    echo
    echo "test: interrupted"
    summary
    exit 130
}
trap interrupted INT TERM

# step NAME COMMAND... : run one step under a timeout and count it.
step() {
    local name=$1 rc=0 t0=$SECONDS
    shift
    echo
    echo "=== test: $name: $*"
    timeout --kill-after=30 "$STEP_TIMEOUT" "$@" &
    current=$!
    wait "$current" || rc=$?
    current=''
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "--- ok: $name ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        [ "$rc" -ne 124 ] || echo "test: $name timed out after $STEP_TIMEOUT s"
        echo "--- FAILED: $name (exit $rc, $((SECONDS - t0)) s)"
    fi
}

if ! scripts/setup.sh; then
    failed=1
    failures=(setup)
    summary
    exit 1
fi
passed=1 # setup

step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets --release -- -D warnings
step unit cargo test --workspace --release --lib --bins --examples

# Integration test steps: "NAME" (a whole binary) or "NAME TOPIC" (one module of it).
regular=()
latency=()
shopt -s nullglob
for f in tests/*.rs tests/*/main.rs; do
    case "$f" in
    */main.rs) name=${f#tests/} name=${name%/main.rs} ;;
    *) name=$(basename "$f" .rs) ;;
    esac
    units=()
    if [ "${f##*/}" = main.rs ]; then
        for m in "tests/$name"/*.rs; do
            [ "$m" = "$f" ] || units+=("$name $(basename "$m" .rs)")
        done
    fi
    [ "${#units[@]}" -gt 0 ] || units=("$name")
    case "$name" in
    latency | latency_*) latency+=("${units[@]}") ;;
    *) regular+=("${units[@]}") ;;
    esac
done
shopt -u nullglob

# integration STEP_NAME_SUFFIX UNIT [TEST ARGS...]: one step for a binary or one of its modules.
integration() {
    local suffix=$1 unit=$2 name topic
    shift 2
    read -r name topic <<<"$unit"
    if [ -n "$topic" ]; then
        step "test $name::$topic$suffix" cargo test --release --test "$name" "$topic::" -- "$@"
    else
        step "test $name$suffix" cargo test --release --test "$name" -- "$@"
    fi
}

for unit in "${regular[@]}"; do
    integration '' "$unit"
done
# The other servers (scripts/servers.sh: Valkey 8.0, Redis 8.0, Valkey 8.1), prepared before the
# timing tests: the kill soak (latency::chaos_kill) runs on the first of them.
servers_list=target/servers.list
servers_ok=0
step servers bash -c 'mkdir -p target && scripts/servers.sh >"$0"' "$servers_list" && servers_ok=1

for unit in "${latency[@]}"; do
    integration ' (alone)' "$unit" --test-threads=1
done

# Every integration topic but the timing ones and the layout check on each other server, each
# step named with its server.
if [ "$servers_ok" = 1 ]; then
    while read -r server server_bin cli_bin; do
        [ "$server" != redis-7.0 ] || continue
        export REDIS_SERVER=$server_bin REDIS_CLI=$cli_bin
        for unit in "${regular[@]}"; do
            [ "$unit" != "it layout" ] || continue
            integration " [$server]" "$unit"
        done
        unset REDIS_SERVER REDIS_CLI
    done <"$servers_list"
fi

step smoke timeout 60 scripts/run.sh --demo --once
# The benchmark's short version, so it never rots (it fails on errors, never on figures).
step bench-quick timeout 120 scripts/bench.sh --quick

summary
[ "$failed" -eq 0 ]
