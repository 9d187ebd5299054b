#if canImport(Glibc)
import Glibc
#endif
import Foundation
import WildDuckSim

/// What a run is given.
struct RunConfig {
    var seed: UInt64
    var steps: Int
    var enabled: [OpKind]
    var wdsync: String
    /// the option that tells wdsync to go on with a Maildir it refused (74), once wdsync has one
    var continueOption: String?
    /// a step at which the harness itself removes a message from the server behind the oracle's
    /// back: the checker must report it (a self-test of the checker)
    var injectLossAt: Int?
    /// the kinds of the steps, in order, instead of random ones (the choices within each step
    /// stay seeded): a scenario that must happen, for a test
    var script: [OpKind]?
    /// weights that replace the kinds' own (`--weight`), to dwell on some kinds
    var weights: [OpKind: Int] = [:]
    var verbose: Bool
}

/// One seeded run: a simulator, a Maildir and a cache, `steps` random operations, the
/// invariants checked after every step and, at quiet points, the mirror compared with the server.
final class TortureRun {
    let config: RunConfig
    var rng: SplitMix64
    let dir: String
    let maildir: String
    let db: String
    let passwordFile: String
    let account: SimAccount
    let server: SimServer
    var oracle = Oracle()
    /// every Message-ID this run created, wherever
    var known: Set<String> = []
    var daemon: Process?
    /// When the person last wrote a new file (a save, a record, a cp).
    var lastPersonWrite: Date?
    /// Earlier states of the Maildir and the cache, taken at quiet points (the person's backups).
    var snapshots: [String] = []
    /// mutt/neomutt saves whose original is unlinked later: (message, folder of the original,
    /// name of the copy)
    var pendingUnlinks: [(id: String, folder: String, copy: String)] = []
    var log: [String] = []
    var step = 0
    var counter = 0
    /// why the run ended before its last step without a failure (a legitimate refusal)
    var stoppedEarly: String?
    /// how many steps of each kind this run took, and how many quiet points it checked
    var kindCounts: [OpKind: Int] = [:]
    var quietPoints = 0

    static let folders = ["Archive", "Drafts", "INBOX", "Junk", "Sent Mail", "Trash", "Work"]
    static let retryDelays = "0.05,0.05,0.05,0.05"

    init(_ config: RunConfig) throws {
        self.config = config
        rng = SplitMix64(seed: config.seed)
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("wdsync-torture-\(config.seed)-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        maildir = dir + "/mail"
        db = dir + "/cache.sqlite"
        passwordFile = dir + "/password"
        _ = FileManager.default.createFile(atPath: passwordFile, contents: Data("torture-pw\n".utf8),
                                           attributes: [.posixPermissions: 0o600])
        account = SimAccount(username: "demo", password: "torture-pw")
        server = SimServer(account: account)
        try server.start()
    }

    func cleanUp(keep: Bool) {
        if let d = daemon, d.isRunning { kill(d.processIdentifier, SIGKILL); d.waitUntilExit() }
        server.stop()
        if !keep { try? FileManager.default.removeItem(atPath: dir) }
    }

    // MARK: - The run

    /// Runs every step; returns the first broken invariant, if any.
    func run() -> Failure? {
        do {
            try setUp()
            while step < config.steps && stoppedEarly == nil {
                step += 1
                if config.injectLossAt == step, let victim = serverMessages().first {
                    try? account.expunge(mailboxId: victim.mailboxId, uid: victim.message.uid)
                    note("(self-test) removed \(victim.id) from the server behind the oracle's back")
                }
                // The kind of each step comes from the run's generator, and its choices from a
                // generator of its own seeded from it: the sequence of kinds is the same in every
                // replay, whatever wdsync's timing left on disk for an earlier step to pick from.
                let kind = config.script.map { $0[(step - 1) % $0.count] } ?? chooseKind()
                kindCounts[kind, default: 0] += 1
                var stepGenerator = SplitMix64(seed: rng.next())
                swap(&rng, &stepGenerator)
                let what = try perform(kind)
                swap(&rng, &stepGenerator)
                note("\(kind.rawValue): \(what)")
                try checkDaemon()
                try checkSafety()
                if step % 12 == 0 || step == config.steps { try quiesce() }
            }
            return nil
        } catch let failure as Failure {
            return failure
        } catch {
            return Failure(step: step, invariant: "harness", detail: "\(error)")
        }
    }

    func note(_ line: String) {
        let text = "step \(step): \(line)"
        log.append(text)
        if config.verbose { say("  " + text) }
    }

    func chooseKind() -> OpKind {
        func weight(_ kind: OpKind) -> Int { config.weights[kind] ?? kind.weight }
        let total = config.enabled.reduce(0) { $0 + weight($1) }
        var r = rng.below(total)
        for kind in config.enabled {
            if r < weight(kind) { return kind }
            r -= weight(kind)
        }
        return .pause
    }

    func setUp() throws {
        for path in ["Work", "Archive"] { _ = try account.createMailbox(path: path) }
        for (path, count) in [("INBOX", 14), ("Work", 12), ("Archive", 11), ("Sent Mail", 4)] {
            guard let mailbox = account.mailboxId(path: path) else { throw Failure(step: 0, invariant: "harness", detail: "no \(path)") }
            for _ in 0..<count {
                let id = newId("s")
                _ = try account.deliver(message(id: id), to: mailbox, seen: rng.chance(60), flagged: rng.chance(15))
                oracle.alive.insert(id)
            }
        }
        let r = try runWdsync(extra: [], killAfterMs: nil)
        guard r == 0 else { throw Failure(step: 0, invariant: "exit", detail: "the first sync exited \(r.map(String.init) ?? "killed"): \(lastLines("once.log"))") }
        try checkSafety()
        try checkMirror(serverMessages())
        try takeSnapshot()
    }

    // MARK: - Messages

    func newId(_ kind: String) -> String {
        counter += 1
        let id = "t\(config.seed)-\(kind)\(counter)@torture.invalid"
        known.insert(id)
        return id
    }

    /// A message that ends with its marker line; `lineEnd` "\n" as a mail program writes it.
    func message(id: String, lineEnd le: String = "\r\n") -> [UInt8] {
        let n = rng.int(1...99)
        var s = "From: Person \(n) <p\(n)@example.org>\(le)To: Demo <demo@example.com>\(le)"
        s += "Subject: torture \(id.prefix(while: { $0 != "@" }))\(le)Message-ID: <\(id)>\(le)"
        s += "Date: Mon, 16 Jun 2025 12:00:00 +0000\(le)\(le)"
        for i in 0..<rng.int(3...60) {
            s += "line \(i): " + String(repeating: "abcdefghij", count: rng.int(1...7)) + le
        }
        s += Oracle.marker(id) + le
        return Array(s.utf8)
    }

    static func messageId(in text: String) -> String? {
        guard let start = text.range(of: "Message-ID: <", options: .caseInsensitive) else { return nil }
        guard let end = text[start.upperBound...].firstIndex(of: ">") else { return nil }
        return String(text[start.upperBound..<end])
    }

    // MARK: - The two sides as they are

    struct LocalFile {
        var folder: String
        var sub: String
        var name: String
        var id: String?
        var complete: Bool
        var path: String { "\(folder)/\(sub)/\(name)" }
        var unique: String { name.split(separator: ":", maxSplits: 1).first.map(String.init) ?? name }
        var letters: String { name.range(of: ":2,").map { String(name[$0.upperBound...]) } ?? "" }
    }

    /// Every message file in a cur/ or new/ of the Maildir, sorted by path.
    func localFiles() -> [LocalFile] {
        var files: [LocalFile] = []
        let folders = ((try? FileManager.default.contentsOfDirectory(atPath: maildir)) ?? []).sorted()
        for folder in folders where !folder.hasPrefix(".") {
            for sub in ["cur", "new"] {
                let names = ((try? FileManager.default.contentsOfDirectory(atPath: "\(maildir)/\(folder)/\(sub)")) ?? []).sorted()
                for name in names where !name.hasPrefix(".") {
                    guard let data = FileManager.default.contents(atPath: "\(maildir)/\(folder)/\(sub)/\(name)") else { continue }
                    let text = String(decoding: data, as: UTF8.self)
                    let id = Self.messageId(in: text)
                    files.append(LocalFile(folder: folder, sub: sub, name: name, id: id,
                                           complete: id.map { text.contains(Oracle.marker($0)) } ?? false))
                }
            }
        }
        return files
    }

    struct ServerMessage {
        var mailbox: String
        var mailboxId: String
        var message: SimMessage
        var id: String { message.messageId.trimmingCharacters(in: CharacterSet(charactersIn: "<>")) }
        var letters: String {
            (message.flagged ? "F" : "") + (message.seen ? "S" : "") + (message.deleted ? "T" : "")
        }
    }

    /// Every message on the server, by mailbox path and uid.
    func serverMessages() -> [ServerMessage] {
        account.mailboxes().sorted { $0.path < $1.path }.flatMap { mb in
            account.messages(mailboxId: mb.id).sorted { $0.uid < $1.uid }.map { ServerMessage(mailbox: mb.path, mailboxId: mb.id, message: $0) }
        }
    }

    // MARK: - Invariants

    func fail(_ invariant: String, _ detail: String) -> Failure { Failure(step: step, invariant: invariant, detail: detail) }

    /// After every step: nothing on the server lost unless someone deleted it, no duplicate on
    /// the server, nothing there or in the Maildir cut off, nothing there that nobody made.
    func checkSafety() throws {
        var places: [String: [String]] = [:]
        for s in serverMessages() {
            let text = String(decoding: s.message.raw, as: UTF8.self)
            guard known.contains(s.id) else {
                throw fail("unknown-on-server", "\(s.mailbox) uid \(s.message.uid) has Message-ID \(s.message.messageId) that nobody wrote (a cut-off upload?), \(s.message.raw.count) bytes")
            }
            guard text.contains(Oracle.marker(s.id)) else {
                throw fail("truncated-server", "\(s.id) in \(s.mailbox) uid \(s.message.uid) is cut off (\(s.message.raw.count) bytes)")
            }
            places[s.id, default: []].append("\(s.mailbox) uid \(s.message.uid)")
        }
        // A message the person has saved (copied) and not yet unlinked is legitimately twice in
        // the Maildir, and so may be twice on the server until the original goes.
        let saving = Set(pendingUnlinks.map(\.id))
        for (id, where_) in places.sorted(by: { $0.key < $1.key }) where where_.count > (saving.contains(id) ? 2 : 1) {
            throw fail("duplicate-server", "\(id) is on the server \(where_.count) times: \(where_.joined(separator: ", "))")
        }
        oracle.seenOnServer.formUnion(places.keys)
        for id in oracle.alive.intersection(oracle.seenOnServer).sorted() where places[id] == nil {
            throw fail("lost", "\(id) is gone from the server, and neither the person nor another client deleted it")
        }
        for f in localFiles() where !f.complete {
            throw fail("truncated-local", "\(f.path) is cut off or has no Message-ID")
        }
    }

    /// At a quiet point: the person's changes reached the server, unless another client changed
    /// the same message meanwhile (then either order is right).
    func checkIntents(_ server: [ServerMessage]) throws {
        // After a restored or replaced Maildir or cache, wdsync may rightly send nothing from
        // the Maildir until it has matched the files again: what the person did in between
        // may come back undone, and only the safety invariants and the mirror are checked.
        guard !oracle.restored else { return }
        let byId = Dictionary(server.map { ($0.id, $0) }) { a, _ in a }
        for (id, intent) in oracle.intents.sorted(by: { $0.key < $1.key }) {
            let s = byId[id]
            if intent.deleted {
                if let s {
                    throw fail("intent-delete", "\(id), deleted by the person, is still on the server (\(s.mailbox))\(oracle.breakerHeld ? " after --allow-mass-delete" : "")")
                }
                continue
            }
            guard let s else {
                if oracle.alive.contains(id) {
                    throw fail("intent-create", "\(id), written by the person, never reached the server")
                }
                continue
            }
            if let folder = intent.folder, folder != s.mailbox {
                throw fail("intent-move", "\(id) should be in \(folder) (the person put it there) but is in \(s.mailbox)")
            }
            for (flag, value) in intent.flags.sorted(by: { $0.key < $1.key }) where s.letters.contains(flag) != value {
                throw fail("intent-flag", "\(id): the person \(value ? "set" : "cleared") \(flag), the server has \"\(s.letters)\"")
            }
        }
    }

    /// At a quiet point: every mailbox's messages (by Message-ID, with S/F/T) are exactly the
    /// files of its folder.
    func checkMirror(_ server: [ServerMessage]) throws {
        var expected: [String: [String]] = [:]
        for s in server { expected[s.mailbox, default: []].append("\(s.id) \(s.letters)") }
        var actual: [String: [String]] = [:]
        for f in localFiles() {
            actual[f.folder, default: []].append("\(f.id ?? "?") \(f.letters.filter { "FST".contains($0) })")
        }
        for folder in Set(expected.keys).union(actual.keys).sorted() {
            let e = (expected[folder] ?? []).sorted(), a = (actual[folder] ?? []).sorted()
            guard e != a else { continue }
            let extra = a.filter { !e.contains($0) }, missing = e.filter { !a.contains($0) }
            throw fail("mirror", "after a quiet --once, folder \(folder) differs from the server: extra \(extra), missing \(missing)\(extra.isEmpty && missing.isEmpty ? " (a file twice)" : "")")
        }
    }

    /// Both sides quiet: the person finishes what mutt has pending, the daemon stops, the faults
    /// are gone, and `--once` runs until it succeeds; then everything is compared.
    func quiesce() throws {
        while !pendingUnlinks.isEmpty { note(try muttSync(pendingUnlinks.count - 1)) }
        // The person's side is quiet when their new files have stopped changing: wdsync uploads
        // a new file only once its mtime is 2 s old (docs/two-way.md, "What the scan sees").
        if let written = lastPersonWrite {
            let age = Date().timeIntervalSince(written)
            if age < 2.5 { usleep(UInt32((2.5 - age) * 1_000_000)) }
        }
        try stopDaemon(kill9: false)
        server.clearFaults()
        var extra: [String] = []
        var converged = false
        for _ in 0..<4 where !converged {
            let status = try runWdsync(extra: extra, killAfterMs: nil)
            switch status {
            case 0?: converged = true
            case 66?:
                // Held, not sent: what the person deleted is still on the server (the safety
                // check below says so). The person meant it, and releases it as documented.
                try checkSafety()
                oracle.breakerHeld = true
                note("quiet point: exit 66 (mass delete held); the person runs --allow-mass-delete")
                if !extra.contains("--allow-mass-delete") { extra.append("--allow-mass-delete") }
            case 74? where oracle.restored:
                guard let option = config.continueOption else {
                    stoppedEarly = "wdsync refused the restored/replaced Maildir or cache (exit 74) and has no continue option"
                    note("quiet point: \(stoppedEarly ?? "")")
                    try checkSafety()
                    return
                }
                note("quiet point: exit 74 (refused the restored Maildir); the person runs \(option)")
                if !extra.contains(option) { extra.append(option) }
            default:
                throw fail("exit", "wdsync --once exited \(status.map(String.init) ?? "?") at a quiet point: \(lastLines("once.log"))")
            }
        }
        guard converged else { throw fail("not-converged", "four --once runs in a row did not succeed: \(lastLines("once.log"))") }
        // Quiet means a second run has nothing left either: a run may leave a change for the
        // next one (a flag set on a file that run uploaded), and says so ("1 pending").
        let second = try runWdsync(extra: [], killAfterMs: nil)
        guard second == 0 else { throw fail("exit", "a second quiet --once exited \(second.map(String.init) ?? "?"): \(lastLines("once.log"))") }
        try checkSafety()
        let server = serverMessages()
        try checkIntents(server)
        do {
            try checkMirror(server)
        } catch var failure as Failure {
            // Says whether one more run mends it (converged a run late) or nothing does.
            let again = try runWdsync(extra: [], killAfterMs: nil)
            let mended = again == 0 && (try? checkMirror(serverMessages())) != nil
            failure.detail += mended ? " (the next --once mended it)" : " (still so after another --once, exit \(again.map(String.init) ?? "?"))"
            throw failure
        }
        note("quiet point: mirror equals the server (\(server.count) messages)")
        quietPoints += 1
        oracle.alive = Set(server.map(\.id))
        oracle.intents.removeAll()
        oracle.breakerHeld = false
        oracle.touchedByServer.removeAll()
        oracle.restored = false
        try takeSnapshot()
    }

    // MARK: - wdsync

    var baseArguments: [String] {
        ["--server", server.baseURL, "--user", "demo", "--password-file", passwordFile, "--maildir", maildir, "--db", db]
    }

    func childEnvironment() -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = dir
        env["XDG_CONFIG_HOME"] = dir + "/config"
        env["XDG_DATA_HOME"] = dir + "/data"
        env["WDSYNC_RETRY_DELAYS"] = Self.retryDelays
        return env
    }

    func logHandle(_ name: String) -> FileHandle {
        let fd = open(dir + "/" + name, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        handle.write(Data("== step \(step)\n".utf8))
        return handle
    }

    func lastLines(_ name: String) -> String {
        let text = (try? String(contentsOfFile: dir + "/" + name, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(3).joined(separator: " | ")
    }

    /// Runs `wdsync --once`; nil when this harness killed it. A crash or a hang is a failure.
    func runWdsync(extra: [String], killAfterMs: Int?) throws -> Int32? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: config.wdsync)
        p.arguments = ["--once"] + baseArguments + extra
        p.environment = childEnvironment()
        let handle = logHandle("once.log")
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        if let ms = killAfterMs {
            usleep(UInt32(ms) * 1000)
            if p.isRunning {
                kill(p.processIdentifier, SIGKILL)
                p.waitUntilExit()
                return nil
            }
        }
        // No wall-clock verdict on speed: only a run stuck for minutes is a hang.
        let deadline = Date().addingTimeInterval(300)
        while p.isRunning && Date() < deadline { usleep(5_000) }
        if p.isRunning {
            let stacks = dumpStacks(p.processIdentifier, into: "once-hang-stacks.txt")
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            throw fail("hang", "wdsync --once ran for 5 minutes\(stacks)")
        }
        if Self.crashed(p) {
            throw fail("crash", "wdsync --once died (\(p.terminationReason == .uncaughtSignal ? "signal" : "exit") \(p.terminationStatus)): \(lastLines("once.log"))")
        }
        return p.terminationStatus
    }

    /// Died of a signal nobody sent (SIGSEGV, SIGABRT, a trap), or exited 70 (a bug).
    static func crashed(_ p: Process) -> Bool {
        p.terminationReason == .uncaughtSignal
            ? ![SIGTERM, SIGKILL].contains(p.terminationStatus) : p.terminationStatus == 70
    }

    /// Every thread's stack of a hung process, with gdb if the machine has it; says where.
    func dumpStacks(_ pid: pid_t, into name: String) -> String {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/gdb") else { return "" }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/gdb")
        p.arguments = ["-p", String(pid), "-batch", "-ex", "thread apply all bt"]
        let handle = logHandle(name)
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return "" }
        p.waitUntilExit()
        return " (its threads' stacks: \(name))"
    }

    func startDaemon() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: config.wdsync)
        p.arguments = baseArguments + ["--debug"]
        p.environment = childEnvironment()
        let handle = logHandle("daemon.log")
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        daemon = p
    }

    /// A daemon that ended by itself: a crash is a failure, an exit with a reason is noted.
    func checkDaemon() throws {
        guard let d = daemon, !d.isRunning else { return }
        daemon = nil
        if Self.crashed(d) {
            throw fail("crash", "the daemon died (\(d.terminationReason == .uncaughtSignal ? "signal" : "exit") \(d.terminationStatus)): \(lastLines("daemon.log"))")
        }
        note("the daemon exited \(d.terminationStatus) by itself: \(lastLines("daemon.log"))")
    }

    /// SIGTERM (or SIGKILL) at once, however young the daemon is.
    func stopDaemon(kill9: Bool) throws {
        try checkDaemon()
        guard let d = daemon else { return }
        daemon = nil
        kill(d.processIdentifier, kill9 ? SIGKILL : SIGTERM)
        let deadline = Date().addingTimeInterval(120)
        while d.isRunning && Date() < deadline { usleep(5_000) }
        if d.isRunning {
            let stacks = dumpStacks(d.processIdentifier, into: "daemon-hang-stacks.txt")
            kill(d.processIdentifier, SIGKILL)
            d.waitUntilExit()
            throw fail("hang", "the daemon did not stop within 2 minutes of SIGTERM\(stacks)")
        }
        // A SIGTERM that arrives before the daemon has set up its handler ends it by the
        // default action: that is a stop, not a crash.
        if !kill9 && Self.crashed(d) {
            throw fail("crash", "the daemon ended badly on SIGTERM (\(d.terminationStatus)): \(lastLines("daemon.log"))")
        }
    }

    // MARK: - Backups

    func takeSnapshot() throws {
        let target = "\(dir)/backup\(snapshots.count)"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        try shell("/bin/cp", ["-a", maildir, target + "/mail"])
        for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: db + suffix) {
            try shell("/bin/cp", ["-a", db + suffix, target + "/cache.sqlite" + suffix])
        }
        snapshots.append(target)
    }

    func shell(_ tool: String, _ arguments: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = arguments
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw fail("harness", "\(tool) \(arguments) failed") }
    }
}
