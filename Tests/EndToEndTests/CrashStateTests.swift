#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import WildDuckSim

/// Crash states under power loss, in the manner of ALICE (OSDI '14) and CrashMonkey (OSDI '18):
/// real `--once` runs are recorded (the directory operations and durability barriers of the
/// Maildir layer, the cache's commits, and a copy of the cache and the Maildir after each
/// commit: `WDSYNC_FS_TRACE`, `WDSYNC_FS_TRACE_STATES`), then every state a power cut could
/// leave is built and recovered with the next `--once`. The model (docs/durability.md):
///
/// - a power cut after operation i keeps every commit of the cache up to i (synchronous=FULL)
///   and nothing after it;
/// - a rename or unlink is kept once its directory was fsynced (`D`) or its file system synced
///   (`S`); one that was not may be lost, in any combination with the others;
/// - file contents are not modelled: message bodies are made durable before their rename
///   (`Maildir.publish`), and whatever tmp/ holds is a leftover that recovery removes.
///
/// Each recovered state must: exit 0, change nothing on the server (the run only pulled, so
/// anything the recovery sends is something the user did not do), and leave the Maildir equal
/// to the server (no partial, missing or extra file). `contrib/crashstates.sh` runs every state
/// (`WDSYNC_CRASHSTATES=full`); the normal test runs a sample.
@Suite(.serialized) struct CrashStateTests {
    enum Op: Equatable {
        case rename(String, String)
        case unlink(String)
        case syncDirectory(String)
        case syncFilesystem
        case commit(String)
    }

    /// One recorded run: its trace, the per-commit copies, and the state before it.
    struct Recording {
        var ops: [Op]
        var states: String       // <id>/cache.sqlite(-wal), <id>/mail
        var before: String       // cache.sqlite(-wal) and mail before the run (may be absent)
        var after: String        // the same after the run
        var root: String         // the Maildir's path during the run
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
            case .commit: break
            }
        }
        return pending
    }

    /// A crash state: after the first `point` operations, with the unsynced operations
    /// `lost` (indexes) undone.
    struct State: Hashable, CustomStringConvertible {
        var point: Int
        var lost: [Int]
        var description: String { "point \(point), lost ops \(lost)" }
    }

    /// Builds `state` of `recording` into `target` (`mail`, `cache.sqlite`). Nil when it cannot
    /// be built exactly (an undone unlink whose bytes no copy holds).
    static func build(_ state: State, of r: Recording, into target: String) throws -> Bool {
        let fm = FileManager.default
        let ops = r.ops
        // The cache: the copy after the last commit before the point, or the one before the run.
        let commits = (0..<state.point).filter { if case .commit = ops[$0] { return true } else { return false } }
        var dbSource = r.before
        if let last = commits.last, case .commit(let id) = ops[last] { dbSource = r.states + "/" + id }
        // The Maildir: the copy at the next commit after the point (or after the run), with the
        // operations after the point and the lost ones undone, newest first.
        let next = (state.point..<ops.count).first { if case .commit = ops[$0] { return true } else { return false } }
        var mailSource = r.after + "/mail"
        var upTo = ops.count
        if let next, case .commit(let id) = ops[next] { mailSource = r.states + "/" + id + "/mail"; upTo = next + 1 }
        try fm.createDirectory(atPath: target, withIntermediateDirectories: true)
        for suffix in ["", "-wal"] where fm.fileExists(atPath: dbSource + "/cache.sqlite" + suffix) {
            try fm.copyItem(atPath: dbSource + "/cache.sqlite" + suffix, toPath: target + "/cache.sqlite" + suffix)
        }
        let mail = target + "/mail"
        if fm.fileExists(atPath: mailSource) { try fm.copyItem(atPath: mailSource, toPath: mail) }
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
                guard fm.fileExists(atPath: local(to)) else { return false }
                try fm.createDirectory(atPath: directory(local(from)), withIntermediateDirectories: true)
                guard rename(local(to), local(from)) == 0 else { return false }
            case .unlink(let p):
                guard let copy = copies.first(where: { fm.fileExists(atPath: $0 + p.dropFirst(r.root.count)) }) else {
                    // Only a leftover in tmp/ may be missing from every copy (written and
                    // removed between two commits): recovery removes those anyway.
                    return !visible(ops[i])
                }
                try fm.createDirectory(atPath: directory(local(p)), withIntermediateDirectories: true)
                if !fm.fileExists(atPath: local(p)) { try fm.copyItem(atPath: copy + p.dropFirst(r.root.count), toPath: local(p)) }
            default: break
            }
        }
        return true
    }

    /// Every state (full), or a sample: right before and after each commit and at the end, with
    /// none or all of the unsynced operations lost, and each one lost alone at the commits.
    static func states(of r: Recording, full: Bool, seed: UInt64) -> [State] {
        var result: [State] = []
        var rng = SplitMix(seed: seed)
        let commitPoints = r.ops.indices.filter { if case .commit = r.ops[$0] { return true } else { return false } }
        let points = full ? Array(0...r.ops.count) : Array(Set(commitPoints.flatMap { [$0, $0 + 1] } + [r.ops.count])).sorted()
        for point in points {
            let lossable = unsynced(r.ops, upTo: point).filter { visible(r.ops[$0]) }
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
            for lost in subsets { result.append(State(point: point, lost: lost.sorted())) }
        }
        var seen = Set<State>()
        return result.filter { seen.insert($0).inserted }
    }

    struct SplitMix {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// What the server holds, for "recovery sent nothing".
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
        if fm.fileExists(atPath: h.maildir) { try fm.copyItem(atPath: h.maildir, toPath: dir + "/mail") }
    }

    /// Runs `--once` recorded. The cache is checkpointed first, so the copies hold it whole.
    static func record(_ h: Harness, name: String) throws -> Recording {
        let base = h.dir + "/rec-" + name
        try keep(h, into: base + "/before")
        let trace = base + "/trace"
        try h.sync(environment: ["WDSYNC_FS_TRACE": trace, "WDSYNC_FS_TRACE_STATES": base + "/states"])
        try keep(h, into: base + "/after")
        let text = (try? String(contentsOfFile: trace, encoding: .utf8)) ?? ""
        return Recording(ops: parse(text), states: base + "/states", before: base + "/before", after: base + "/after", root: h.maildir)
    }

    /// Recovers each state with the next `--once` and checks it; returns (states, failures).
    static func check(_ r: Recording, _ h: Harness, label: String, full: Bool, seed: UInt64) throws -> (Int, [String]) {
        let server = serverState(h)
        let (maildir, db) = (h.maildir, h.db)
        defer { h.maildir = maildir; h.db = db }
        var failures: [String] = []
        var count = 0
        for (n, state) in states(of: r, full: full, seed: seed).enumerated() {
            let target = h.dir + "/state-\(label)-\(n)"
            guard try build(state, of: r, into: target) else { continue }
            count += 1
            h.maildir = target + "/mail"
            h.db = target + "/cache.sqlite"
            let result = try h.run()
            var problems: [String] = []
            if result.status != 0 { problems.append("exit \(result.status): \(result.stderr.suffix(400))") }
            let now = serverState(h)
            if now != server {
                problems.append("the server changed: \(Set(now).symmetricDifference(server).sorted().prefix(6))")
            }
            problems += h.mirrorDifferences()
            if !problems.isEmpty { failures.append("\(label) \(state) (seed \(seed)): " + problems.joined(separator: "; ")) }
            if let keep = ProcessInfo.processInfo.environment["WDSYNC_CRASHSTATES_KEEP"], !problems.isEmpty {
                // For a closer look: the state as built (rebuilt, since recovery changed it) and the trace.
                _ = try build(state, of: r, into: keep + "/\(label)-\(state.point)-\(n)")
                try? FileManager.default.copyItem(atPath: directory(r.states) + "/trace", toPath: keep + "/\(label)-\(state.point)-\(n)/trace")
                try? (result.stderr + result.stdout).write(toFile: keep + "/\(label)-\(state.point)-\(n)/log", atomically: true, encoding: .utf8)
            }
            try? FileManager.default.removeItem(atPath: target)
            // A recovery that changed the server spoils the states after it: stop at the first.
            if now != server { break }
        }
        return (count, failures)
    }

    /// The scenario: an initial sync, then an incremental one that brings flag changes (new/ to
    /// cur/ and back, flags), a move, expunges, new mail and a deleted mailbox.
    @Test func everyPowerCutOfAnInitialAndAnIncrementalSyncRecovers() throws {
        let env = ProcessInfo.processInfo.environment
        let full = env["WDSYNC_CRASHSTATES"] == "full"
        let seed = env["WDSYNC_CRASHSTATES_SEED"].flatMap { UInt64($0) } ?? 1
        let h = try Harness()
        guard let inbox = h.account.mailboxId(path: "INBOX") else { throw HarnessError("no INBOX") }
        let work = try h.account.createMailbox(path: "Work")
        let projects = try h.account.createMailbox(path: "Work/Projects")
        _ = try h.account.generate(count: full ? 30 : 14, mailboxIds: [inbox, work, projects], seed: 7, sizeMix: .small)
        for mailbox in [inbox, work, projects] {
            for (i, m) in h.account.messages(mailboxId: mailbox).enumerated() {
                try h.account.setFlags(mailboxId: mailbox, uid: m.uid, seen: i % 2 == 0, flagged: i % 3 == 0)
            }
        }
        let trash = try h.account.createMailbox(path: "Old")
        _ = try h.account.deliver(Array("Subject: old\r\nMessage-ID: <old@x>\r\n\r\nold\r\n".utf8), to: trash)
        let initial = try Self.record(h, name: "initial")
        #expect(initial.ops.contains { if case .commit = $0 { return true } else { return false } }, "nothing was recorded")

        let inboxMessages = h.account.messages(mailboxId: inbox)
        for m in inboxMessages.prefix(4) {
            try h.account.setFlags(mailboxId: inbox, uid: m.uid, seen: !m.seen, flagged: !m.flagged)
        }
        let workMessages = h.account.messages(mailboxId: work)
        if let m = workMessages.first { _ = try h.account.move(mailboxId: work, uid: m.uid, to: inbox) }
        for m in workMessages.dropFirst().prefix(2) { try h.account.expunge(mailboxId: work, uid: m.uid) }
        _ = try h.account.deliver(Array("Subject: new\r\nMessage-ID: <new@x>\r\n\r\nnew mail\r\n".utf8), to: work)
        try h.account.deleteMailbox(id: trash)
        let incremental = try Self.record(h, name: "incremental")

        var total = 0
        var failures: [String] = []
        for (label, r) in [("initial", initial), ("incremental", incremental)] {
            // The order the proof rests on: at every commit of the cache, every rename and
            // unlink in cur/ and new/ before it is durable.
            for (i, op) in r.ops.enumerated() {
                guard case .commit = op else { continue }
                let open = Self.unsynced(r.ops, upTo: i).filter { Self.visible(r.ops[$0]) }
                if !open.isEmpty { failures.append("\(label): commit at op \(i) comes before \(open.map { "\(r.ops[$0])" }) is durable") }
            }
        }
        // Both runs' states are recovered against the server as it is now: the user did nothing,
        // so a recovery must send nothing, whatever the server changed since the state was left.
        for (label, r) in [("incremental", incremental), ("initial", initial)] {
            let (n, f) = try Self.check(r, h, label: label, full: full, seed: seed)
            total += n
            failures += f
        }
        print("crash states: \(total) states, \(failures.count) failures")
        for failure in failures.prefix(20) { Issue.record("\(failure)") }
        #expect(total > 0)
    }
}
