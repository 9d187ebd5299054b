#!/usr/bin/env bash
# Builds wdsync and the WildDuck simulator, mirrors the simulator's demo account into ./demo,
# then runs again to show that an unchanged server costs a handful of requests and no writes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

swift build -c release --product wdsync-sim
swift build -c release --product wdsync
bin=$(swift build -c release --show-bin-path)

mkdir -p demo
rm -rf demo/mail demo/cache.sqlite* demo/port
printf 'demo\n' > demo/password
chmod 600 demo/password

"$bin/wdsync-sim" --port-file demo/port --user demo --password demo \
    --corpus Tests/Fixtures/mail-gem --generate 200 &
sim=$!
trap 'kill $sim 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s demo/port ] && break; sleep 0.1; done
port=$(cat demo/port)

sync() {
    "$bin/wdsync" --once --server "http://127.0.0.1:$port" --user demo \
        --password-file demo/password --maildir demo/mail --db demo/cache.sqlite "$@"
}
echo "== first run"
sync -v
echo "== second run (nothing changed on the server)"
sync
echo
echo "Done. Open the mirror with:  neomutt -f demo/mail/INBOX"
echo "Folders: $(cd demo/mail && find . -name cur -type d | sed 's|^\./||; s|/cur$||' | sort | tr '\n' ' ')"
