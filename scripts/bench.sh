#!/usr/bin/env bash
# The benchmark in both durability modes: the `max` load-test profile (the
# offered rate ramps up until a step loses a message or its p99 exceeds the
# bound; crates/logdist-loadtest/README.md, "The benchmark") run once with
# logdist in memory mode and once in disk mode (`--durability memory|disk`),
# then one Markdown table comparing them: the highest sustained rate, its MB/s
# and p99, and logdist's CPU and peak RSS.
#
#   scripts/bench.sh                      # 2 x 120 s ramps, table on stdout and in a file
#   scripts/bench.sh -d 30s -o bench.md   # shorter ramps, the table in bench.md
#
# Builds the release binaries first (cargo build --release) unless
# --no-build. Each run's full results (summary, timeline, chart) go to
# loadtest/results/bench-<time>/<mode>/. The two cores are shared by the load
# generator and logdist: compare the modes with each other, not with other
# machines. Exit status: 0 both ramps ran; 1 one could not (its row says
# why; e.g. a logdist without disk mode); 2 usage.

set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: scripts/bench.sh [-d DURATION] [-o FILE] [--no-build] [-- LOADTEST_ARGS...]
  -d DURATION   time budget of each ramp (default: the max profile's, 120s)
  -o FILE       also write the table to FILE (default: <results>/bench.md)
  --no-build    use the binaries in target/release as they are
  -- ARGS       more arguments for logdist-loadtest max (e.g. --checksum fnv)
USAGE
}

die() {
    echo "bench.sh: $*" >&2
    exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
duration=""
out=""
build=1
extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
    -d)
        [[ $# -ge 2 ]] || { usage; exit 2; }
        duration=$2
        shift 2
        ;;
    -o)
        [[ $# -ge 2 ]] || { usage; exit 2; }
        out=$2
        shift 2
        ;;
    --no-build)
        build=0
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    --)
        shift
        extra=("$@")
        break
        ;;
    *)
        usage
        exit 2
        ;;
    esac
done

target_dir=${CARGO_TARGET_DIR:-$root/target}
loadtest=$target_dir/release/logdist-loadtest
if ((build)); then
    command -v cargo >/dev/null 2>&1 || die "cargo not found (or pass --no-build with built binaries)"
    (cd "$root" && cargo build --release -p logdist -p logdist-loadtest) || die "the release build failed"
fi
[[ -x $loadtest && -x $target_dir/release/logdist ]] ||
    die "no release binaries in $target_dir/release (run without --no-build)"
"$loadtest" max --help 2>/dev/null | grep -q -- '--durability' ||
    die "this logdist-loadtest has no --durability flag: it needs a load tester with durability modes"

results=$root/loadtest/results/bench-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$results" || die "cannot create $results"
[[ -n $out ]] || out=$results/bench.md

# One ramp; prints "msg/s|MB/s|p99 ms|CPU|RSS" for the table (fails, with
# the reason in the first column, when it could not run).
ramp() {
    local mode=$1 dir=$results/$1 args=(max --durability "$1" --quiet)
    [[ -z $duration ]] || args+=(--duration "$duration")
    mkdir -p "$dir"
    echo "bench.sh: ramping in $mode mode (results in $dir)" >&2
    # Exit 1 is a ramp whose last step failed, as every ramp's does: the
    # table reads what it sustained. Only 2 (could not run) stops the bench.
    local status=0
    (cd "$root" && "$loadtest" "${args[@]}" --results-dir "$dir" ${extra[@]+"${extra[@]}"}) \
        >"$dir/stdout.txt" 2>"$dir/stderr.txt" || status=$?
    local max distributor
    max=$(grep -m1 '^MAX SUSTAINED:' "$dir/stdout.txt" || true)
    distributor=$(grep -m1 '^distributor:' "$dir/stdout.txt" || true)
    if ((status == 2)) || [[ -z $max ]]; then
        # Could not run: say why (the last line logdist-loadtest or logdist
        # printed) in the table and on stderr, and go on with the other mode.
        local why
        why=$(grep -E '^(logdist|logdist-loadtest):' "$dir/stderr.txt" | tail -n 1 || true)
        [[ -n $why ]] || why=$(tail -n 1 "$dir/stderr.txt")
        echo "bench.sh: the $mode run could not be carried out: ${why:-no output} (see $dir)" >&2
        echo "could not run: ${why//|//}||||"
        return 1
    fi
    local rate mbs p99 cpu rss
    rate=$(sed -n 's/^MAX SUSTAINED: \([0-9.]*\) msg\/s.*/\1/p' <<<"$max")
    mbs=$(sed -n 's/.*msg\/s, \([0-9.]*\) MB\/s.*/\1/p' <<<"$max")
    p99=$(sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' <<<"$max")
    cpu=$(sed -n 's/.*CPU avg \([0-9.]* %\|n\/a\).*/\1/p' <<<"$distributor")
    rss=$(sed -n 's/.*peak RSS \([0-9.]* MiB\|n\/a\).*/\1/p' <<<"$distributor")
    echo "${rate:-none}|${mbs:-0}|${p99:--}|${cpu:--}|${rss:--}"
}

failed=0
memory=$(ramp memory) || failed=1
disk=$(ramp disk) || failed=1
{
    echo "| durability | max sustained (msg/s) | MB/s payload | p99 at max (ms) | logdist CPU avg | logdist peak RSS |"
    echo "|---|---:|---:|---:|---:|---:|"
    IFS='|' read -r rate mbs p99 cpu rss <<<"$memory"
    echo "| memory | $rate | $mbs | $p99 | $cpu | $rss |"
    IFS='|' read -r rate mbs p99 cpu rss <<<"$disk"
    echo "| disk | $rate | $mbs | $p99 | $cpu | $rss |"
    echo
    echo "\`logdist-loadtest max\`${duration:+ --duration $duration}, $(nproc) cores, $(date -u +%Y-%m-%d); results in ${results#"$root"/}."
} | tee "$out"
exit "$failed"
