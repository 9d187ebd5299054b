#!/usr/bin/env bash
# Runs every wdsync test on a fresh Debian machine: installs what the tests use (the real
# Maildir readers notmuch and neomutt, Python's websockets for WebSocket interop, man-db and
# groff for the man pages, zsh and fish for the completions, curl and jq for the simulator's
# --help example; systemd-analyze, where installed, checks the systemd units), then
# `swift test`. Needs root (or sudo) for apt-get and for the disk-full test's small tmpfs.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
for pkg in libsqlite3-dev zlib1g-dev libssl-dev notmuch neomutt bsdutils openssl man-db groff-base zsh fish curl jq; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -c 'import websockets.asyncio.server' 2>/dev/null || python3 -m pip install --quiet 'websockets>=13'

export PATH="/opt/swift/usr/bin:$PATH"
log=$(mktemp)
set +e
swift test 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One plain closing line with the counts, whatever the test library printed.
total=$(grep -oE 'Test run with [0-9]+ tests' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
failed=$(grep -cE '^(✘|􀢄) Test .* failed after' "$log" || true)
passed=$(( total - failed ))
echo "tests: $passed passed, $failed failed"
rm -f "$log"
exit "$status"
