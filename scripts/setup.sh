#!/usr/bin/env bash
# Prepare this machine to build and try key_evt_amqp. Idempotent; fast when everything is there.
#
#   1. install the missing Debian packages: redis-server, rabbitmq-server, clang, libclang-dev
#   2. make sure RabbitMQ answers AMQP on 127.0.0.1:5672 (start it with `rabbitmq-server -detached`
#      if nothing listens there; a running broker is never stopped or reconfigured)
#   3. cargo build --release --lib --bins --examples
#
# Environment:
#   SETUP_SKIP_BROKER=1   do not check or start the local RabbitMQ
#   RABBITMQ_WAIT=60      seconds to wait for RabbitMQ to accept AMQP connections
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*"; }
die() {
    echo "setup: ERROR: $*" >&2
    exit 1
}

started=$SECONDS
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing"
    SUDO=(sudo)
fi

# ---------------------------------------------------------------- packages
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
have_cmd() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

missing=()
{ pkg_installed redis-server || { have_cmd redis-server && have_cmd redis-cli; }; } || missing+=(redis-server)
{ pkg_installed rabbitmq-server || have_cmd rabbitmq-server; } || missing+=(rabbitmq-server)
{ pkg_installed clang || have_cmd clang; } || missing+=(clang)
pkg_installed libclang-dev || missing+=(libclang-dev)

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} yourself"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "packages present (redis-server, rabbitmq-server, clang, libclang-dev)"
fi

# ---------------------------------------------------------------- RabbitMQ
# True when 127.0.0.1:5672 answers the AMQP 0.9.1 protocol header with a frame (connection.start),
# i.e. the broker accepts AMQP connections, not just TCP.
amqp_ready() {
    local first
    first=$(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672 && printf "AMQP\0\0\011\001" >&3 && head -c 1 <&3' 2>/dev/null | od -An -tx1 | tr -d ' \n') || true
    [ "$first" = "01" ]
}
port_open() {
    timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' 2>/dev/null
}

if [ "${SETUP_SKIP_BROKER:-0}" = 1 ]; then
    say "skipping the RabbitMQ check (SETUP_SKIP_BROKER=1)"
elif amqp_ready; then
    say "RabbitMQ answers on 127.0.0.1:5672"
else
    if port_open; then
        say "something listens on 127.0.0.1:5672 but does not speak AMQP yet; waiting"
    elif pgrep -f 'beam.*rabbit' >/dev/null 2>&1; then
        say "RabbitMQ is running but not listening yet; waiting"
    else
        say "starting RabbitMQ (rabbitmq-server -detached)"
        PATH="$PATH:/usr/sbin:/usr/lib/rabbitmq/bin" "${SUDO[@]}" rabbitmq-server -detached ||
            die "rabbitmq-server -detached failed"
    fi
    wait_s=${RABBITMQ_WAIT:-60}
    deadline=$((SECONDS + wait_s))
    until amqp_ready; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            die "RabbitMQ does not accept AMQP connections on 127.0.0.1:5672 after ${wait_s} s; see /var/log/rabbitmq/"
        fi
        sleep 1
    done
    say "RabbitMQ answers on 127.0.0.1:5672 (after $((SECONDS - started)) s)"
fi

# ---------------------------------------------------------------- build
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install Rust (https://rustup.rs, then 'source ~/.cargo/env') and run me again"

say "cargo build --release --lib --bins --examples"
cargo build --release --lib --bins --examples || die "build failed"
[ -f target/release/libkey_evt_amqp.so ] || die "build finished but target/release/libkey_evt_amqp.so is missing"
[ -x target/release/examples/tail ] || die "build finished but target/release/examples/tail is missing"

say "ok ($((SECONDS - started)) s): module target/release/libkey_evt_amqp.so, consumer target/release/examples/tail"
