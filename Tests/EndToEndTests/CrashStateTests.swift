#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import WildDuckSim

/// Crash states under power loss, in the manner of ALICE (OSDI '14) and CrashMonkey (OSDI '18):
/// real runs are recorded (the message bodies, directory operations and durability barriers of
/// the Maildir layer, the cache's commits, a copy of the cache and the Maildir after each commit:
/// `WDSYNC_FS_TRACE`, `WDSYNC_FS_TRACE_STATES`; and the simulator's account after each change it
/// took), then every state a power cut could leave is built and recovered with the next
/// `--once`. The model (docs/durability.md):
///
/// - a power cut after operation i keeps every commit of the cache up to i (synchronous=FULL)
///   and nothing after it; the server keeps every change it took up to i;
/// - a rename or unlink is kept once its directory was fsynced (`D`) or its file system synced
///   (`S`); one that was not may be lost, in any combination with the others;
/// - a body written (`W`) and not yet fsynced (`F`) or synced (`S`) may lose its tail.
///
/// Each recovered state must: exit 0; have shown no partial file in cur/ or new/; send the
/// server nothing the user did not do (for a run that only pulled: nothing at all; for one
/// that pushed the user's edits: exactly those, once); and leave the Maildir equal to the
/// server (no partial, missing or extra file). `contrib/crashstates.sh` runs every state
/// (`WDSYNC_CRASHSTATES=full`); the normal tests run a sample.
@Suite(.serialized) struct CrashStateTests {
    enum Op: Equatable {
        case rename(String, String)
        case unlink(String)
        case syncDirectory(String)
        case syncFilesystem
        case commit(String)
        case write(String, Int)     // a body written, not yet durable
        case fsyncFile(String)
        case server(Int)            // the simulator took its n-th change (1-based)
    }

    /// What a recovery may send to the server.
    enum Expect {
        /// Nothing: the run only pulled; the server must stay as the state left it.
        case nothingSent
        /// The user's edits, made before the run, once: the server must end as the run left it.
        case userEdits
        /// Edits the user made while the daemon ran: those the state's Maildir holds, once.
        case liveEdits([Edit])
    }

    /// One edit of the user's to a synced message: a rename to `letters`, or a delete (nil).
    struct Edit {
        var mailbox: String      // its path on the server
        var uid: Int
        var folder: String       // its folder in the Maildir
        var unique: String
        var letters: String?

        static func folder(of file: String) -> String { directory(directory(file)) }

        static func unique(of file: String) -> String {
            let name = (file as NSString).lastPathComponent
            return name.split(separator: ":", maxSplits: 1).first.map(String.init) ?? name
        }

        /// Whether the Maildir at `mail` holds the edit.
        func isIn(_ mail: String) -> Bool {
            let base = folder.isEmpty ? mail : mail + "/" + folder
            if let letters { return FileManager.default.fileExists(atPath: base + "/cur/\(unique):2,\(letters)") }
            return ["cur", "new"].allSatisfy { sub in
                ((try? FileManager.default.contentsOfDirectory(atPath: base + "/" + sub)) ?? []).allSatisfy { !$0.hasPrefix(unique) }
            }
        }

        /// `serverState` lines with the edit made.
        func apply(_ lines: [String]) -> [String] {
            lines.compactMap { line in
                guard line.hasPrefix("\(mailbox) \(uid) ") else { return line }
                guard let letters else { return nil }
                let f = line.split(separator: " ", omittingEmptySubsequences: false)
                return "\(mailbox) \(uid) \(letters) \(f.last ?? "")"
            }.sorted()
        }
    }

    /// One recorded run: its trace, the per-commit copies, and the state before it.
    struct Recording {
        var label: String
        var ops: [Op]
        var states: String       // <id>/cache.sqlite(-wal), <id>/mail
        var before: String       // cache.sqlite(-wal) and mail before the run (may be absent)
        var after: String        // the same after the run
        var root: String         // the Maildir's path during the run
        var servers: [SimSnapshot]          // the account after each change the simulator took
        var serverBefore: SimSnapshot
        var serverAfter: SimSnapshot
        var expect: Expect

        /// The account as a power cut at `point` leaves it: after the last change it took, and
        /// the changes that follow that one with nothing of the client's between them. The
        /// server does not lose power: a request it was handling when the client lost it is
        /// finished (one request can be several changes: WildDuck writes a mailbox's
        /// modifyIndex before the data).
        func server(at point: Int) -> SimSnapshot {
            for i in stride(from: point - 1, through: 0, by: -1) {
                guard case .server = ops[i] else { continue }
                var last = i
                while last + 1 < ops.count, case .server = ops[last + 1] { last += 1 }
                if case .server(let n) = ops[last], n >= 1, n <= servers.count { return servers[n - 1] }
            }
            return serverBefore
        }
    }

    static func parse(_ text: String) -> [Op] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            switch (f.first, f.count) {
            case ("R", 3): return .rename(f[1], f[2])
            case ("U", 2): return .unlink(f[1])
            case ("D", 2): return .syncDirectory(f[1])
            case ("S", 1): return .syncFilesystem
            case ("C", 2): return .commit(f[1])
            case ("W", 3): return Int(f[2]).map { .write(f[1], $0) }
            case ("F", 2): return .fsyncFile(f[1])
            case ("H", 2): return Int(f[1]).map { .server($0) }
            default: return nil
            }
        }
    }

    static func directory(_ path: String) -> String { (path as NSString).deletingLastPathComponent }

    /// Whether an operation concerns what mail readers and the scan see (cur/ or new/).
    static func visible(_ op: Op) -> Bool {
        func inView(_ p: String) -> Bool { ["cur", "new"].contains((directory(p) as NSString).lastPathComponent) }
        switch op {
        case .rename(let a, let b): return inView(a) || inView(b)
        case .unlink(let p): return inView(p)
        default: return false
        }
    }

    /// Indexes of the renames and unlinks in ops[0..<end] that no later barrier (before `end`)
    /// made durable.
    static func unsynced(_ ops: [Op], upTo end: Int) -> [Int] {
        var pending: [Int] = []
        for i in 0..<end {
            switch ops[i] {
            case .rename, .unlink: pending.append(i)
            case .syncFilesystem: pending.removeAll()
            case .syncDirectory(let dir):
                let d = (dir as NSString).standardizingPath
                pending.removeAll { j in
                    switch ops[j] {
                    case .rename(_, let to): return directory(to) == d
                    case .unlink(let p): return directory(p) == d
                    default: return false
                    }
                }
            default: break
            }
        }
        return pending
    }

    /// Indexes of the bodies written in ops[0..<end] that no `F` of their file or `S` made
    /// durable by `end`.
    static func unsyncedData(_ ops: [Op], upTo end: Int) -> [Int] {
        var pending: [Int] = []
        for i in 0..<end {
            switch ops[i] {
            case .write: pending.append(i)
            case .fsyncFile(let p): pending.removeAll { if case .write(p, _) = ops[$0] { return true } else { return false } }
            case .syncFilesystem: pending.removeAll()
            default: break
            }
        }
        return pending
    }

    /// Where the order the proof rests on is broken in `ops`: a commit before the renames and
    /// unlinks in cur/ and new/ it records are durable, or a body renamed into cur/ or new/
    /// before it is durable (a reader could see it partial after a cut).
    static func orderViolations(_ ops: [Op]) -> [String] {
        var found: [String] = []
        for (i, op) in ops.enumerated() {
            switch op {
            case .commit:
                let open = unsynced(ops, upTo: i).filter { visible(ops[$0]) }
                if !open.isEmpty { found.append("commit at op \(i) comes before \(open.map { "\(ops[$0])" }) is durable") }
            case .rename(let from, _) where visible(op):
                if unsyncedData(ops, upTo: i).contains(where: { if case .write(from, _) = ops[$0] { return true } else { return false } }) {
                    found.append("op \(i) \(op) publishes a body that is not durable")
                }
            default: break
            }
        }
        return found
    }

    /// A crash state: after the first `point` operations, with the operations `lost` (indexes:
    /// renames and unlinks undone, bodies cut to half their length) undone.
    struct State: Hashable, CustomStringConvertible {
        var point: Int
        var lost: [Int]
        var description: String { "point \(point), lost ops \(lost)" }
    }

    /// Copies a tree with its files' times, as `CrashRecorder.copyTree` does (a young file the
    /// user wrote waits before it is uploaded; a copy must not make it young).
    static func copyTree(_ from: String, to: String) throws {
        let fm = FileManager.default
        try fm.copyItem(atPath: from, toPath: to)
        var st = stat()
        if lstat(from, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG {
            var times = [st.st_atim, st.st_mtim]
            _ = utimensat(AT_FDCWD, to, &times, AT_SYMLINK_NOFOLLOW)
            return
        }
        guard let e = fm.enumerator(atPath: from) else { return }
        while let rel = e.nextObject() as? String {
            guard lstat(from + "/" + rel, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            var times = [st.st_atim, st.st_mtim]
            _ = utimensat(AT_FDCWD, to + "/" + rel, &times, AT_SYMLINK_NOFOLLOW)
        }
    }

    static func isCommit(_ op: Op) -> Bool { if case .commit = op { return true } else { return false } }

    /// The index of the commit whose copy the Maildir of a state at `point` is built from (nil:
    /// the copy after the run).
    static func mailSource(_ ops: [Op], point: Int) -> Int? { (point..<ops.count).first { isCommit(ops[$0]) } }

    /// Builds `state` of `recording` into `target` (`mail`, `cache.sqlite`). Returns the files in
    /// cur/ or new/ that the state shows partial (relative paths), or nil when the state cannot
    /// be built exactly (an undone unlink whose bytes no copy holds).
    static func build(_ state: State, of r: Recording, into target: String) throws -> [String]? {
        let fm = FileManager.default
        let ops = r.ops
        // The cache: the copy after the last commit before the point, or the one before the run.
        let commits = (0..<state.point).filter { isCommit(ops[$0]) }
        var dbSource = r.before
        if let last = commits.last, case .commit(let id) = ops[last] { dbSource = r.states + "/" + id }
        // The Maildir: the copy at the next commit after the point (or after the run), with the
        // operations after the point and the lost ones undone, newest first.
        var mailCopy = r.after + "/mail"
        var upTo = ops.count
        if let next = mailSource(ops, point: state.point), case .commit(let id) = ops[next] { mailCopy = r.states + "/" + id + "/mail"; upTo = next + 1 }
        try fm.createDirectory(atPath: target, withIntermediateDirectories: true)
        for suffix in ["", "-wal"] where fm.fileExists(atPath: dbSource + "/cache.sqlite" + suffix) {
            try fm.copyItem(atPath: dbSource + "/cache.sqlite" + suffix, toPath: target + "/cache.sqlite" + suffix)
        }
        let mail = target + "/mail"
        if fm.fileExists(atPath: mailCopy) { try copyTree(mailCopy, to: mail) }
        func local(_ p: String) -> String { mail + p.dropFirst(r.root.count) }
        // Where an unlinked file's bytes can be found: the copies before it, newest first.
        var copies = commits.reversed().compactMap { i -> String? in
            if case .commit(let id) = ops[i] { return r.states + "/" + id + "/mail" } else { return nil }
        }
        copies.append(r.before + "/mail")
        let undo = Set(state.lost).union(state.point..<upTo)
        for i in undo.sorted(by: >) {
            switch ops[i] {
            case .rename(let from, let to):
                guard fm.fileExists(atPath: local(to)) else { return nil }
                try fm.createDirectory(atPath: directory(local(from)), withIntermediateDirectories: true)
                guard rename(local(to), local(from)) == 0 else { return nil }
            case .unlink(let p):
                guard let copy = copies.first(where: { fm.fileExists(atPath: $0 + p.dropFirst(r.root.count)) }) else {
                    // Only a leftover in tmp/ may be missing from every copy (written and
                    // removed between two commits): recovery removes those anyway.
                    if visible(ops[i]) { return nil }
                    continue
                }
                try fm.createDirectory(atPath: directory(local(p)), withIntermediateDirectories: true)
                if !fm.fileExists(atPath: local(p)) { try copyTree(copy + p.dropFirst(r.root.count), to: local(p)) }
            default: break
            }
        }
        // Bodies whose unsynced tail the cut took: the file of that unique name, wherever the
        // state has it (tmp/, or cur/ or new/ if it was renamed before it was durable).
        var partial: [String] = []
        for i in state.lost {
            guard case .write(let p, let size) = ops[i], size > 0 else { continue }
            let unique = (p as NSString).lastPathComponent
            let folder = directory(directory(local(p)))
            for sub in ["tmp", "new", "cur"] {
                let names = (try? fm.contentsOfDirectory(atPath: folder + "/" + sub)) ?? []
                for name in names where name == unique || name.hasPrefix(unique + ":") {
                    let path = folder + "/" + sub + "/" + name
                    guard truncate(path, off_t(size / 2)) == 0 else { return nil }
                    if sub != "tmp" { partial.append(String(path.dropFirst(mail.count + 1))) }
                }
            }
        }
        return partial
    }

    /// Every state (full), or a sample of `sampleSize` out of these: right before and after each
    /// commit and at the end, with none or all of the unsynced operations lost, and each one lost
    /// alone after the commits.
    /// Unsynced bodies are cut all together (each cut alone as well in the full run where there
    /// are at most six): recovery treats each the same way, on its own.
    static func states(of r: Recording, full: Bool, seed: UInt64) -> [State] {
        var result: [State] = []
        var rng = SplitMix64(seed: seed)
        let commitPoints = r.ops.indices.filter { isCommit(r.ops[$0]) }
        let points = full ? Array(0...r.ops.count) : Array(Set(commitPoints.flatMap { [$0, $0 + 1] } + [r.ops.count])).sorted()
        for point in points {
            let lossable = unsynced(r.ops, upTo: point).filter { visible(r.ops[$0]) }
            let bodies = unsyncedData(r.ops, upTo: point)
            var subsets: [[Int]] = [[], lossable]
            if full {
                if lossable.count <= 6 {
                    subsets = (0..<(1 << lossable.count)).map { mask in lossable.indices.filter { mask & (1 << $0) != 0 }.map { lossable[$0] } }
                } else {
                    // Too many to try all: each one lost alone, each one kept alone, and random
                    // combinations (the seed picks them).
                    subsets += lossable.map { [$0] } + lossable.map { one in lossable.filter { $0 != one } }
                    subsets += (0..<8).map { _ in lossable.filter { _ in rng.next() & 1 == 1 } }
                }
            } else if commitPoints.contains(point - 1) {
                subsets += lossable.map { [$0] }
            }
            if !bodies.isEmpty {
                subsets += [bodies, lossable + bodies]
                if full && bodies.count <= 6 { subsets += bodies.map { [$0] } }
            }
            for lost in subsets { result.append(State(point: point, lost: lost.sorted())) }
        }
        var seen = Set<State>()
        result = result.filter { seen.insert($0).inserted }
        guard !full, result.count > sampleSize else { return result }
        // The normal tests' share: states that lose something first (the seed picks which),
        // and the end of the run.
        let end = State(point: r.ops.count, lost: [])
        let lossy = result.filter { !$0.lost.isEmpty }.shuffled(using: &rng)
        let rest = result.filter { $0.lost.isEmpty && $0 != end }.shuffled(using: &rng)
        return ([end] + lossy + rest).prefix(sampleSize).sorted { ($0.point, $0.lost.count) < ($1.point, $1.lost.count) }
    }

    /// States per recording in the normal tests (each is a `--once`).
    static let sampleSize = 16

    /// What the server holds, for "recovery sent nothing the user did not do".
    static func serverState(_ h: Harness) -> [String] {
        h.account.mailboxes().flatMap { mb in
            h.account.messages(mailboxId: mb.id).map { "\(mb.path) \($0.uid) \(Harness.letters($0)) \($0.raw.count)" }
        }.sorted()
    }

    /// Copies the cache and the Maildir as they are (the state before or after a run).
    static func keep(_ h: Harness, into dir: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for suffix in ["", "-wal"] where fm.fileExists(atPath: h.db + suffix) {
            try fm.copyItem(atPath: h.db + suffix, toPath: dir + "/cache.sqlite" + suffix)
        }
        if fm.fileExists(atPath: h.maildir) { try copyTree(h.maildir, to: dir + "/mail") }
    }

    /// The simulator's side of a recording: each change the account takes is numbered in the
    /// trace (`H n`, appended like wdsync's own lines) and kept as a snapshot.
    final class ServerLog: @unchecked Sendable {
        private let lock = NSLock()
        private let fd: Int32
        private(set) var snapshots: [SimSnapshot] = []
        init(trace: String) { fd = open(trace, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600) }
        deinit { close(fd) }
        private func line(_ text: String) {
            let bytes = Array(text.utf8)
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
        func took(_ snapshot: SimSnapshot) {
            lock.lock(); defer { lock.unlock() }
            snapshots.append(snapshot)
            line("H\t\(snapshots.count)\n")
        }
    }

    /// Records `run` (which runs wdsync with the environment it is given).
    static func record(_ h: Harness, name: String, expect: Expect = .nothingSent,
                       _ run: (_ environment: [String: String]) throws -> Void) throws -> Recording {
        let base = h.dir + "/rec-" + name
        try keep(h, into: base + "/before")
        let trace = base + "/trace"
        let log = ServerLog(trace: trace)
        let serverBefore = h.account.snapshot()
        h.account.observeChanges { log.took($0) }
        defer { h.account.observeChanges(nil) }
        try run(["WDSYNC_FS_TRACE": trace, "WDSYNC_FS_TRACE_STATES": base + "/states"])
        h.account.observeChanges(nil)
        try keep(h, into: base + "/after")
        let ops = parse((try? String(contentsOfFile: trace, encoding: .utf8)) ?? "")
        return Recording(label: name, ops: ops, states: base + "/states", before: base + "/before", after: base + "/after",
                         root: h.maildir, servers: log.snapshots, serverBefore: serverBefore, serverAfter: h.account.snapshot(),
                         expect: expect)
    }

    /// Records a `--once`.
    static func recordOnce(_ h: Harness, name: String, expect: Expect = .nothingSent) throws -> Recording {
        try record(h, name: name, expect: expect) { environment in try h.sync(environment: environment) }
    }

    /// What the server must hold after recovering `state`, whose Maildir is at `mail`: as the
    /// cut left it, with the user's edits that the state holds made (once).
    static func expected(_ state: State, of r: Recording, mail: String, _ h: Harness) -> [String] {
        let left = r.server(at: state.point)
        switch r.expect {
        case .nothingSent:
            h.account.restore(left)
            return serverState(h)
        case .userEdits:
            h.account.restore(r.serverAfter)
            defer { h.account.restore(left) }
            return serverState(h)
        case .liveEdits(let edits):
            h.account.restore(left)
            return edits.filter { $0.isIn(mail) }.reduce(serverState(h)) { $1.apply($0) }
        }
    }

    /// Recovers each state with the next `--once` and checks it; returns (states, failures).
    static func check(_ r: Recording, _ h: Harness, full: Bool, seed: UInt64) throws -> (Int, [String]) {
        let (maildir, db) = (h.maildir, h.db)
        defer { h.maildir = maildir; h.db = db }
        let label = r.label
        var failures: [String] = []
        var count = 0
        for (n, state) in states(of: r, full: full, seed: seed).enumerated() {
            let target = h.dir + "/state-\(label)-\(n)"
            guard let partial = try build(state, of: r, into: target) else { continue }
            count += 1
            var problems: [String] = []
            if !partial.isEmpty { problems.append("partial files in view after the cut: \(partial)") }
            let server = expected(state, of: r, mail: target + "/mail", h)
            h.maildir = target + "/mail"
            h.db = target + "/cache.sqlite"
            let keepDir = ProcessInfo.processInfo.environment["WDSYNC_CRASHSTATES_KEEP"]
            let result = try h.run(extra: keepDir == nil ? [] : ["--debug"])
            if result.status != 0 { problems.append("exit \(result.status): \(result.stderr.suffix(400))") }
            let now = serverState(h)
            if now != server {
                problems.append("the server is not as the user left it: \(Set(now).symmetricDifference(server).sorted().prefix(6))")
            }
            problems += h.mirrorDifferences()
            if !problems.isEmpty { failures.append("\(label) \(state) (seed \(seed)): " + problems.joined(separator: "; ")) }
            if let keep = keepDir, !problems.isEmpty {
                // For a closer look: the state as built (rebuilt, since recovery changed it) and the trace.
                let dir = keep + "/\(label)-\(state.point)-\(n)"
                _ = try build(state, of: r, into: dir)
                try? FileManager.default.copyItem(atPath: directory(r.states) + "/trace", toPath: dir + "/trace")
                try? (result.stderr + result.stdout).write(toFile: dir + "/log", atomically: true, encoding: .utf8)
            }
            try? FileManager.default.removeItem(atPath: target)
        }
        return (count, failures)
    }

    /// Checks the order in every recording, recovers every state, and reports.
    static func prove(_ recordings: [Recording], _ h: Harness) throws {
        let env = ProcessInfo.processInfo.environment
        let full = env["WDSYNC_CRASHSTATES"] == "full"
        let seed = env["WDSYNC_CRASHSTATES_SEED"].flatMap { UInt64($0) } ?? 1
        var total = 0
        var failures: [String] = []
        for r in recordings {
            #expect(r.ops.contains(where: isCommit), "\(r.label): nothing was recorded")
            failures += orderViolations(r.ops).map { "\(r.label): \($0)" }
        }
        for r in recordings {
            let (n, f) = try check(r, h, full: full, seed: seed)
            total += n
            failures += f
        }
        print("crash states (\(recordings.map(\.label).joined(separator: ", "))): \(total) states, \(failures.count) failures")
        for failure in failures.prefix(20) { Issue.record("\(failure)") }
        #expect(total > 0)
    }

    static var full: Bool { ProcessInfo.processInfo.environment["WDSYNC_CRASHSTATES"] == "full" }

    /// An initial sync, then an incremental one that brings flag changes (new/ to cur/ and back,
    /// flags), a move, expunges, new mail and a deleted mailbox.
    @Test func everyPowerCutOfAnInitialAndAnIncrementalSyncRecovers() throws {
        let h = try Harness()
        guard let inbox = h.account.mailboxId(path: "INBOX") else { throw HarnessError("no INBOX") }
        let work = try h.account.createMailbox(path: "Work")
        let projects = try h.account.createMailbox(path: "Work/Projects")
        _ = try h.account.generate(count: Self.full ? 30 : 14, mailboxIds: [inbox, work, projects], seed: 7, sizeMix: .small)
        for mailbox in [inbox, work, projects] {
            for (i, m) in h.account.messages(mailboxId: mailbox).enumerated() {
                try h.account.setFlags(mailboxId: mailbox, uid: m.uid, seen: i % 2 == 0, flagged: i % 3 == 0)
            }
        }
        let trash = try h.account.createMailbox(path: "Old")
        _ = try h.account.deliver(Array("Subject: old\r\nMessage-ID: <old@x>\r\n\r\nold\r\n".utf8), to: trash)
        let initial = try Self.recordOnce(h, name: "initial")

        let inboxMessages = h.account.messages(mailboxId: inbox)
        for m in inboxMessages.prefix(4) {
            try h.account.setFlags(mailboxId: inbox, uid: m.uid, seen: !m.seen, flagged: !m.flagged)
        }
        let workMessages = h.account.messages(mailboxId: work)
        if let m = workMessages.first { _ = try h.account.move(mailboxId: work, uid: m.uid, to: inbox) }
        for m in workMessages.dropFirst().prefix(2) { try h.account.expunge(mailboxId: work, uid: m.uid) }
        _ = try h.account.deliver(Array("Subject: new\r\nMessage-ID: <new@x>\r\n\r\nnew mail\r\n".utf8), to: work)
        try h.account.deleteMailbox(id: trash)
        let incremental = try Self.recordOnce(h, name: "incremental")
        try Self.prove([incremental, initial], h)
    }

    /// A synced account of three mailboxes with mixed flags, for the two-way and daemon runs.
    static func synced() throws -> Harness {
        let h = try Harness()
        guard let inbox = h.account.mailboxId(path: "INBOX") else { throw HarnessError("no INBOX") }
        let work = try h.account.createMailbox(path: "Work")
        _ = try h.account.generate(count: Self.full ? 24 : 12, mailboxIds: [inbox, work], seed: 11, sizeMix: .small)
        for mailbox in [inbox, work] {
            for (i, m) in h.account.messages(mailboxId: mailbox).enumerated() {
                try h.account.setFlags(mailboxId: mailbox, uid: m.uid, seen: i % 2 == 0, flagged: i % 3 == 0)
            }
        }
        try h.sync()
        return h
    }

    /// A message file as a mail program writes it, old enough to be uploaded at once.
    static func writeMessage(_ h: Harness, folder: String, messageId: String) throws {
        let text = "From: Me <me@example.org>\r\nTo: You <you@example.org>\r\nSubject: written here\r\nMessage-ID: <\(messageId)>\r\nDate: Mon, 16 Jun 2025 12:00:00 +0000\r\n\r\nHello.\r\n"
        let path = h.maildir + "/\(folder)/cur/1750000000.M1P4242.testhost:2,S"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        var times = [timespec(tv_sec: 1_750_000_000, tv_nsec: 0), timespec(tv_sec: 1_750_000_000, tv_nsec: 0)]
        guard utimensat(AT_FDCWD, path, &times, 0) == 0 else { throw HarnessError("utimensat \(path)") }
    }

    /// Two-way pushes: the user reads and flags messages (renames), moves one to another
    /// folder, deletes one and writes a new one; a `--once` sends it all.
    @Test func everyPowerCutOfATwoWayPushRecovers() throws {
        let h = try Self.synced()
        guard let inbox = h.account.mailboxId(path: "INBOX"), let work = h.account.mailboxId(path: "Work") else { throw HarnessError("no mailboxes") }
        let inboxMessages = h.account.messages(mailboxId: inbox)
        for m in inboxMessages.prefix(3) {
            guard let file = TwoWayTests.file(h, inbox, m.uid) else { throw HarnessError("no file for \(m.uid)") }
            try TwoWayTests.rename(h, file, flags: (Harness.letters(m).replacingOccurrences(of: "F", with: "") + (m.flagged ? "S" : "FS")).sortedLetters)
        }
        let workMessages = h.account.messages(mailboxId: work)
        if let m = workMessages.first, let file = TwoWayTests.file(h, work, m.uid) {
            try TwoWayTests.rename(h, file, flags: (Harness.letters(m) + "S").sortedLetters, folder: "INBOX")
        }
        if let m = workMessages.dropFirst().first, let file = TwoWayTests.file(h, work, m.uid) {
            try FileManager.default.removeItem(atPath: h.maildir + "/" + file)
        }
        try Self.writeMessage(h, folder: "Work", messageId: "written-here@example.org")
        let before = Self.serverState(h)
        let push = try Self.recordOnce(h, name: "push", expect: .userEdits)
        #expect(Self.serverState(h) != before, "the recorded run pushed nothing")
        try Self.prove([push], h)
    }

    /// Live updates: the daemon takes the server's changes as they come (flag changes, a move,
    /// an expunge, new mail), then pushes the user's (renames for flags and a delete).
    @Test func everyPowerCutOfTheDaemonRecovers() throws {
        let h = try Self.synced()
        guard let inbox = h.account.mailboxId(path: "INBOX"), let work = h.account.mailboxId(path: "Work") else { throw HarnessError("no mailboxes") }
        let live = try Self.record(h, name: "live") { environment in
            let d = try h.startDaemon(environment: environment)
            guard d.waitForLog("connected (WebSocket)") else { throw HarnessError("daemon: \(d.log.suffix(1500))") }
            for m in h.account.messages(mailboxId: inbox).prefix(3) {
                try h.account.setFlags(mailboxId: inbox, uid: m.uid, seen: !m.seen, flagged: !m.flagged)
            }
            let workMessages = h.account.messages(mailboxId: work)
            if let m = workMessages.first { _ = try h.account.move(mailboxId: work, uid: m.uid, to: inbox) }
            if let m = workMessages.dropFirst().first { try h.account.expunge(mailboxId: work, uid: m.uid) }
            _ = try h.account.deliver(Array("Subject: live\r\nMessage-ID: <live@x>\r\n\r\nlive mail\r\n".utf8), to: work)
            try h.expectMirrorEventually()
            guard d.terminate() == 0 else { throw HarnessError("daemon: \(d.log.suffix(1500))") }
        }
        // The edits, chosen before the run so that each state can say which of them it holds.
        var edits: [Edit] = []
        for m in h.account.messages(mailboxId: work).prefix(2) {
            guard let file = TwoWayTests.file(h, work, m.uid) else { throw HarnessError("no file for \(m.uid)") }
            let letters = (Harness.letters(m).replacingOccurrences(of: "F", with: "") + (m.flagged ? "S" : "FS")).sortedLetters
            edits.append(Edit(mailbox: "Work", uid: m.uid, folder: Edit.folder(of: file), unique: Edit.unique(of: file), letters: letters))
        }
        // (A message the server moved keeps its file's name, which no longer names its uid.)
        if let m = h.account.messages(mailboxId: inbox).last(where: { TwoWayTests.file(h, inbox, $0.uid) != nil }),
           let file = TwoWayTests.file(h, inbox, m.uid) {
            edits.append(Edit(mailbox: "INBOX", uid: m.uid, folder: Edit.folder(of: file), unique: Edit.unique(of: file), letters: nil))
        }
        let livePush = try Self.record(h, name: "live-push", expect: .liveEdits(edits)) { environment in
            let d = try h.startDaemon(environment: environment)
            guard d.waitForLog("connected (WebSocket)") else { throw HarnessError("daemon: \(d.log.suffix(1500))") }
            for edit in edits {
                let box = edit.mailbox == "INBOX" ? inbox : work
                guard let file = TwoWayTests.file(h, box, edit.uid) else { throw HarnessError("no file for \(edit.uid)") }
                if let letters = edit.letters {
                    try TwoWayTests.rename(h, file, flags: letters)
                } else {
                    try FileManager.default.removeItem(atPath: h.maildir + "/" + file)
                }
            }
            try h.expectMirrorEventually()
            guard d.terminate() == 0 else { throw HarnessError("daemon: \(d.log.suffix(1500))") }
        }
        #expect(edits.count == 3)
        try Self.prove([live, livePush], h)
    }
}
