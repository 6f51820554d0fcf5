#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), one
# after the other, and stops at the first crash, leak or hang. Prints one
# summary line per target: runs, coverage, crashes.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; on a
# stable toolchain it sets RUSTC_BOOTSTRAP=1 instead. The committed seed
# corpus (fuzz/corpus/<target>) is only read; what the fuzzer adds goes to
# fuzz/target/corpus/<target>, crash inputs to fuzz/artifacts/<target>.
# docs/security.md, section "Fuzzing", describes the targets.
#
# Environment: FUZZ_NICE (default 19) is the niceness of the fuzzer, so it
# yields to everything else on the machine; FUZZ_ARGS adds libFuzzer flags.
set -euo pipefail

usage() {
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default: 60 seconds, every target)" >&2
    exit 2
}

seconds=60
if [[ $# -gt 0 ]]; then
    case "$1" in
        -h | --help) usage ;;
        *[!0-9]* | "") usage ;;
        *) seconds=$1 ;;
    esac
    shift
fi
[[ $seconds -gt 0 ]] || usage

cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "error: cargo-fuzz is not installed; install it with: cargo install cargo-fuzz" >&2
    exit 1
fi

# A nightly toolchain where rustup has one, else stable with nightly features unlocked.
cargo=(cargo)
if command -v rustup >/dev/null 2>&1 && rustup toolchain list | grep -q '^nightly'; then
    cargo=(cargo +nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <("${cargo[@]}" fuzz list)
fi

echo "building ${#targets[@]} fuzz targets with ${cargo[*]}..." >&2
nice -n "${FUZZ_NICE:-19}" "${cargo[@]}" fuzz build

logs=target/fuzz-logs
mkdir -p "$logs"
summary=()
status=0
for target in "${targets[@]}"; do
    [[ -d corpus/$target ]] || { echo "error: no fuzz target $target (fuzz/corpus/$target missing)" >&2; exit 2; }
    work=target/corpus/$target
    mkdir -p "$work"
    log=$logs/$target.log
    echo "== $target: ${seconds}s (log: fuzz/$log)" >&2
    # -timeout: an input that takes 10 s is a hang. The first corpus directory
    # is the one libFuzzer adds to; the committed seeds stay as they are.
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    if nice -n "${FUZZ_NICE:-19}" "${cargo[@]}" fuzz run "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -max_len=8192 -print_final_stats=1 \
        ${FUZZ_ARGS:-} >"$log" 2>&1; then
        result="crashes 0"
    else
        status=1
        artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n 1 | sed 's/Test unit written to //' || true)
        result="crashes 1 (${artifact:-see fuzz/$log})"
    fi
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || true)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -n 1 || true)
    line="$target: ${seconds}s, runs ${runs:-?}, ${cov:-cov ?}, $result"
    summary+=("$line")
    echo "$line" >&2
    if [[ $status -ne 0 ]]; then
        tail -n 40 "$log" >&2
        break
    fi
done

echo
echo "fuzz summary ($(date -u +%Y-%m-%dT%H:%MZ), $seconds s per target):"
printf '  %s\n' "${summary[@]}"
exit "$status"
