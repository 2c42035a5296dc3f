#!/usr/bin/env bash
# Chaos soak: a steady write load while the broker link is refused, black-holed, cut, healed and
# closed by the broker, at random; then checks that every event arrived, in order, and that
# Redis kept answering quickly. Prints a summary (events, lost, duplicates, max PING latency,
# peak module heap, seed, faults injected) and exits with the test's status.
#
#   scripts/chaos.sh [SECONDS]          soak length, default 120 (scripts/test.sh runs it for 20 s)
#   scripts/chaos.sh --kill [SECONDS]   the kill soak (tests/latency/chaos_kill.rs), default 120:
#                                       Redis killed with SIGKILL at random moments and restarted,
#                                       random broker faults between, INCRs acknowledged checked
#                                       against the events delivered; on the first of valkey-8.0,
#                                       redis-8.0, valkey-8.1 that scripts/servers.sh lists (the
#                                       journal needs Redis 7.2+ or Valkey). Summary: kills,
#                                       acknowledged writes, events delivered, missing, duplicates.
#
# Environment:
#   CHAOS_SEED=N    replay the chaos schedule of an earlier run (its seed is printed)
#   CHAOS_RATE=N    writes per second (default 2000; not --kill)
#   CHAOS_DURABILITY=memory   --kill without the journal, as a contrast: reports the events lost
set -euo pipefail
cd "$(dirname "$0")/.."

kill=0
case "${1:-}" in
-h | --help)
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
--kill)
    kill=1
    shift
    ;;
esac

seconds=${1:-120}
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "chaos: SECONDS must be a positive whole number, not '$seconds' (see --help)" >&2
    exit 2
fi

scripts/setup.sh
if [ "$kill" = 0 ]; then
    CHAOS_SECONDS=$seconds exec cargo test --release --test latency chaos:: -- --nocapture --test-threads=1
fi

# The servers already prepared, else prepare them (as scripts/test.sh does); the first listed wins.
kill_servers=(valkey-8.0 redis-8.0 valkey-8.1)
lines=$(scripts/servers.sh --print "${kill_servers[@]}")
[ -n "$lines" ] || lines=$(scripts/servers.sh "${kill_servers[@]}") || true
read -r name server_bin _cli <<<"$lines" || true
if [ -z "${server_bin:-}" ]; then
    echo "chaos: --kill needs one of ${kill_servers[*]} (Redis 7.2+ or Valkey: the journal needs" \
        "post-notification jobs), and scripts/servers.sh lists none; run scripts/servers.sh" >&2
    exit 1
fi
echo "chaos: kill soak on $name ($server_bin)"
CHAOS_KILL_SERVER=$server_bin CHAOS_SECONDS=$seconds \
    exec cargo test --release --test latency chaos_kill:: -- --nocapture --test-threads=1
