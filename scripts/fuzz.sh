#!/usr/bin/env bash
# Fuzzes the parsers of bytes the module does not control (fuzz/fuzz_targets/): AMQP frames,
# fallback-list items, cluster-bus payloads and CLUSTER NODES text, URIs, load arguments and
# key masks. Each target runs for SECONDS, one after another, one libFuzzer process at a time,
# under `nice -n 19` (the machine is shared). Prints per target: executions, exec/s, coverage
# (cov and ft from libFuzzer's last status line), corpus entries and findings. Not run by CI.
#
# Usage: scripts/fuzz.sh [SECONDS [TARGET...]]      (default: 600 seconds, every target)
#
# cargo fuzz needs nightly flags: on the stable toolchain RUSTC_BOOTSTRAP=1 allows them. Installs
# cargo-fuzz when missing. Corpora grow in fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET and
# fuzz/regressions/TARGET), crashes land in fuzz/artifacts/TARGET, logs in fuzz/logs/TARGET.log.
#
# Environment:
#   SANITIZER=address   or none (faster; catches panics and overflow, not memory errors)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-600}
shift || true
SANITIZER=${SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

mkdir -p fuzz/logs
nice -n 19 cargo fuzz build --sanitizer "$SANITIZER"

summary=()
total_findings=0
for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    artifacts=fuzz/artifacts/$target
    log=fuzz/logs/$target.log
    mkdir -p "$corpus" "$artifacts"
    seeds=()
    for dir in "fuzz/seeds/$target" "fuzz/regressions/$target"; do
        [ -d "$dir" ] && seeds+=("$dir")
    done
    before=$(find "$artifacts" -type f | wc -l)
    echo "fuzz: $target for ${SECONDS_PER_TARGET}s (log: $log)"
    rc=0
    # One process (no -fork, no -jobs): libFuzzer stops at the first finding.
    nice -n 19 cargo fuzz run --sanitizer "$SANITIZER" "$target" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
    after=$(find "$artifacts" -type f | wc -l)
    findings=$((after - before))
    total_findings=$((total_findings + findings))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    status=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
    entries=$(find "$corpus" -type f | wc -l)
    line="$target: ${SECONDS_PER_TARGET}s, ${execs:-?} executions, ${rate:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}, corpus $entries, findings $findings (exit $rc)"
    if [ "$findings" -gt 0 ] || [ "$rc" -ne 0 ]; then
        line+=$'\n'"  $(grep -m1 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" || echo 'see the log')"
        line+=$'\n'"  $(ls -t "$artifacts" | head -1)"
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "fuzz: summary"
printf '%s\n' "${summary[@]}"
[ "$total_findings" -eq 0 ]
