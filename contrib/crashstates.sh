#!/usr/bin/env bash
# Every crash state a power cut can leave during an initial and an incremental `wdsync --once`
# (docs/durability.md, "The crash-state test"): the recorded runs are replayed state by state
# and each state is recovered with the next --once. Prints "N states, N failures"; each failure
# names its run, its point in the trace, the operations lost and the seed.
#
#   contrib/crashstates.sh [SEED]          # SEED picks the sampled subsets where there are too many
#   WDSYNC_CRASHSTATES_KEEP=DIR contrib/crashstates.sh   # keep each failing state (cache, Maildir, trace, log) in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
swift build --build-tests >/dev/null
log=$(mktemp)
set +e
WDSYNC_CRASHSTATES=full WDSYNC_CRASHSTATES_SEED="${1:-1}" \
    swift test --skip-build --filter CrashStateTests >"$log" 2>&1
status=$?
set -e
grep -E '^↳ (initial|incremental)' "$log" | sed 's/^↳ /FAIL /' || true
line=$(grep -oE 'crash states: [0-9]+ states, [0-9]+ failures' "$log" | tail -1 | sed 's/^crash states: //')
if [ -z "$line" ]; then
    cat "$log"
    echo "the crash-state test did not run to the end" >&2
    exit 1
fi
echo "$line"
rm -f "$log"
exit "$status"
