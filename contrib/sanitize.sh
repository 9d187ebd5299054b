#!/bin/sh
# Runs the test suite under AddressSanitizer and ThreadSanitizer; both must be clean.
#
#   contrib/sanitize.sh [address|thread] [-- swift test options, e.g. --filter Live]
#
# Each sanitizer builds in its own scratch path (.build-asan, .build-tsan), so the normal
# .build is untouched. Without an argument both run. Exits non-zero if a test fails or a
# sanitizer reports anything (a report fails the test process).
set -eu
cd "$(dirname "$0")/.."
[ -d /opt/swift/usr/bin ] && PATH=/opt/swift/usr/bin:$PATH
which=${1:-both}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
# Stop at the first report, with the Swift runtime's backtracer out of the way.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
status=0
for sanitizer in address thread; do
    [ "$which" = both ] || [ "$which" = "$sanitizer" ] || continue
    scratch=.build-$( [ $sanitizer = address ] && echo asan || echo tsan )
    echo "== swift test --sanitize=$sanitizer $*"
    if swift build --build-tests --sanitize=$sanitizer --scratch-path "$scratch" &&
       swift test --skip-build --sanitize=$sanitizer --scratch-path "$scratch" "$@"; then
        echo "== $sanitizer: clean"
    else
        echo "== $sanitizer: FAILED"
        status=1
    fi
done
exit $status
