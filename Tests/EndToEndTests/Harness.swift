#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import WildDuckSim

/// The source tree, for fixtures.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let corpusDirectory = packageRoot.appendingPathComponent("Tests/Fixtures/mail-gem").path

/// The built `wdsync` binary: it sits next to the test bundle in the build products folder.
let wdsyncBinary: String = {
    var candidates: [String] = []
    if let arg0 = CommandLine.arguments.first {
        var url = URL(fileURLWithPath: arg0)
        for _ in 0..<4 {
            url.deleteLastPathComponent()
            candidates.append(url.appendingPathComponent("wdsync").path)
        }
    }
    candidates.append(packageRoot.appendingPathComponent(".build/debug/wdsync").path)
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last ?? "wdsync"
}()

struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

struct FileState: Equatable {
    var inode: UInt64
    var mtime: Int
    var size: Int
}

/// A simulator with an account, a scratch directory, a password file, and ways to run wdsync
/// against it and compare the Maildir with the server.
final class Harness {
    let dir: String
    let account: SimAccount
    let server: SimServer
    var maildir: String
    var db: String
    let passwordFile: String

    init(password: String = "demo-secret-pw", clock: (@Sendable () -> Date)? = nil) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("wdsync-e2e-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        account = SimAccount(username: "demo", password: password, clock: clock)
        server = SimServer(account: account)
        try server.start()
        maildir = dir + "/mail"
        db = dir + "/cache.sqlite"
        passwordFile = dir + "/password"
        _ = FileManager.default.createFile(atPath: passwordFile, contents: Data((password + "\n").utf8),
                                       attributes: [.posixPermissions: 0o600])
    }

    deinit {
        server.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// wdsync's retry schedule in the tests: the real one's 5 tries, without its minute of waiting.
    static let retryDelays = "0.05,0.05,0.05,0.05"

    /// The URL wdsync is given (default: the simulator's own, plain HTTP).
    var serverURL: String?

    var baseArguments: [String] {
        ["--once", "--server", serverURL ?? server.baseURL, "--user", "demo", "--password-file", passwordFile,
         "--maildir", maildir, "--db", db]
    }

    func process(_ arguments: [String], environment: [String: String] = [:]) -> (Process, Pipe, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: wdsyncBinary)
        p.arguments = arguments
        var env = isolatedEnvironment(home: dir)
        env["XDG_CONFIG_HOME"] = dir + "/config"
        env["XDG_DATA_HOME"] = dir + "/data"
        env["XDG_STATE_HOME"] = dir + "/state"
        env["WDSYNC_RETRY_DELAYS"] = Harness.retryDelays
        env.merge(environment) { $1 }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        return (p, out, err)
    }

    /// Runs wdsync to completion.
    @discardableResult
    func run(_ arguments: [String]? = nil, extra: [String] = [], environment: [String: String] = [:]) throws -> RunResult {
        let (p, out, err) = process((arguments ?? baseArguments) + extra, environment: environment)
        try p.run()
        // Read both pipes fully before waiting, so a chatty child can't block on a full pipe.
        let group = DispatchGroup()
        nonisolated(unsafe) var outData = Data(), errData = Data()
        DispatchQueue.global().async(group: group) { outData = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { errData = err.fileHandleForReading.readDataToEndOfFile() }
        group.wait()
        p.waitUntilExit()
        return RunResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Runs wdsync and requires success.
    @discardableResult
    func sync(extra: [String] = [], environment: [String: String] = [:],
              sourceLocation: SourceLocation = #_sourceLocation) throws -> RunResult {
        let result = try run(extra: extra, environment: environment)
        #expect(result.status == 0, "wdsync failed: \(result.stderr)", sourceLocation: sourceLocation)
        return result
    }

    // MARK: Server setup

    /// Seeds INBOX with the corpus and spreads `generated` messages over a few folders with mixed flags.
    func seedStandard(generated: Int = 120) throws {
        guard let inbox = account.mailboxId(path: "INBOX") else { throw HarnessError("no INBOX") }
        try account.seed(directory: corpusDirectory, mailboxId: inbox)
        let work = try account.createMailbox(path: "Work")
        let projects = try account.createMailbox(path: "Work/Projects")
        let sent = account.mailboxId(path: "Sent Mail") ?? work
        try account.generate(count: generated, mailboxIds: [work, projects, sent], seed: 7, sizeMix: .small)
        // Mixed flags.
        for mailbox in [inbox, work, projects] {
            for (i, m) in account.messages(mailboxId: mailbox).enumerated() {
                try account.setFlags(mailboxId: mailbox, uid: m.uid, seen: i % 2 == 0, flagged: i % 5 == 0,
                                     draft: i % 11 == 0, deleted: i % 13 == 0, answered: i % 7 == 0)
            }
        }
    }

    // MARK: Disk inspection

    /// Every file under the Maildir root (relative path → state), but wdsync's marker
    /// (`.wdsync-state`, which is not mail; MaildirIdentityTests look at it).
    func snapshot() -> [String: FileState] {
        var result: [String: FileState] = [:]
        guard let e = FileManager.default.enumerator(atPath: maildir) else { return result }
        while let rel = e.nextObject() as? String {
            if rel == ".wdsync-state" { continue }
            var st = stat()
            let path = maildir + "/" + rel
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            result[rel] = FileState(inode: UInt64(st.st_ino), mtime: Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec), size: Int(st.st_size))
        }
        return result
    }

    /// The Maildir letters the server's flags must produce.
    static func letters(_ m: SimMessage) -> String {
        var s = ""
        if m.draft { s += "D" }
        if m.flagged { s += "F" }
        if m.forwarded { s += "P" }
        if m.answered && !m.forwarded { s += "R" }
        if m.seen { s += "S" }
        if m.deleted { s += "T" }
        return s
    }

    /// How the Maildir differs from the server (empty when it holds exactly the server's
    /// messages: for every mailbox, in folder `folder(path)`, the same raw bytes with the right
    /// flags, seen ones in cur/ and unseen ones in new/ — except those in `old` ("mailbox uid"),
    /// which a reader moved to cur/ without S — and nothing half-written in tmp/).
    func mirrorDifferences(folder: (String) -> String = { $0 }, old: Set<String> = []) -> [String] {
        var problems: [String] = []
        for mailbox in account.mailboxes() {
            let rel = folder(mailbox.path)
            let base = rel.isEmpty ? maildir : maildir + "/" + rel
            var actual: [String] = []
            for sub in ["new", "cur"] {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: base + "/" + sub)) ?? []
                for name in names where !name.hasPrefix(".") {
                    guard let data = FileManager.default.contents(atPath: base + "/" + sub + "/" + name) else { continue }
                    let info = name.split(separator: ":", maxSplits: 1).dropFirst().first.map { String($0.dropFirst(2)) } ?? ""
                    actual.append("\(sub) \(info) \(data.count) \(Harness.digest(Array(data)))")
                }
            }
            // A name with an info part (`:2,…`) is a whole message the live daemon keeps out of
            // view for a possible move; a download in progress has the bare unique name.
            let tmp = ((try? FileManager.default.contentsOfDirectory(atPath: base + "/tmp")) ?? []).filter { !$0.contains(":") }
            if !tmp.isEmpty { problems.append("leftover files in \(rel)/tmp: \(tmp)") }
            let expected = account.messages(mailboxId: mailbox.id).map { m in
                "\(m.seen || old.contains("\(mailbox.id) \(m.uid)") ? "cur" : "new") \(Harness.letters(m)) \(m.raw.count) \(Harness.digest(m.raw))"
            }
            if actual.sorted() != expected.sorted() {
                let a = Set(actual), e = Set(expected)
                problems.append("folder \(rel) differs from mailbox \(mailbox.path): extra \(a.subtracting(e).sorted()), missing \(e.subtracting(a).sorted())")
            }
        }
        return problems
    }

    func expectMirror(folder: (String) -> String = { $0 }, old: Set<String> = [], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let problems = mirrorDifferences(folder: folder, old: old)
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))", sourceLocation: sourceLocation)
    }

    /// Waits until the Maildir matches the server (a live daemon converging), then asserts it.
    func expectMirrorEventually(timeout: Double = 20, sourceLocation: SourceLocation = #_sourceLocation) throws {
        _ = Harness.wait(timeout: timeout) { mirrorDifferences().isEmpty }
        try expectMirror(sourceLocation: sourceLocation)
    }

    // MARK: The daemon

    /// Starts `wdsync` without --once; its standard error goes to `log`.
    func startDaemon(extra: [String] = [], arguments: [String]? = nil, environment: [String: String] = [:]) throws -> Daemon {
        let args = (arguments ?? baseArguments.filter { $0 != "--once" } + ["--debug"]) + extra
        let p = Process()
        p.executableURL = URL(fileURLWithPath: wdsyncBinary)
        p.arguments = args
        var env = isolatedEnvironment(home: dir)
        env["XDG_CONFIG_HOME"] = dir + "/config"
        env["XDG_DATA_HOME"] = dir + "/data"
        env["WDSYNC_RETRY_DELAYS"] = Harness.retryDelays
        env.merge(environment) { $1 }
        p.environment = env
        let logPath = dir + "/daemon-\(UUID().uuidString.prefix(6)).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        p.standardError = handle
        p.standardOutput = handle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        return Daemon(process: p, logPath: logPath)
    }

    /// FNV-1a, enough to compare contents in assertion messages.
    static func digest(_ bytes: [UInt8]) -> String {
        var h: UInt64 = 0xcbf29ce484222325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        return String(h, radix: 16)
    }

    var totalServerMessages: Int { account.mailboxes().reduce(0) { $0 + account.messages(mailboxId: $1.id).count } }

    /// Waits (polling) until `condition` holds or `timeout` passes; returns whether it held.
    static func wait(timeout: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(2_000)
        }
        return condition()
    }
}

/// A running `wdsync` daemon.
final class Daemon {
    let process: Process
    let logPath: String
    init(process: Process, logPath: String) { self.process = process; self.logPath = logPath }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    func waitForLog(_ text: String, timeout: Double = 20) -> Bool { Harness.wait(timeout: timeout) { self.log.contains(text) } }
    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }
    /// SIGTERM, then waits; returns the exit status (or nil if it did not exit in time).
    func terminate(timeout: Double = 10) -> Int32? {
        signal(SIGTERM)
        guard Harness.wait(timeout: timeout, { !self.process.isRunning }) else {
            kill(process.processIdentifier, SIGKILL)
            return nil
        }
        return process.terminationStatus
    }
    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// The environment for a program a test runs: the test's own, with HOME and the XDG
/// directories inside `home`, so that no program reads (or asks about) the files of the user
/// running the tests — on a fresh machine neomutt stopped to ask whether to create ~/Mail.
func isolatedEnvironment(home: String, _ extra: [String: String] = [:]) -> [String: String] {
    var env = ProcessInfo.processInfo.environment
    env["HOME"] = home
    env["XDG_CONFIG_HOME"] = home + "/.config"
    env["XDG_DATA_HOME"] = home + "/.local/share"
    env["XDG_CACHE_HOME"] = home + "/.cache"
    env["XDG_STATE_HOME"] = home + "/.local/state"
    for name in ["MAIL", "MAILDIR", "MUTT", "MUTTRC", "NEOMUTTRC", "NOTMUCH_CONFIG", "NOTMUCH_PROFILE", "MANPATH"] { env[name] = nil }
    return env.merging(extra) { $1 }
}

/// Runs a command, returning status and output. Without a HOME in `env`, it runs with an
/// empty home of its own (see `isolatedEnvironment`).
@discardableResult
func shell(_ command: String, cwd: String? = nil, env: [String: String] = [:]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", command]
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    var home = env["HOME"]
    if home == nil {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wdsync-home-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        home = dir
    }
    defer { if env["HOME"] == nil, let home { try? FileManager.default.removeItem(atPath: home) } }
    p.environment = isolatedEnvironment(home: home ?? "/nonexistent", env)
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}
