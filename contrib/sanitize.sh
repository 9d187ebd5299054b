#!/bin/sh
# Runs the test suite under AddressSanitizer and ThreadSanitizer; both must be clean.
#
#   contrib/sanitize.sh [address|thread] [-- swift test options, e.g. --filter Live]
#
# Each sanitizer builds in its own scratch path (.build-asan, .build-tsan), so the normal
# .build is untouched. Without an argument both run. Exits non-zero if a test fails or a
# sanitizer reports anything, in the test process or in a wdsync it started.
set -eu
cd "$(dirname "$0")/.."
[ -d /opt/swift/usr/bin ] && PATH=/opt/swift/usr/bin:$PATH
which=${1:-both}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
# Stop at the first report, with the Swift runtime's backtracer out of the way.
export SWIFT_BACKTRACE=enable=no
# A small quarantine: ASan keeps freed memory resident in it (256 MiB by default), and the
# tests' memory bounds (a deflate bomb, a ping flood) are about wdsync, not about ASan.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:quarantine_size_mb=16}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
status=0
for sanitizer in address thread; do
    [ "$which" = both ] || [ "$which" = "$sanitizer" ] || continue
    scratch=.build-$( [ $sanitizer = address ] && echo asan || echo tsan )
    # Every process reports into files here: the test runner and the wdsync processes the
    # end-to-end tests start (whose stderr the tests read).
    reports=$PWD/$scratch/reports
    rm -rf "$reports" && mkdir -p "$reports"
    echo "== swift test --sanitize=$sanitizer $*"
    if swift build --build-tests --sanitize=$sanitizer --scratch-path "$scratch" &&
       ASAN_OPTIONS=$ASAN_OPTIONS:log_path=$reports/asan TSAN_OPTIONS=$TSAN_OPTIONS:log_path=$reports/tsan \
       swift test --skip-build --sanitize=$sanitizer --scratch-path "$scratch" "$@"; then
        result=clean
    else
        result=FAILED
        status=1
    fi
    if [ -n "$(ls -A "$reports")" ]; then
        grep -h "SUMMARY" "$reports"/* || true
        result="FAILED, reports in $reports"
        status=1
    fi
    echo "== $sanitizer: $result"
done
exit $status
