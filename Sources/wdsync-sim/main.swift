import Foundation
import WildDuckSim
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every option, documented where it is declared; `--help` is generated from this table.
struct Option {
    let name: String
    let value: String?
    let help: String
}

let options: [Option] = [
    Option(name: "--host", value: "ADDR", help: "IPv4 address to listen on (default 127.0.0.1)"),
    Option(name: "--port", value: "N", help: "TCP port; 0 picks a free one (default 0)"),
    Option(name: "--port-file", value: "FILE", help: "write the bound port number to FILE once listening"),
    Option(name: "--user", value: "NAME", help: "account username (default demo)"),
    Option(name: "--password", value: "PASS", help: "account password (default demo)"),
    Option(name: "--corpus", value: "DIR", help: "deliver every regular file under DIR (recursively, sorted) into INBOX"),
    Option(name: "--generate", value: "N", help: "generate N synthetic messages spread over all folders (default 0)"),
    Option(name: "--seed", value: "N", help: "seed for the deterministic generator (default 1)"),
    Option(name: "--small", value: nil, help: "generate ~2 KB messages instead of the realistic size mix"),
    Option(name: "--journal-ttl", value: "SECONDS", help: "how long SSE journal entries are kept (default 10800)"),
    Option(name: "--heartbeat", value: "SECONDS", help: "SSE idle heartbeat interval (default 15)"),
    Option(name: "--max-message-size", value: "BYTES", help: "largest upload accepted (default 67108864, WildDuck's 64 MiB)"),
    Option(name: "--help", value: nil, help: "show this help and exit"),
]

func usage() -> String {
    var s = "usage: wdsync-sim [options]\n\nA WildDuck-compatible REST/SSE server with an in-memory account, for demos, tests and benchmarks.\n\noptions:\n"
    for o in options {
        let left = o.value.map { "\(o.name) \($0)" } ?? o.name
        s += "  " + left.padding(toLength: 24, withPad: " ", startingAt: 0) + o.help + "\n"
    }
    s += "\nRuns until SIGINT or SIGTERM.\n" + tryIt
    return s
}

/// How to play with it: the demo invites people to, so --help says how to log in and how to
/// deliver a message. The delivery is WildDuck's own REST API (POST /authenticate, the mailbox
/// list, an upload), so the same lines work against a real server; a test runs them.
let tryIt = #"""

Sync it (the simulator has no /api prefix: --server is the URL it prints):
  wdsync-sim --port 8080 --generate 50 &
  printf 'demo\n' > pw && chmod 600 pw
  wdsync --server http://127.0.0.1:8080 --user demo --password-file pw \
         --maildir ./mail --db ./cache.sqlite          # add --once for one sync

Deliver a message into INBOX while wdsync runs (curl and jq):
  URL=http://127.0.0.1:8080
  AUTH=$(curl -s -X POST "$URL/authenticate" -H 'Content-Type: application/json' \
         -d '{"username":"demo","password":"demo","token":true}')
  TOKEN=$(printf '%s' "$AUTH" | jq -r .token); ID=$(printf '%s' "$AUTH" | jq -r .id)
  INBOX=$(curl -s -H "X-Access-Token: $TOKEN" "$URL/users/$ID/mailboxes" \
          | jq -r '.results[] | select(.path == "INBOX") | .id')
  printf 'From: a@example.org\r\nSubject: hello\r\n\r\nHi!\r\n' \
    | curl -s -X POST "$URL/users/$ID/mailboxes/$INBOX/messages" -H "X-Access-Token: $TOKEN" \
           -H 'Content-Type: message/rfc822' --data-binary @-

"""#

func fail(_ msg: String) -> Never {
    FileHandle.standardError.write(Data("wdsync-sim: \(msg)\n".utf8))
    exit(2)
}

var values: [String: String] = [:]
var args = Array(CommandLine.arguments.dropFirst())
while !args.isEmpty {
    var a = args.removeFirst()
    var inline: String?
    if let eq = a.firstIndex(of: "="), a.hasPrefix("--") {
        inline = String(a[a.index(after: eq)...])
        a = String(a[..<eq])
    }
    guard let opt = options.first(where: { $0.name == a }) else { fail("unknown option \(a)\n\n" + usage()) }
    if opt.value == nil {
        values[a] = "true"
    } else if let v = inline {
        values[a] = v
    } else {
        guard !args.isEmpty else { fail("\(a) needs a value") }
        values[a] = args.removeFirst()
    }
}
if values["--help"] != nil {
    FileHandle.standardOutput.write(Data(usage().utf8))
    exit(0)
}

let host = values["--host"] ?? "127.0.0.1"
guard let port = UInt16(values["--port"] ?? "0") else { fail("invalid --port") }
guard let generateCount = Int(values["--generate"] ?? "0"), generateCount >= 0 else { fail("invalid --generate") }
guard let seed = UInt64(values["--seed"] ?? "1") else { fail("invalid --seed") }
let user = values["--user"] ?? "demo"

let account = SimAccount(username: user, password: values["--password"] ?? "demo")
if let ttl = values["--journal-ttl"] {
    guard let t = Double(ttl), t > 0 else { fail("invalid --journal-ttl") }
    account.setJournalTTL(seconds: t)
}
if let max = values["--max-message-size"] {
    guard let n = Int(max), n > 0 else { fail("invalid --max-message-size") }
    account.maxMessageSize = n
}
do {
    let work = try account.createMailbox(path: "Work")
    _ = work
    try account.createMailbox(path: "Work/Projects")
    try account.createMailbox(path: "Newsletters")
    guard let inbox = account.mailboxId(path: "INBOX") else { fail("no INBOX") }
    if let corpus = values["--corpus"] {
        let n = try account.seed(directory: corpus, mailboxId: inbox)
        FileHandle.standardError.write(Data("wdsync-sim: seeded \(n) messages from \(corpus)\n".utf8))
    }
    if generateCount > 0 {
        let ids = account.mailboxes().filter { !$0.hidden }.map { $0.id }
        let t0 = Date()
        try account.generate(count: generateCount, mailboxIds: ids, seed: seed, sizeMix: values["--small"] != nil ? .small : .realistic)
        FileHandle.standardError.write(Data(String(format: "wdsync-sim: generated %d messages in %.2fs\n", generateCount, Date().timeIntervalSince(t0)).utf8))
    }
} catch {
    fail("setup failed: \(error)")
}

let server = SimServer(account: account)
if let hb = values["--heartbeat"] {
    guard let h = Double(hb), h > 0 else { fail("invalid --heartbeat") }
    server.setSSEHeartbeat(seconds: h)
}
do {
    try server.start(host: host, port: port)
} catch {
    fail("\(error)")
}
if let pf = values["--port-file"] {
    do { try "\(server.port)\n".write(toFile: pf, atomically: true, encoding: .utf8) } catch { fail("cannot write \(pf): \(error)") }
}
FileHandle.standardOutput.write(Data("wdsync-sim listening on \(server.baseURL) (user \(user))\n".utf8))

// SIGINT/SIGTERM: ignore the default action and handle them on the main queue.
var sources: [any DispatchSourceSignal] = []
for sig in [SIGINT, SIGTERM] {
    signal(sig, SIG_IGN)
    let src = DispatchSource.makeSignalSource(signal: sig, queue: .main)
    src.setEventHandler {
        FileHandle.standardError.write(Data("wdsync-sim: signal \(sig), stopping\n".utf8))
        server.stop()
        _exit(0)   // skip atexit teardown: streams may still be unwinding on other threads
    }
    src.resume()
    sources.append(src)
}
dispatchMain()
