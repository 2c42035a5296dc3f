#!/usr/bin/env bash
# Instructions the Redis main thread spends per SET (valgrind callgrind), for issue 5.
#
#   scripts/profile.sh [--so PATH] [--label NAME] [--n N] [--pipeline P] [--configs LIST]
#                      [--data-size BYTES] [--out DIR]
#
# Runs redis-server 7.0 under `valgrind --tool=callgrind --separate-threads=yes` once per
# configuration, zeroes the counters after a warm-up, drives N SETs with
# `redis-benchmark -t set -n N -P P -c 1` (one connection: each event-loop iteration serves
# exactly P SETs), dumps, and prints Ir per SET for the main thread (see summary.txt's header
# for the columns; docs/profiles/README.md for how to read them).
# Configurations (--configs, comma-separated; default all four):
#   none      no module
#   count     docs/profiles/count_only.c: a callback that only counts (Redis's own floor)
#   nomatch   our module, with a mask matching nothing (`nomatch:*`)
#   all       our module forwarding every key (RabbitMQ on 127.0.0.1:5672, guest/guest)
#   away      our module forwarding every key to a broker that refuses connections: every
#             event spills to the fallback list (the cost of a spill, not in the default list)
#   formats   as `all`, with key_evt_amqp.format json, key_evt_amqp.headers yes and the routing
#             key template bench.{db}.{event}.{partition:4} (issue 15; not in the default list:
#             compare it with `all`)
#   json      as `all`, with key_evt_amqp.format json (the baseline of `values`)
#   journal   as `all`, with key_evt_amqp.durability journal (issue 17; Redis 7.2+ or Valkey 8):
#             every event is also written to the fallback list by a post-notification job
#   values    as `json`, with key_evt_amqp.payload value (issue 16): every SET's value is read
#             on the main thread and, on a server with the Key event (Redis 7.2+, Valkey 8),
#             the old value it overwrites (redis-benchmark SETs one key over and over)
# --data-size: the SET's value in bytes (redis-benchmark -d; default 3).
# The server is the first redis-server on PATH (PATH=target/servers/redis-8.0/bin:$PATH for
# another one: valgrind follows the wrapper scripts/servers.sh writes); redis-benchmark may
# be any version.
# --so: the module to profile (default target/release/libkey_evt_amqp.so; a copy is used).
# Instruction counts do not depend on the machine's load: this can run next to other work.
# CALLGRIND_EXTRA="--dump-instr=yes" adds per-instruction costs (for callgrind_annotate or
# kcachegrind). Output in DIR (default target/profile/<label>): per configuration the main
# thread's dump (main-thread.callgrind) and its annotations (inclusive.txt, self.txt,
# tree.txt); summary.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SO="$ROOT/target/release/libkey_evt_amqp.so"
LABEL=current
N=100000
P=16
DATA=3
CONFIGS=none,count,nomatch,all
OUT=
while [ $# -gt 0 ]; do
    case "$1" in
        --so) SO=$(realpath "$2"); shift 2 ;;
        --label) LABEL=$2; shift 2 ;;
        --n) N=$2; shift 2 ;;
        --pipeline) P=$2; shift 2 ;;
        --configs) CONFIGS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --data-size) DATA=$2; shift 2 ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$ROOT/target/profile/$LABEL}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")

for tool in valgrind callgrind_annotate callgrind_control redis-server redis-benchmark \
    redis-cli gcc; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ -f "$SO" ] || { echo "no module at $SO (cargo build --release)" >&2; exit 1; }
# A private copy: a `cargo build` running meanwhile must not change the module between configs.
cp "$SO" "$OUT/module.so"
SO_SRC=$SO
SO="$OUT/module.so"

# The count-only floor module, built against the redismodule.h the Rust crate ships.
COUNT_SO="$OUT/count_only.so"
if [[ ",$CONFIGS," == *",count,"* ]]; then
    INCLUDE=
    for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/redis-module-2.0.8/src/include; do
        [ -f "$d/redismodule.h" ] && INCLUDE=$d && break
    done
    if [ -z "$INCLUDE" ]; then
        echo "no redismodule.h (redis-module 2.0.8 in cargo's registry)" >&2
        exit 1
    fi
    gcc -O2 -shared -fPIC -I"$INCLUDE" -o "$COUNT_SO" "$ROOT/docs/profiles/count_only.c"
fi

free_port() {
    local p
    for p in $(shuf -i 20000-40000 -n 50); do
        if ! (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null; then echo "$p"; return; fi
    done
    echo "no free port" >&2; exit 1
}

# Inclusive Ir of the first function of an annotate listing matching a regex, 0 if none.
incl() { # file regex
    awk -v re="$2" '$0 ~ re { gsub(",", "", $1); print $1; found = 1; exit }
        END { if (!found) print 0 }' "$1"
}

# Inclusive Ir of the calls from one function to another (callgrind_annotate --tree=calling),
# summed: robust to the inlined pieces callgrind lists under other file:function names.
calls_from() { # tree-file caller-substring callee-substring
    awk -v caller="$2" -v callee="$3" '
        /^$/ { inside = 0 }
        index($0, "*  ") && index($0, caller) { inside = 1; next }
        inside && index($0, ">   ") && index($0, callee) { c = $1; gsub(",", "", c); sum += c }
        END { print sum + 0 }' "$1"
}

per() { awk -v a="$1" -v n="$N" 'BEGIN { printf "%.0f", a / n }'; }

SUMMARY="$OUT/summary.txt"
{
    echo "# scripts/profile.sh --label $LABEL --n $N --pipeline $P --data-size $DATA ($(date -u +%FT%TZ))"
    echo "# server: $(redis-server --version | cut -d' ' -f1-3)"
    echo "# module: $SO_SRC (sha256 $(sha256sum "$SO" | cut -c1-12))"
    echo "# Ir per SET on the main thread. total: everything from the zero to the dump."
    echo "# main: total - serverCron (10 runs per second of valgrind's slow clock, not per SET)"
    echo "#   - lookupCommandLogic (the command table lookup: 240 or 410 Ir per SET, depending"
    echo "#   on the process's random dict seed)."
    echo "# call: Redis's call() for the client's commands (what INFO commandstats times)."
    echo "# mNKE: moduleNotifyKeyspaceEvent; cb: our keyspace callback; hook: our event-loop"
    echo "#   hook (on_event_loop, twice per event-loop iteration)."
    printf "%-8s %8s %8s %8s %8s %8s %8s\n" config total main call mNKE cb hook
} >"$SUMMARY"

run_config() {
    local config=$1 port pid dir load=()
    local args=('$' 127.0.0.1 5672 guest guest 30 amq.direct bench 1 0)
    dir="$OUT/$config"
    rm -rf "$dir"; mkdir -p "$dir"
    port=$(free_port)
    case "$config" in
        none) ;;
        count) load=(--loadmodule "$COUNT_SO") ;;
        nomatch) load=(--loadmodule "$SO" "${args[@]}" 'nomatch:*') ;;
        all) load=(--loadmodule "$SO" "${args[@]}" ALL) ;;
        formats)
            args[7]='bench.{db}.{event}.{partition:4}'
            load=(--loadmodule "$SO" "${args[@]}" ALL --key_evt_amqp.format json
                --key_evt_amqp.headers yes)
            ;;
        json) load=(--loadmodule "$SO" "${args[@]}" ALL --key_evt_amqp.format json) ;;
        journal) load=(--loadmodule "$SO" "${args[@]}" ALL --key_evt_amqp.durability journal) ;;
        values)
            load=(--loadmodule "$SO" "${args[@]}" ALL --key_evt_amqp.format json
                --key_evt_amqp.payload value)
            ;;
        away)
            # Nothing listens there (and Redis will not either): the broker is away.
            args[2]=$(free_port)
            while [ "${args[2]}" = "$port" ]; do args[2]=$(free_port); done
            load=(--loadmodule "$SO" "${args[@]}" ALL)
            ;;
        *) echo "unknown config $config" >&2; exit 2 ;;
    esac
    # shellcheck disable=SC2086 # CALLGRIND_EXTRA: extra valgrind options, word-split on purpose
    (cd "$dir" && exec valgrind --tool=callgrind --separate-threads=yes --trace-children=yes \
        ${CALLGRIND_EXTRA:-} \
        --callgrind-out-file="$dir/callgrind.out" \
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$dir" --logfile "$dir/redis.log" "${load[@]}") >"$dir/valgrind.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.2
    done
    redis-cli -p "$port" ping >/dev/null
    # A first small run warms up allocator pools and the module's connection (ALL: the
    # publisher connects on the first event), then counting starts from zero.
    redis-benchmark -p "$port" -t set -n 2000 -P "$P" -d "$DATA" -c 1 -q >/dev/null
    sleep 2
    callgrind_control -z "$pid" >/dev/null
    redis-benchmark -p "$port" -t set -n "$N" -P "$P" -d "$DATA" -c 1 -q >"$dir/redis-benchmark.txt"
    callgrind_control -d "$pid" >/dev/null
    local info
    info=$(redis-cli -p "$port" info key_evt_amqp 2>/dev/null | tr -d '\r' |
        grep -E 'seen|matched|confirmed|spilled' | tr '\n' ' ' || true)
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$pid" || true
    # The dump after the run (".1"), main thread ("-01").
    local dump="$dir/main-thread.callgrind"
    cp "$dir/callgrind.out.1-01" "$dump"
    callgrind_annotate --inclusive=yes --threshold=100 "$dump" >"$dir/inclusive.txt" 2>/dev/null
    callgrind_annotate --inclusive=no --threshold=100 "$dump" >"$dir/self.txt" 2>/dev/null
    callgrind_annotate --inclusive=yes --tree=calling --threshold=100 "$dump" \
        >"$dir/tree.txt" 2>/dev/null
    local total call cron lookup mnke ours hook
    total=$(awk '/^summary:|^totals:/ { print $2; exit }' "$dump")
    # Only the commands of the client: a spill to the fallback list runs RPUSH through call() too.
    call=$(calls_from "$dir/tree.txt" '???:processCommand [' '???:call (')
    cron=$(incl "$dir/inclusive.txt" '[?]:serverCron [[]')
    lookup=$(incl "$dir/inclusive.txt" '[?]:lookupCommandLogic [[]')
    mnke=$(calls_from "$dir/tree.txt" '???:notifyKeyspaceEvent [' 'moduleNotifyKeyspaceEvent')
    ours=$(calls_from "$dir/tree.txt" '???:moduleNotifyKeyspaceEvent [' 'on_keyspace_event')
    hook=$(calls_from "$dir/tree.txt" '???:moduleFireServerEvent [' 'on_event_loop')
    printf "%-8s %8s %8s %8s %8s %8s %8s   %s\n" "$config" "$(per "$total")" \
        "$(per $((total - cron - lookup)))" "$(per "$call")" "$(per "$mnke")" "$(per "$ours")" \
        "$(per "$hook")" "$info" | tee -a "$SUMMARY"
}

IFS=, read -ra LIST <<<"$CONFIGS"
for c in "${LIST[@]}"; do run_config "$c"; done
echo "details: $OUT/<config>/{inclusive,self,tree}.txt; summary: $SUMMARY"
