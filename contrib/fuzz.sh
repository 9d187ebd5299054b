#!/bin/sh
# Fuzzes every parser of outside bytes with libFuzzer and AddressSanitizer.
#
#   contrib/fuzz.sh [SECONDS] [TARGET...]     (default 60 s per target, every target)
#   FUZZ_RUNS=1000000 contrib/fuzz.sh [TARGET...]   run each target for that many executions
#
# With FUZZ_RUNS and no SECONDS there is no time limit; with both, the first one reached ends
# the target. Builds `wdsync-fuzz` with `-sanitize=fuzzer,address -D FUZZING` in .build-fuzz
# (the normal build is not touched), then runs each target, starting from the committed seeds
# in contrib/fuzz/corpus/TARGET/ (the corpus the fuzzer grows is kept in .build-fuzz/work).
# Prints `TARGET: N execs, C crashes` per target and exits 1 if any target crashed (or leaked,
# timed out, or ran out of memory). A crashing input is left in .build-fuzz/work/TARGET/;
# copy it into contrib/fuzz/corpus/TARGET/ and it becomes a regression test (FuzzTests), then
# reproduce it with `.build/debug/wdsync-fuzz TARGET FILE`.
set -eu
runs=${FUZZ_RUNS:-}
case ${1:-} in
    ''|*[!0-9]*) seconds=$( [ -n "$runs" ] && echo 0 || echo 60 ) ;;
    *) seconds=$1; shift ;;
esac
cd "$(dirname "$0")/.."
[ -d /opt/swift/usr/bin ] && PATH=/opt/swift/usr/bin:$PATH
mkdir -p .build-fuzz

if ! swift build --scratch-path .build-fuzz -c release --product wdsync-fuzz \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING > .build-fuzz/build.log 2>&1; then
    grep -v "ld.gold: warning" .build-fuzz/build.log >&2
    echo "fuzz.sh: the libFuzzer build failed" >&2
    exit 2
fi
binary=.build-fuzz/release/wdsync-fuzz
work=.build-fuzz/work
failed=0
targets=${*:-$(ls contrib/fuzz/corpus)}
for target in $targets; do
    [ -d contrib/fuzz/corpus/"$target" ] || { echo "fuzz.sh: no target $target" >&2; exit 2; }
    # Inputs no longer than needed: a Maildir file name is at most 255 bytes, and a folder
    # segment is cut (and hashed) at 255 bytes; longer inputs only cost time.
    case $target in
        maildirnames|foldernames) max_len=1024 ;;
        *) max_len=65536 ;;
    esac
    dir=$work/$target
    mkdir -p "$dir/corpus" "$dir/artifacts"
    cp contrib/fuzz/corpus/"$target"/* "$dir/corpus/"
    # Crashes stop the run (libFuzzer's default); the Swift runtime's interactive backtracer
    # is turned off so that a crash ends the process at once.
    SWIFT_BACKTRACE=enable=no WDSYNC_FUZZ_TARGET=$target "$binary" "$dir/corpus" \
        -max_total_time="$seconds" ${runs:+-runs="$runs"} -max_len=$max_len -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$dir/artifacts/" -print_final_stats=1 > "$dir/log" 2>&1 || true
    execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$dir/log")
    crashes=$(find "$dir/artifacts" -type f | wc -l)
    echo "$target: ${execs:-0} execs, $crashes crashes"
    if [ "$crashes" -ne 0 ] || [ -z "$execs" ]; then
        failed=1
        grep -E 'ERROR|Fatal error|SUMMARY' "$dir/log" | head -5 >&2 || true
        find "$dir/artifacts" -type f >&2
    fi
done
exit $failed
