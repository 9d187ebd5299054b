#!/usr/bin/env bash
# Every crash state a power cut can leave during real wdsync runs (docs/durability.md, "The
# crash-state test"): an initial and an incremental `--once`, a `--once` that pushes the user's
# edits, and the daemon taking live updates and pushing live edits. The recorded runs are
# replayed state by state and each state is recovered with the next --once. Prints
# "N states, N failures" and the time taken; each failure names its run, its point in the
# trace, the operations lost and the seed.
#
#   contrib/crashstates.sh [SEED]          # SEED picks the sampled subsets where there are too many
#   WDSYNC_CRASHSTATES_KEEP=DIR contrib/crashstates.sh   # keep each failing state (cache, Maildir, trace, log) in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
swift build --build-tests >/dev/null
log=$(mktemp)
start=$(date +%s)
set +e
WDSYNC_CRASHSTATES=full WDSYNC_CRASHSTATES_SEED="${1:-1}" \
    swift test --skip-build --filter CrashStateTests >"$log" 2>&1
status=$?
set -e
grep -E '^↳ (initial|incremental|push|live|live-push)[ :]' "$log" | sed 's/^↳ /FAIL /' || true
grep -oE 'crash states \([^)]*\): [0-9]+ states, [0-9]+ failures' "$log" || true
totals=$(grep -oE 'crash states \([^)]*\): [0-9]+ states, [0-9]+ failures' "$log" |
    awk '{ s += $(NF-3); f += $(NF-1); n++ } END { if (n) print n, s, f }')
if [ -z "$totals" ] || [ "${totals%% *}" != 3 ]; then
    cat "$log"
    echo "the crash-state tests did not all run to the end" >&2
    exit 1
fi
read -r _ states failures <<<"$totals"
echo "$states states, $failures failures (seed ${1:-1}, $(( $(date +%s) - start )) s)"
rm -f "$log"
exit "$status"
