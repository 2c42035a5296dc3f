#!/usr/bin/env bash
# A local Redis Cluster with key_evt_amqp loaded on every node: 3 masters and 3 replicas on
# 127.0.0.1, ports 7000-7005 (cluster bus on port + 10000), running in the background.
#
#   scripts/cluster.sh start    run scripts/setup.sh, start the six nodes, create the cluster,
#                               wait until it is ready and print how to use it
#   scripts/cluster.sh status   CLUSTER NODES and, per node, its role and the module's state
#   scripts/cluster.sh stop     shut every node down (SHUTDOWN NOSAVE) and remove the data
#   scripts/cluster.sh start --server NAME   the nodes run another server of scripts/servers.sh
#                               (valkey-8.0, redis-8.0, valkey-8.1); status and stop follow it
#
# Environment:
#   CLUSTER_BASE_PORT=7000       port of the first node; the others follow
#   CLUSTER_DIR=/tmp/key_evt_amqp-cluster   where the nodes keep their files (one directory each)
#   CLUSTER_NODE_TIMEOUT=5000    cluster-node-timeout in ms (failure detection and failover)
#   MODULE_ARGS='$ 127.0.0.1 5672 guest guest 30 amq.direct key_evt_amqp 1 0 ALL'
#                                the module's load arguments (EVENTS HOST PORT USER PASS ...)
#   SKIP_SETUP=1                 do not run scripts/setup.sh first
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "cluster: $*"; }
die() {
    echo "cluster: ERROR: $*" >&2
    exit 1
}
# The comment block at the top of this file.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

command=${1:-}
server=''
if [ "${2:-}" = --server ]; then
    [ -n "${3:-}" ] || die "--server needs a NAME (see scripts/servers.sh --help)"
    server=$3
fi

DEFAULT_MODULE_ARGS='$ 127.0.0.1 5672 guest guest 30 amq.direct key_evt_amqp 1 0 ALL'
read -r -a margs <<<"${MODULE_ARGS:-$DEFAULT_MODULE_ARGS}"
MODULE=target/release/libkey_evt_amqp.so
TAIL=target/release/examples/tail
NODES=6
DIR=${CLUSTER_DIR:-/tmp/key_evt_amqp-cluster}
# Marks $DIR as ours (`stop` removes nothing else) and remembers the base port.
MARKER=$DIR/.key_evt_amqp-cluster
NODE_TIMEOUT=${CLUSTER_NODE_TIMEOUT:-5000}

# The server: --server, else the one a running cluster was started with, else Debian 12's.
SERVER_FILE=$DIR/.server
[ -n "$server" ] || [ ! -f "$SERVER_FILE" ] || server=$(cat "$SERVER_FILE")
REDIS_SERVER_BIN=redis-server
REDIS_CLI_BIN=redis-cli
if [ -n "$server" ]; then
    read -r _ REDIS_SERVER_BIN REDIS_CLI_BIN < <(scripts/servers.sh "$server") ||
        die "scripts/servers.sh $server failed"
    [ -n "$REDIS_SERVER_BIN" ] || die "scripts/servers.sh $server gave no server"
fi

# The base port: the environment, else the one a running cluster was started with, else 7000.
if [ -n "${CLUSTER_BASE_PORT:-}" ]; then
    BASE=$CLUSTER_BASE_PORT
elif [ -f "$MARKER" ]; then
    BASE=$(cat "$MARKER")
else
    BASE=7000
fi
case "$BASE" in
'' | *[!0-9]*) die "CLUSTER_BASE_PORT must be a number, not '$BASE'" ;;
esac
if [ "$BASE" -lt 1024 ] || [ $((BASE + NODES - 1 + 10000)) -gt 65535 ]; then
    die "CLUSTER_BASE_PORT=$BASE: need 1024 <= port and port + $((NODES - 1)) + 10000 <= 65535"
fi
ports=()
for ((i = 0; i < NODES; i++)); do ports+=($((BASE + i))); done
LAST=$((BASE + NODES - 1))

# redis-cli with a deadline, so that a hung node cannot hang the script.
rcli() {
    local port=$1
    shift
    timeout 5 "$REDIS_CLI_BIN" -h 127.0.0.1 -p "$port" "$@"
}
up() { [ "$(rcli "$1" PING 2>/dev/null)" = PONG ]; }
port_taken() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
# `field` from the `INFO`-like reply of `rcli PORT ARGS...`; empty if missing.
field() {
    local name=$1
    shift
    rcli "$@" 2>/dev/null | tr -d '\r' | sed -n "s/^$name://p"
}
# The pid a node wrote, if that process is a redis-server still running.
node_pid() {
    local pidfile=$DIR/$1/redis.pid pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in redis-server | valkey-server) ;; *) return 1 ;; esac
    echo "$pid"
}
# The last lines of each node's log (of the nodes that are down, with `--down`).
tail_logs() {
    local port
    for port in "${ports[@]}"; do
        [ -s "$DIR/$port/redis.log" ] || continue
        [ "${1:-}" != --down ] || ! up "$port" || continue
        echo "--- $DIR/$port/redis.log (last lines)" >&2
        tail -n 4 "$DIR/$port/redis.log" >&2
    done
}

# Shuts down the nodes that answer (SHUTDOWN NOSAVE), waits for them to exit, kills those that
# do not within 10 s; prints how many it stopped.
shutdown_nodes() {
    local port pid stopped=0
    for port in "${ports[@]}"; do
        pid=$(node_pid "$port") || pid=''
        if up "$port"; then
            # The connection closes under redis-cli's feet: that is success.
            rcli "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
        fi
        [ -n "$pid" ] || continue
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "cluster: node $port (pid $pid) did not shut down within 10 s: killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
        stopped=$((stopped + 1))
    done
    echo "$stopped"
}

# A failed start: stop what runs, keep the logs (the next start removes them), and die.
abort_start() {
    shutdown_nodes >/dev/null
    die "$* (logs kept in $DIR; the next start removes them)"
}

# Every node answers, knows all six, reports cluster_state:ok, and every replica is in sync.
cluster_ready() {
    local port
    for port in "${ports[@]}"; do
        [ "$(field cluster_state "$port" CLUSTER INFO)" = ok ] || return 1
        [ "$(field cluster_known_nodes "$port" CLUSTER INFO)" = "$NODES" ] || return 1
        if [ "$(field role "$port" INFO replication)" = slave ]; then
            [ "$(field master_link_status "$port" INFO replication)" = up ] || return 1
        fi
    done
}

print_usage() {
    local exchange=${margs[6]:-amq.direct} routing_key=${margs[7]:-redis_keyspace_events}
    cat <<EOF
cluster: 3 masters + 3 replicas on 127.0.0.1:$BASE-$LAST, data in $DIR
  write (follows redirections):   redis-cli -c -p $BASE set foo bar
  watch the events (masters publish to exchange '$exchange', routing key '$routing_key'):
                                  $TAIL $exchange $routing_key
  roles and the module's state:   scripts/cluster.sh status
  stop and remove the data:       scripts/cluster.sh stop
EOF
    if [ "${margs[1]:-127.0.0.1}:${margs[2]:-5672}:${margs[3]:-guest}" != "127.0.0.1:5672:guest" ]; then
        echo "  (the broker is not guest@127.0.0.1:5672: give $TAIL an AMQP_URL=amqp://USER:PASS@HOST:PORT/%2f)"
    fi
}

# ---------------------------------------------------------------- start
start_node() { # $1 = port
    local port=$1 dir=$DIR/$1
    mkdir -p "$dir"
    "$REDIS_SERVER_BIN" --port "$port" --bind 127.0.0.1 --dir "$dir" \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        --save '' --appendonly no --enable-module-command yes \
        --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout "$NODE_TIMEOUT" --repl-diskless-sync-delay 0 \
        --loadmodule "$PWD/$MODULE" "${margs[@]}" ||
        die "redis-server on port $port did not start"
}

cmd_start() {
    local port running=0 n pid
    for port in "${ports[@]}"; do
        if up "$port"; then running=$((running + 1)); fi
    done
    if [ "$running" -eq "$NODES" ] && [ -f "$MARKER" ]; then
        say "already running"
        print_usage
        return 0
    fi
    if [ "$running" -gt 0 ]; then
        die "$running of the ports $BASE-$LAST already answer PING, not a cluster started by this script from $DIR (or only part of it): run 'scripts/cluster.sh stop', or set CLUSTER_BASE_PORT"
    fi
    if [ -e "$DIR" ]; then
        [ -f "$MARKER" ] || die "$DIR exists and was not made by this script; set CLUSTER_DIR"
        for port in "${ports[@]}"; do
            if pid=$(node_pid "$port"); then
                die "node $port (pid $pid) runs but does not answer: run 'scripts/cluster.sh stop'"
            fi
        done
        say "removing $DIR, left over from an earlier run"
        rm -rf "$DIR"
    fi
    for port in "${ports[@]}"; do
        for n in "$port" $((port + 10000)); do
            ! port_taken "$n" || die "port $n is in use; choose other ports with CLUSTER_BASE_PORT"
        done
    done

    if [ "${SKIP_SETUP:-0}" != 1 ]; then
        scripts/setup.sh
    fi
    [ -f "$MODULE" ] || die "$MODULE is missing; run scripts/setup.sh"
    command -v "$REDIS_SERVER_BIN" >/dev/null 2>&1 || die "$REDIS_SERVER_BIN not found; run scripts/setup.sh"
    command -v "$REDIS_CLI_BIN" >/dev/null 2>&1 || die "$REDIS_CLI_BIN not found; run scripts/setup.sh"

    # The load arguments as shown to the user: the password (argument 4) is never echoed.
    local shown_args=("${margs[@]}")
    [ "${#shown_args[@]}" -le 4 ] || shown_args[4]='***'
    say "starting ${ports[*]} with $MODULE ${shown_args[*]}"
    mkdir -p "$DIR"
    echo "$BASE" >"$MARKER"
    [ -z "$server" ] || echo "$server" >"$SERVER_FILE"
    for port in "${ports[@]}"; do start_node "$port"; done
    # Daemonized: a bad module argument shows only in the log, after the fork. The pid file
    # is written before the module loads: a node whose pid is gone has exited.
    local deadline=$((SECONDS + 10)) waiting
    while :; do
        waiting=()
        for port in "${ports[@]}"; do
            up "$port" && continue
            if [ -f "$DIR/$port/redis.pid" ] && ! node_pid "$port" >/dev/null; then
                tail_logs --down
                abort_start "node $port exited at start (bad MODULE_ARGS?)"
            fi
            waiting+=("$port")
        done
        [ "${#waiting[@]}" -gt 0 ] || break
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail_logs --down
            abort_start "node(s) ${waiting[*]} do not answer PING after 10 s"
        fi
        sleep 0.1
    done

    local addrs=()
    for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
    say "creating the cluster (redis-cli --cluster create ... --cluster-replicas 1)"
    if ! "$REDIS_CLI_BIN" --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
        >"$DIR/create.log" 2>&1; then
        cat "$DIR/create.log" >&2
        abort_start "redis-cli --cluster create failed"
    fi
    deadline=$((SECONDS + 30))
    until cluster_ready; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            rcli "$BASE" CLUSTER NODES >&2 || true
            tail_logs
            abort_start "the cluster is not ready (cluster_state:ok, replicas in sync) after 30 s"
        fi
        sleep 0.2
    done
    say "ready"
    print_usage
}

# ---------------------------------------------------------------- stop
cmd_stop() {
    local port stopped
    if [ ! -e "$DIR" ]; then
        say "not running (no $DIR)"
        return 0
    fi
    [ -f "$MARKER" ] || die "$DIR was not made by this script; not touching it (set CLUSTER_DIR)"
    stopped=$(shutdown_nodes)
    for port in "${ports[@]}"; do
        ! up "$port" || die "port $port still answers PING (a server this script did not start?)"
    done
    rm -rf "$DIR"
    say "stopped $stopped node(s), removed $DIR"
}

# ---------------------------------------------------------------- status
cmd_status() {
    local port any='' role state info
    for port in "${ports[@]}"; do
        if up "$port"; then
            any=$port
            break
        fi
    done
    if [ -z "$any" ]; then
        say "not running (no node answers on 127.0.0.1:$BASE-$LAST)"
        return 1
    fi
    echo "=== redis-cli -p $any cluster nodes"
    rcli "$any" CLUSTER NODES | tr -d '\r' | sort -t' ' -k2
    echo
    echo "=== per node: role, cluster_state, and INFO key_evt_amqp"
    for port in "${ports[@]}"; do
        if ! up "$port"; then
            printf '%s  DOWN\n' "$port"
            continue
        fi
        role=$(field role "$port" INFO replication)
        state=$(field cluster_state "$port" CLUSTER INFO)
        info=$(rcli "$port" INFO key_evt_amqp 2>/dev/null | tr -d '\r' |
            sed -n -E 's/^key_evt_amqp_(connection|publishing|last_error|events_published|events_confirmed|fallback_length):(.*)$/\1=\2/p' |
            tr '\n' ' ')
        printf '%s  %-6s cluster_state=%s  %s\n' "$port" "$role" "$state" "${info:-(module not loaded)}"
    done
}

case "$command" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
