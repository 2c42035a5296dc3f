#!/usr/bin/env bash
# See key_evt_amqp at work: a throw-away redis-server with the module loaded, and the `tail`
# consumer printing every event RabbitMQ delivers.
#
#   scripts/run.sh                 start, then type `redis-cli -p PORT SET hello world` elsewhere
#   scripts/run.sh --demo          also make a few writes right away
#   scripts/run.sh --demo --once   exit once the demo events were printed (a smoke check)
#   scripts/run.sh --server NAME   run on another server of scripts/servers.sh (valkey-8.0,
#                                  redis-8.0, valkey-8.1; default: Debian 12's redis-server)
#
# Environment:
#   PORT=6390        first port to try for redis-server (the next free one is used if it is taken)
#   MODULE_ARGS=...  the module's load arguments (default below); the consumer follows its
#                    HOST PORT USER PASS EXCHANGE ROUTING_KEY unless AMQP_URL/EXCHANGE/ROUTING_KEY are set
#   SKIP_SETUP=1     do not run scripts/setup.sh first
#   ONCE_TIMEOUT=30  seconds --once waits for the demo events
#
# Ctrl-C stops everything; the redis-server and its temporary directory are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "run: $*"; }
die() {
    echo "run: ERROR: $*" >&2
    exit 1
}

demo=0
once=0
server=''
while [ $# -gt 0 ]; do
    arg=$1
    shift
    case "$arg" in
    --demo) demo=1 ;;
    --once) once=1 ;;
    --server)
        [ $# -gt 0 ] || die "--server needs a NAME (see scripts/servers.sh --help)"
        server=$1
        shift
        ;;
    -h | --help)
        sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$arg' (try --help)" ;;
    esac
done
[ "$once" = 0 ] || [ "$demo" = 1 ] || die "--once needs --demo"

DEFAULT_MODULE_ARGS="A 127.0.0.1 5672 guest guest 30 amq.direct redis_keyspace_events 1 10000000 ALL"
read -r -a margs <<<"${MODULE_ARGS:-$DEFAULT_MODULE_ARGS}"
MODULE=target/release/libkey_evt_amqp.so
TAIL=target/release/examples/tail

if [ "${SKIP_SETUP:-0}" != 1 ]; then
    scripts/setup.sh
fi
[ -f "$MODULE" ] || die "$MODULE is missing; run scripts/setup.sh"
[ -x "$TAIL" ] || die "$TAIL is missing; run scripts/setup.sh"
REDIS_SERVER_BIN=redis-server
REDIS_CLI_BIN=redis-cli
if [ -n "$server" ]; then
    read -r _ REDIS_SERVER_BIN REDIS_CLI_BIN < <(scripts/servers.sh "$server") ||
        die "scripts/servers.sh $server failed"
fi
[ -n "$REDIS_SERVER_BIN" ] || die "scripts/servers.sh $server gave no server (see its output above)"
command -v "$REDIS_SERVER_BIN" >/dev/null 2>&1 || die "$REDIS_SERVER_BIN not found; run scripts/setup.sh"

# ---------------------------------------------------------------- consumer settings
# Percent-encode one URI component.
urlencode() {
    local LC_ALL=C s=$1 out='' c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case "$c" in
        [a-zA-Z0-9._~-]) out+=$c ;;
        *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s' "$out"
}
# Positional module arguments, with the module's defaults for the missing ones.
a_host=${margs[1]:-127.0.0.1}
a_port=${margs[2]:-5672}
a_user=${margs[3]:-guest}
a_pass=${margs[4]:-guest}
export EXCHANGE=${EXCHANGE:-${margs[6]:-amq.direct}}
export ROUTING_KEY=${ROUTING_KEY:-${margs[7]:-redis_keyspace_events}}
export AMQP_URL=${AMQP_URL:-amqp://$(urlencode "$a_user"):$(urlencode "$a_pass")@$a_host:$a_port/%2f}

# The load arguments as shown to the user: the password (argument 4) is never echoed.
shown_args=("${margs[@]}")
[ "${#shown_args[@]}" -le 4 ] || shown_args[4]='***'

# ---------------------------------------------------------------- cleanup
tmp=$(mktemp -d "${TMPDIR:-/tmp}/key_evt_amqp-run.XXXXXX")
redis_pid=''
tail_pid=''
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$tail_pid" ] && kill -0 "$tail_pid" 2>/dev/null; then
        kill "$tail_pid" 2>/dev/null || true
        wait "$tail_pid" 2>/dev/null || true
    fi
    if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
        kill "$redis_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ -s "$tmp/redis.log" ]; then
        echo "run: last lines of the redis-server log:" >&2
        tail -n 15 "$tmp/redis.log" >&2
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- redis-server
port_taken() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

start_redis() { # $1 = port; returns 0 when it answers PING, 1 when the port was taken, dies otherwise
    local port=$1
    : >"$tmp/redis.log"
    "$REDIS_SERVER_BIN" --port "$port" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no \
        --daemonize no --logfile "$tmp/redis.log" \
        --loadmodule "$PWD/$MODULE" "${margs[@]}" &
    redis_pid=$!
    for _ in $(seq 100); do
        if ! kill -0 "$redis_pid" 2>/dev/null; then
            wait "$redis_pid" 2>/dev/null || true
            redis_pid=''
            grep -q 'Address already in use' "$tmp/redis.log" && return 1
            die "redis-server on port $port exited at start (bad MODULE_ARGS?)"
        fi
        [ "$("$REDIS_CLI_BIN" -p "$port" PING 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    die "redis-server on port $port does not answer PING after 10 s"
}

port=${PORT:-6390}
for _ in $(seq 20); do
    if [ "$port" -ne 6379 ] && ! port_taken "$port" && start_redis "$port"; then
        break
    fi
    port=$((port + 1))
done
[ -n "$redis_pid" ] || die "no free port found from ${PORT:-6390} on"

say "${server:-redis-server} pid $redis_pid on 127.0.0.1:$port, module $MODULE ${shown_args[*]}"
say "consumer: exchange '$EXCHANGE', routing key '$ROUTING_KEY'"
if [ "$demo" = 0 ]; then
    say "try it, in another terminal:  redis-cli -p $port SET hello world"
fi
say "Ctrl-C stops redis-server and the consumer"

# ---------------------------------------------------------------- consumer
# The consumer runs in the background and the script waits for it, so that Ctrl-C (and a TERM
# from `timeout`) reach the trap at once; the EXIT trap then stops the consumer and redis-server.
if [ "$demo" = 0 ]; then
    "$TAIL" &
    tail_pid=$!
    wait "$tail_pid"
    exit $?
fi

demo_writes() {
    local r=("$REDIS_CLI_BIN" -p "$port")
    "${r[@]}" SET hello world >/dev/null
    "${r[@]}" HSET user:1 name ada >/dev/null
    "${r[@]}" LPUSH jobs a b c >/dev/null
    "${r[@]}" EXPIRE hello 300 >/dev/null
    "${r[@]}" DEL user:1 >/dev/null
    "${r[@]}" SET $'two\nlines' x >/dev/null # a key with a newline: printed escaped
}
DEMO_EVENTS=6

count=()
[ "$once" = 0 ] || count=(--count "$DEMO_EVENTS")
"$TAIL" --ready-file "$tmp/tail.ready" "${count[@]}" &
tail_pid=$!
for _ in $(seq 200); do
    [ -f "$tmp/tail.ready" ] && break
    kill -0 "$tail_pid" 2>/dev/null || {
        wait "$tail_pid" || true
        tail_pid=''
        die "the consumer exited before it was ready"
    }
    sleep 0.1
done
[ -f "$tmp/tail.ready" ] || die "the consumer is not ready after 20 s"

say "demo: SET hello, HSET user:1, LPUSH jobs, EXPIRE hello, DEL user:1, SET \$'two\\nlines'"
demo_writes

if [ "$once" = 0 ]; then
    say "try more in another terminal:  redis-cli -p $port SET hello world"
    wait "$tail_pid"
    exit $?
fi

deadline=$((SECONDS + ${ONCE_TIMEOUT:-30}))
while kill -0 "$tail_pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] ||
        die "the $DEMO_EVENTS demo events did not all arrive within ${ONCE_TIMEOUT:-30} s (INFO key_evt_amqp: $("$REDIS_CLI_BIN" -p "$port" INFO key_evt_amqp | tr -d '\r' | grep -v '^#' | tr '\n' ' '))"
    sleep 0.2
done
rc=0
wait "$tail_pid" || rc=$?
tail_pid=''
[ "$rc" -eq 0 ] || die "the consumer failed (exit $rc)"
say "ok: $DEMO_EVENTS events arrived"
