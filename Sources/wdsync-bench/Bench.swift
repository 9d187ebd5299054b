// The benchmark runs. Each measured program is a child of the launcher (Launcher.swift); the
// simulator runs in this process and is not part of any measured figure.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Lock
import WildDuckSim

/// Mailbox paths; the first `--mailboxes` are used for the initial sync, all 20 for the big runs.
let mailboxPaths: [(path: String, specialUse: String?)] = [
    ("INBOX", nil), ("Archive", "\\Archive"), ("Sent Mail", "\\Sent"), ("Lists/swift", nil),
    ("Lists/wildduck", nil), ("Work/Projects/wdsync", nil), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"),
    ("Junk", "\\Junk"), ("Lists/isync", nil), ("Work/2023", nil), ("Work/2024", nil), ("Family", nil),
    ("Receipts", nil), ("Travel", nil), ("Newsletters", nil), ("Notifications", nil), ("GitHub", nil),
    ("Friends", nil), ("Old", nil),
]

/// Kills a child that runs longer than the suite's timeout.
final class Watchdog: Sendable {
    private let done = Mutex(false)
    init(pid: pid_t, seconds: Double) {
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [self] in
            done.withLock { if !$0 { kill(pid, SIGKILL) } }
        }
    }
    func cancel() { done.withLock { $0 = true } }
}

/// utime+stime of a running process, in seconds (all threads).
func processCPU(_ pid: pid_t) -> Double? {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = s.lastIndex(of: ")") else { return nil }
    let f = s[s.index(after: close)...].split(separator: " ")
    guard f.count > 12, f[0] != "Z", let u = Double(f[11]), let k = Double(f[12]) else { return nil }
    return (u + k) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// CPU time of a running process in seconds, at nanosecond resolution: the sum of its threads'
/// run time from /proc/PID/task/*/schedstat, never less than the tick-based figure of
/// /proc/PID/stat (which also counts threads that have exited).
func processCPUPrecise(_ pid: pid_t) -> Double? {
    guard let ticks = processCPU(pid) else { return nil }
    guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return ticks }
    var ns: UInt64 = 0
    for t in tasks {
        if let s = try? String(contentsOfFile: "/proc/\(pid)/task/\(t)/schedstat", encoding: .utf8),
           let first = s.split(separator: " ").first, let v = UInt64(first) {
            ns += v
        }
    }
    return max(ticks, Double(ns) / 1e9)
}

final class Bench {
    let o: Options
    let launcher: Launcher
    let selfPath: String
    var rows: [Row] = []
    var notes: [String] = []
    var ratios: [String: Double] = [:]
    var targets: [Target] = []
    var machine: [String: String] = [:]
    var work: String { o.workdir }
    /// When the work directory was emptied (and the disk synced).
    var emptiedAt = monotonicNs()

    init(options: Options, launcher: Launcher, selfPath: String) {
        self.o = options
        self.launcher = launcher
        self.selfPath = selfPath
    }

    // MARK: - driver

    func run() throws {
        let cwd = FileManager.default.currentDirectoryPath
        func absolute(_ p: String) -> String { p.hasPrefix("/") ? p : cwd + "/" + p }
        // Only a directory this suite made (it holds the marker) or an empty one is emptied.
        let marker = work + "/.wdsync-bench"
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: work), !entries.isEmpty,
           !FileManager.default.fileExists(atPath: marker) {
            throw BenchError("refusing to empty \(work): not empty and not made by wdsync-bench (use another --workdir)")
        }
        removeTree(work)
        sync()
        emptiedAt = monotonicNs()
        try makeDirs(work)
        chmod(work, 0o755)   // dovecot's mail user must reach its store below
        try writeFile(marker, [])
        describeMachine()

        let baseline = try measure([findExecutable("true") ?? "/bin/true"], name: "baseline")
        notes.append("CPU s = user+sys and RSS = ru_maxrss of the client process alone (wait4); the server side (dovecot, the in-process simulator) is counted for neither. Children are forked by a small launcher; /bin/true measures \(String(format: "%.1f", baseline.maxrssMiB)) MiB there.")
        notes.append("msg/s and MB/s use wall time (monotonic); MB = 10^6 bytes of message data as stored on the server.")

        if o.only.contains("initial") { try initial(wdsync: absolute(o.wdsync)) }
        if !o.only.isDisjoint(with: ["memory", "noop", "change", "fullcheck", "idle"]) { try big(wdsync: absolute(o.wdsync)) }
        if o.only.contains("live") { try live(wdsync: absolute(o.wdsync)) }
        if o.only.contains("push") { try push(wdsync: absolute(o.wdsync)) }
        if o.only.contains("restore") { try restore(wdsync: absolute(o.wdsync)) }
        if o.only.contains("soak") { try soak(wdsync: absolute(o.wdsync)) }
        report()
        if !o.keep { removeTree(work) }
    }

    func describeMachine() {
        var u = utsname()
        uname(&u)
        func str<T>(_ t: T) -> String { withUnsafeBytes(of: t) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) } }
        machine["kernel"] = "\(str(u.sysname)) \(str(u.release)) \(str(u.machine))"
        if let cpu = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
           let line = cpu.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
           let v = line.split(separator: ":", maxSplits: 1).last {
            machine["cpu"] = v.trimmingCharacters(in: .whitespaces)
        }
        machine["cores"] = "\(sysconf(Int32(_SC_NPROCESSORS_ONLN)))"
        machine["memoryGiB"] = String(format: "%.1f", Double(sysconf(Int32(_SC_PHYS_PAGES))) * Double(sysconf(Int32(_SC_PAGESIZE))) / 1073741824)
        machine["filesystem"] = "\(fsType(work)) (\(work))"
        if let m = findExecutable(o.mbsync), let v = try? runQuiet([m, "--version"]) {
            machine["mbsync"] = v.output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let d = findExecutable(o.dovecot), let v = try? runQuiet([d, "--version"]) {
            machine["dovecot"] = v.output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    // MARK: - helpers

    /// Runs one measured child with a timeout; stdout/stderr go to files named after `name`.
    func measure(_ argv: [String], name: String, whileRunning: (pid_t) -> Void = { _ in }) throws -> RunResult {
        try makeDirs(work + "/logs")
        while cleanup.isInterrupted { pause() }
        var dog: Watchdog?
        let r = try launcher.run(argv, stdout: "\(work)/logs/\(name).out", stderr: "\(work)/logs/\(name).err") { pid in
            cleanup.setChild(pid)
            dog = Watchdog(pid: pid, seconds: o.timeout)
            whileRunning(pid)
        }
        dog?.cancel()
        cleanup.setChild(nil)
        while cleanup.isInterrupted { pause() }   // the signal handler stops dovecot and exits
        return r
    }

    func lastLine(_ name: String) -> String? {
        for ext in ["err", "out"] {
            if let s = try? String(contentsOfFile: "\(work)/logs/\(name).\(ext)", encoding: .utf8),
               let l = s.split(separator: "\n").last(where: { !$0.trimmingCharacters(in: .whitespaces).isEmpty }) {
                return String(l.prefix(160))
            }
        }
        return nil
    }

    func settleDisk() {
        sync()
        usleep(500_000)
    }

    func makeAccount(messages: Int, mailboxes: Int, seed: UInt64) throws -> (SimAccount, [String]) {
        // The account and its mail are older than its first sync: their journal entries are an
        // hour old (a first sync right after 100,000 deliveries would have its next pass read
        // them all again, to confirm the listings; see docs/incremental-sync.md).
        let account = SimAccount(username: "demo", password: "demo", clock: { Date().addingTimeInterval(-3600) })
        var ids: [String] = []
        for mb in mailboxPaths.prefix(mailboxes) {
            ids.append(try account.mailboxId(path: mb.path) ?? account.createMailbox(path: mb.path, specialUse: mb.specialUse))
        }
        let t0 = monotonicNs()
        try account.generate(count: messages, mailboxIds: ids, seed: seed, sizeMix: .realistic, corpus: o.corpus)
        account.setClock { Date() }
        let t = Double(monotonicNs() - t0) / 1e9
        eprint("  generated \(messages) messages in \(mailboxes) mailboxes (\(String(format: "%.1f", t)) s)\n")
        return (account, ids)
    }

    func writePassword() throws -> String {
        let p = work + "/password"
        try writeFile(p, Array("demo\n".utf8), mode: 0o600)
        chmod(p, 0o600)
        return p
    }

    /// `log`: "-q" (the default), "-v", or nil for wdsync's normal log.
    func wdsyncArgs(_ bin: String, server: SimServer, maildir: String, db: String, once: Bool, log: String? = "-q") throws -> [String] {
        var a = [bin]
        if once { a.append("--once") }
        a += ["--server", server.baseURL, "--user", "demo", "--password-file", try writePassword(),
              "--maildir", maildir, "--db", db]
        if let log { a.append(log) }
        return a
    }

    /// A generated account on a started simulator, and `name`'s Maildir (emptied) and cache in
    /// the work directory. The caller stops the server.
    func simulated(_ name: String, messages: Int, mailboxes: Int, seed: UInt64) throws
        -> (account: SimAccount, ids: [String], server: SimServer, maildir: String, db: String) {
        let (account, ids) = try makeAccount(messages: messages, mailboxes: mailboxes, seed: seed)
        let server = SimServer(account: account)
        try server.start()
        let maildir = work + "/\(name)-mail", db = work + "/\(name).sqlite"
        removeTree(maildir)
        return (account, ids, server, maildir, db)
    }

    // MARK: - 1. initial sync

    /// One subject of the initial-sync comparison: how to run it once into an empty Maildir.
    struct Contender {
        var subject: String
        var maildir: String
        var argv: [String]
        var log: String
        var server: SimServer?
        var results: [(RunResult, requests: Int?, bytesSent: Int?, routes: [String: Int]?)] = []
        var failed: Row?
    }

    func initial(wdsync: String) throws {
        eprint("initial sync: \(o.messages) messages, \(o.repeats) round(s)\n")
        let dir = work + "/initial"
        try makeDirs(dir)
        let (account, ids) = try makeAccount(messages: o.messages, mailboxes: o.mailboxes, seed: o.seed)
        let paths = Dictionary(uniqueKeysWithValues: account.mailboxes().map { ($0.id, $0.path) })
        var count = 0, bytes = 0
        var perBox: [(folder: String, msgs: [SimMessage])] = []
        for id in ids {
            let msgs = account.messages(mailboxId: id)
            perBox.append((paths[id] ?? id, msgs))
            count += msgs.count
            bytes += msgs.reduce(0) { $0 + $1.raw.count }
        }
        notes.append("initial sync corpus: \(count) messages, \(String(format: "%.1f", Double(bytes) / 1e6)) MB in \(ids.count) mailboxes; every client starts from an empty Maildir and makes each message durable before it appears in new/ or cur/ (an fsync per file; wdsync and the last floor: one syncfs per batch). Rows show the median of \(o.repeats) round(s) by wall time (range in the result column). Every round writes fresh trees, all removed only after the last round; the disk is synced and rests 2 s before each run; the contenders' order rotates each round.")

        var contenders: [Contender] = []
        // Floor: the simplest loop, and the same loop in 4 threads for context.
        _ = try writePack(perBox.map { ($0.folder, $0.msgs.map(\.raw)) }, index: dir + "/pack.idx", pack: dir + "/pack.bin")
        contenders.append(Contender(subject: "floor (tmp+fsync+rename)", maildir: dir + "/floor",
                                    argv: [selfPath, "--floor-child", dir + "/pack.idx", dir + "/pack.bin", dir + "/floor"], log: "floor"))
        contenders.append(Contender(subject: "floor x4 threads", maildir: dir + "/floor4",
                                    argv: [selfPath, "--floor-child", dir + "/pack.idx", dir + "/pack.bin", dir + "/floor4", "4"], log: "floor4"))
        contenders.append(Contender(subject: "floor x4, syncfs per 64", maildir: dir + "/floor4b",
                                    argv: [selfPath, "--floor-child", dir + "/pack.idx", dir + "/pack.bin", dir + "/floor4b", "4", "64"],
                                    log: "floor4b"))

        // mbsync from a private dovecot.
        var dove: Dovecot?
        defer { dove?.stop() }
        var mb = Contender(subject: "mbsync <- dovecot", maildir: dir + "/mbsync-maildir", argv: [], log: "mbsync")
        if let row = setUpDovecot(perBox, dir: dir, into: &dove, contender: &mb) { mb.failed = row }
        contenders.append(mb)

        // wdsync from the simulator.
        var wd = Contender(subject: "wdsync", maildir: dir + "/wdsync-maildir", argv: [], log: "wdsync-initial")
        let server = SimServer(account: account)
        defer { server.stop() }
        if findExecutable(wdsync) == nil {
            wd.failed = Row("initial", "wdsync"); wd.failed?.status = "not built (\(wdsync))"
        } else {
            do {
                try server.start(host: "127.0.0.1", port: 0)
                wd.argv = try wdsyncArgs(wdsync, server: server, maildir: wd.maildir, db: dir + "/wdsync.db", once: true)
                wd.server = server
            } catch {
                wd.failed = Row("initial", "wdsync"); wd.failed?.status = "simulator unavailable: \(error)"
            }
        }
        contenders.append(wd)

        // Fairness: every round writes into fresh trees and nothing is deleted until all rounds
        // are done (on ext4, creating files right after a mass deletion is slow —
        // `recently_deleted` under `__ext4_new_inode` — and whoever ran next paid for it); the
        // disk is synced and left to settle before each run; the order rotates every round, so
        // no contender always follows the same one.
        //
        // The deletions before the first round (the emptied work directory, or the clean-up of an
        // earlier run) count too: ext4 without a journal passes over every inode freed in the
        // last 60 s (300 s while its inode table block is unwritten) and checks each one, so the
        // first runs after them spent most of their CPU there and spun on directory locks. The
        // rounds start once the synced disk is a minute past them.
        settleDisk()
        let quietFor = Double(monotonicNs() - emptiedAt) / 1e9
        if quietFor < 65 {
            eprint("  waiting \(Int(65 - quietFor)) s for the inodes freed before this run to age (ext4 skips recent ones)\n")
            usleep(useconds_t((65 - quietFor) * 1e6))
        }
        notes.append("The first round starts at least 65 s after the last deletion of files and a sync: ext4 without a journal scans past inodes freed in the last minute when it allocates one, which made whoever ran first pay several times the normal kernel time.")
        let active = contenders.indices.filter { contenders[$0].failed == nil }
        var trees: [String] = []
        for round in 1...o.repeats {
            let shift = (round - 1) % max(1, active.count)
            for i in Array(active[shift...] + active[..<shift]) where contenders[i].failed == nil {
                var c = contenders[i]
                let maildir = "\(c.maildir)-r\(round)"
                let db = "\(dir)/wdsync-r\(round).db"
                eprint("  round \(round): \(c.subject)\n")
                removeTree(maildir)
                trees.append(maildir)
                var argv = c.argv.map { $0 == c.maildir ? maildir : $0 == dir + "/wdsync.db" ? db : $0 }
                if c.subject.hasPrefix("mbsync") {
                    try makeDirs(maildir)
                    if let port = dove?.port {
                        let rc = "\(dir)/mbsyncrc-r\(round)"
                        try writeFile(rc, Array(mbsyncConfig(port: port, maildir: maildir).utf8), mode: 0o600)
                        argv = argv.map { $0 == dir + "/mbsyncrc" ? rc : $0 }
                    }
                }
                if c.subject == "wdsync" { trees += [db, db + "-wal", db + "-shm"] }
                settleDisk()
                usleep(1_500_000)
                c.server?.resetStats()
                let r = try measure(argv, name: "\(c.log)-r\(round)")
                let st = c.server?.stats()
                var row = Row("initial", c.subject)
                row.fill(r, messages: count, bytes: bytes)
                if !r.ok { row.note = lastLine("\(c.log)-r\(round)") }
                checkCount(&row, maildir, expected: count, name: c.log)
                if row.status != "ok" { c.failed = row } else { c.results.append((r, st?.totalRequests, st?.bytesSent, st?.perRoute)) }
                contenders[i] = c
            }
        }
        for t in trees + [dir + "/mbsync-warm"] { removeTree(t); unlink(t) }
        unlink(dir + "/pack.bin"); unlink(dir + "/pack.idx")

        var cpuMedian: [String: Double] = [:]   // subject → median CPU s over the rounds
        for c in contenders {
            if let f = c.failed { rows.append(f); continue }
            let sorted = c.results.sorted { $0.0.wall < $1.0.wall }
            guard !sorted.isEmpty else { continue }
            let med = sorted[sorted.count / 2]
            var row = Row("initial", c.subject)
            row.fill(med.0, messages: count, bytes: bytes)
            row.requests = med.requests
            row.bytesSent = med.bytesSent
            row.requestsByRoute = med.routes
            // The row is the round of median wall time; CPU is compared by its own median.
            let cpu = c.results.map(\.0.cpu).sorted()
            cpuMedian[c.subject] = cpu[cpu.count / 2]
            if sorted.count > 1, let lo = sorted.first, let hi = sorted.last {
                row.note = String(format: "msg/s %.0f-%.0f, CPU s %.2f-%.2f (median %.2f) over %d rounds", Double(count) / hi.0.wall,
                                  Double(count) / lo.0.wall, cpu.first ?? 0, cpu.last ?? 0, cpu[cpu.count / 2], sorted.count)
            }
            rows.append(row)
        }

        let w = rows.first { $0.benchmark == "initial" && $0.subject == "wdsync" && $0.status == "ok" }?.msgPerSecond
        let m = rows.first { $0.benchmark == "initial" && $0.subject.hasPrefix("mbsync") && $0.status == "ok" }?.msgPerSecond
        let f = rows.first { $0.benchmark == "initial" && $0.subject.hasPrefix("floor (") && $0.status == "ok" }?.msgPerSecond
        let f4 = rows.first { $0.benchmark == "initial" && $0.subject == "floor x4 threads" && $0.status == "ok" }?.msgPerSecond
        let f4b = rows.first { $0.benchmark == "initial" && $0.subject.hasPrefix("floor x4, syncfs") && $0.status == "ok" }?.msgPerSecond
        if let w, let m { ratios["initial.wdsync/mbsync"] = w / m }
        if let w, let f { ratios["initial.wdsync/floor"] = w / f }
        if let w, let f4 { ratios["initial.wdsync/floor-x4"] = w / f4 }
        if let w, let f4b { ratios["initial.wdsync/floor-x4-syncfs"] = w / f4b }
        if let m, let f { ratios["initial.mbsync/floor"] = m / f }
        if let w = cpuMedian["wdsync"], let m = cpuMedian.first(where: { $0.key.hasPrefix("mbsync") })?.value, m > 0 {
            ratios["initial.wdsync/mbsync CPU"] = w / m
        }
        let wm = ratios["initial.wdsync/mbsync"], wf = ratios["initial.wdsync/floor"], wc = ratios["initial.wdsync/mbsync CPU"]
        targets.append(Target(name: "initial vs mbsync", goal: "wdsync msg/s >= 2x mbsync",
                              measured: wm.map { String(format: "%.2fx", $0) } ?? "not measured", met: wm.map { $0 >= 2 }))
        targets.append(Target(name: "initial vs floor", goal: "wdsync msg/s >= 0.5x floor",
                              measured: wf.map { String(format: "%.2fx", $0) } ?? "not measured", met: wf.map { $0 >= 0.5 }))
        targets.append(Target(name: "initial CPU vs mbsync", goal: "wdsync CPU s per message <= mbsync's (medians of the rounds)",
                              measured: wc.map { String(format: "%.2fx", $0) } ?? "not measured", met: wc.map { $0 <= 1 }))
    }

    func checkCount(_ row: inout Row, _ maildir: String, expected: Int, name: String) {
        guard row.status == "ok" else { return }
        let n = countMaildirMessages(maildir)
        if n != expected {
            row.status = "incomplete"
            row.note = "\(n) of \(expected) messages in the Maildir"
        }
    }

    /// Starts a private dovecot holding the same messages, warms it, and fills in mbsync's
    /// command line. Returns a row explaining why mbsync cannot run, or nil.
    func setUpDovecot(_ perBox: [(folder: String, msgs: [SimMessage])], dir: String,
                      into dove: inout Dovecot?, contender c: inout Contender) -> Row? {
        var row = Row("initial", c.subject)
        guard let mbsync = findExecutable(o.mbsync) else { row.status = "not installed (apt-get install isync)"; return row }
        guard let dovecotBin = findExecutable(o.dovecot) else { row.status = "not installed (apt-get install dovecot-imapd)"; return row }
        eprint("  setting up dovecot\n")
        do {
            let d = try Dovecot(binary: dovecotBin, dir: dir + "/dovecot")
            try d.writeConfig()
            try d.preDeliver(perBox.map { box in
                (box.folder, box.msgs.map { m in
                    (m.raw, maildirFlags(draft: m.draft, flagged: m.flagged, forwarded: m.forwarded,
                                         answered: m.answered, seen: m.seen, deleted: m.deleted), m.idate)
                })
            })
            try d.start()
            dove = d
            d.index()
            // Warm-up: one untimed full pass into a throwaway Maildir.
            let warm = dir + "/mbsync-warm"
            try makeDirs(warm)
            try writeFile(dir + "/mbsyncrc-warm", Array(mbsyncConfig(port: d.port, maildir: warm).utf8), mode: 0o600)
            let w = try measure([mbsync, "-c", dir + "/mbsyncrc-warm", "-a", "-q"], name: "mbsync-warm")
            // Removed with the timed trees after the last round, not before the first.
            if !w.ok {
                row.status = "failed (warm-up \(w.statusText))"
                row.note = lastLine("mbsync-warm")
                return row
            }
            notes.append("dovecot was warmed before the timed mbsync runs: indexes built (doveadm force-resync) and one untimed full mbsync pass into a throwaway Maildir.")
            try writeFile(dir + "/mbsyncrc", Array(mbsyncConfig(port: d.port, maildir: c.maildir).utf8), mode: 0o600)
            c.argv = [mbsync, "-c", dir + "/mbsyncrc", "-a", "-q"]
            return nil
        } catch {
            row.status = "failed: \(error)"
            return row
        }
    }

    // MARK: - 2, 3, 5, 6: the big account

    func big(wdsync: String) throws {
        let n = o.big
        eprint("big account: \(n) messages in 20 mailboxes\n")
        let sel = o.only
        guard findExecutable(wdsync) != nil else {
            for b in ["memory", "noop", "change", "fullcheck", "idle"] where sel.contains(b) {
                var r = Row(b, "wdsync"); r.status = "not built (\(wdsync))"; rows.append(r)
            }
            return
        }
        let dir = work + "/big"
        try makeDirs(dir)
        let (account, ids) = try makeAccount(messages: n, mailboxes: 20, seed: o.seed &+ 100)
        let bytes = ids.reduce(0) { acc, id in acc + account.messages(mailboxId: id).reduce(0) { $0 + $1.raw.count } }
        let server = SimServer(account: account)
        do {
            try server.start(host: "127.0.0.1", port: 0)
        } catch {
            for b in ["memory", "noop", "change", "fullcheck", "idle"] where sel.contains(b) {
                var r = Row(b, "wdsync"); r.status = "simulator unavailable: \(error)"; rows.append(r)
            }
            return
        }
        defer { server.stop() }
        let maildir = dir + "/maildir", db = dir + "/wdsync.db"
        let args = try wdsyncArgs(wdsync, server: server, maildir: maildir, db: db, once: true)
        let suffix = n == 100_000 ? "" : " (on \(n), not 100k)"

        // 5. Memory: the initial sync of the big account.
        eprint("  initial sync (memory)\n")
        settleDisk()
        server.resetStats()
        let first = try measure(args, name: "wdsync-big-initial")
        var mem = Row("memory", "wdsync initial")
        mem.fill(first, messages: n, bytes: bytes)
        mem.requests = server.stats().totalRequests
        mem.bytesSent = server.stats().bytesSent
        mem.requestsByRoute = server.stats().perRoute
        if !first.ok { mem.note = lastLine("wdsync-big-initial") }
        checkCount(&mem, maildir, expected: n, name: "wdsync-big-initial")
        if sel.contains("memory") {
            rows.append(mem)
            targets.append(Target(name: "memory", goal: "peak RSS < 64 MiB for 100k", measured: String(format: "%.1f MiB", first.maxrssMiB) + suffix,
                                  met: mem.status == "ok" ? first.maxrssMiB < 64 : nil))
        }
        guard mem.status == "ok" else {
            for b in ["noop", "change", "fullcheck", "idle"] where sel.contains(b) {
                var r = Row(b, "wdsync"); r.status = "skipped (big initial sync failed)"; rows.append(r)
            }
            return
        }

        // 2. No-op incremental.
        if sel.contains("noop") || sel.contains("change") {
            eprint("  no-op --once\n")
            let (r, d, row0) = try incremental(args, name: "wdsync-noop", benchmark: "noop", messages: n, server: server, maildir: maildir)
            var row = row0
            if d.total > 0 { row.note = "touched " + d.text }
            if !r.ok { row.note = lastLine("wdsync-noop") }
            if sel.contains("noop") {
                rows.append(row)
                targets.append(Target(name: "no-op incremental", goal: "< 1 s and 0 files touched on 100k",
                                      measured: String(format: "%.3f s, %d touched", r.wall, d.total) + suffix,
                                      met: r.ok ? (r.wall < 1 && d.total == 0) : nil))
            }
        }

        // 3. Small change: 100 new messages, 100 flag changes, spread over the mailboxes; once
        // caught up from the server's journal, once more with the journal expired (every
        // changed mailbox listed in full).
        if sel.contains("change") {
            for (round, expired) in [false, true].enumerated() {
                eprint("  small change --once\(expired ? " (journal expired)" : "")\n")
                // Flag changes first, on existing messages only, so none lands on a new message.
                var changed = 0
                for (i, id) in ids.enumerated() {
                    let msgs = account.messages(mailboxId: id)
                    guard !msgs.isEmpty else { continue }
                    let per = 100 / ids.count + (i < 100 % ids.count ? 1 : 0)
                    for k in 0..<min(per, msgs.count) {
                        let m = msgs[(k * 7919 + i * 31 + round * 17) % msgs.count]
                        try account.setFlags(mailboxId: id, uid: m.uid, seen: !m.seen)
                        changed += 1
                    }
                }
                try account.generate(count: 100, mailboxIds: ids, seed: o.seed &+ 200 &+ UInt64(round), sizeMix: .realistic, corpus: o.corpus)
                if expired {
                    // Four hours on, the journal has dropped these entries.
                    let later = Date().addingTimeInterval(4 * 3600)
                    account.setClock { later }
                }
                let name = expired ? "wdsync-change-expired" : "wdsync-change"
                let (r, d, row0) = try incremental(args, name: name, benchmark: "change", messages: 100 + changed,
                                                   server: server, maildir: maildir)
                var row = row0
                if expired { row.subject = "wdsync --once, journal expired" }
                let downloads = row.requestsByRoute?["message.eml"] ?? 0
                let kinds = (row.requestsByRoute ?? [:]).filter { $0.key != "message.eml" && $0.value > 0 }
                    .sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                row.note = "100 new + \(changed) flag changes; \((row.requests ?? 0) - downloads) requests besides downloads (\(kinds)); touched " + d.text
                if !r.ok { row.note = lastLine(name) }
                checkCount(&row, maildir, expected: n + 100 * (round + 1), name: name)
                rows.append(row)
                if !expired {
                    targets.append(Target(name: "small change from the journal", goal: "<= 20 requests besides downloads, <= 0.3 s",
                                          measured: String(format: "%d requests, %.3f s", (row.requests ?? 0) - downloads, r.wall) + suffix,
                                          met: r.ok ? ((row.requests ?? 0) - downloads <= 20 && r.wall <= 0.3) : nil))
                }
            }
        }

        // 4. The safety net: `--full-check` lists every mailbox and compares it with the cache.
        if sel.contains("fullcheck") {
            eprint("  --once --full-check\n")
            let (r, d, row0) = try incremental(args + ["--full-check"], name: "wdsync-fullcheck", benchmark: "fullcheck",
                                               messages: n, server: server, maildir: maildir)
            var row = row0
            row.subject = "wdsync --once --full-check"
            row.note = "every mailbox listed and compared; touched " + d.text
            if !r.ok { row.note = lastLine("wdsync-fullcheck") }
            rows.append(row)
            targets.append(Target(name: "full check (reported, no goal)", goal: "cost of listing every mailbox",
                                  measured: String(format: "%d requests, %.3f s", row.requests ?? 0, r.wall) + suffix, met: nil))
        }

        // 6. Idle daemon.
        if sel.contains("idle") {
            eprint("  idle daemon (\(Int(o.idleSeconds)) s)\n")
            let dargs = try wdsyncArgs(wdsync, server: server, maildir: maildir, db: db, once: false)
            var row = Row("idle", "wdsync daemon")
            var cpu: Double?, window = 0.0, requests = 0
            var problem: String?
            let r = try measure(dargs, name: "wdsync-idle") { pid in
                // Let the daemon finish its start-up reconciliation: requests stop for 2 s.
                let settleDeadline = monotonicNs() + 60_000_000_000
                var last = -1, stableSince = monotonicNs()
                while monotonicNs() < settleDeadline {
                    let c = server.stats().totalRequests
                    if c != last { last = c; stableSince = monotonicNs() }
                    if monotonicNs() - stableSince > 2_000_000_000 { break }
                    usleep(100_000)
                }
                guard let c0 = processCPUPrecise(pid) else { problem = "daemon exited during start-up"; return }
                server.resetStats()
                let t0 = monotonicNs()
                usleep(useconds_t(o.idleSeconds * 1e6))
                guard let c1 = processCPUPrecise(pid) else { problem = "daemon exited while idle"; return }
                window = Double(monotonicNs() - t0) / 1e9
                cpu = c1 - c0
                requests = server.stats().totalRequests
                kill(pid, SIGTERM)
                let deadline = monotonicNs() + 10_000_000_000
                while processCPU(pid) != nil && monotonicNs() < deadline { usleep(50_000) }
                if processCPU(pid) != nil { kill(pid, SIGKILL); problem = "did not exit within 10 s of SIGTERM" }
            }
            if let cpu {
                row.wallSeconds = window
                row.cpuSeconds = cpu
                row.idleCpuPercent = cpu / window * 100
                row.peakRssMiB = r.maxrssMiB
                row.requests = requests
                row.note = problem
                targets.append(Target(name: "idle", goal: "< 0.5 % of one core", measured: String(format: "%.3f %%", cpu / window * 100),
                                      met: cpu / window * 100 < 0.5))
            } else {
                row.status = "failed (\(problem ?? r.statusText))"
                row.note = lastLine("wdsync-idle")
                targets.append(Target(name: "idle", goal: "< 0.5 % of one core", measured: "not measured", met: nil))
            }
            rows.append(row)
        }
    }

    /// One measured `wdsync --once` on an already synced Maildir: the run, the files it
    /// touched, and a row with its time, requests and touched-file count.
    func incremental(_ args: [String], name: String, benchmark: String, messages: Int, server: SimServer,
                     maildir: String) throws -> (RunResult, SnapshotDiff, Row) {
        settleDisk()
        let before = snapshot(maildir)
        server.resetStats()
        let r = try measure(args, name: name)
        let st = server.stats()
        let d = diff(before, snapshot(maildir))
        var row = Row(benchmark, "wdsync --once")
        row.fill(r, messages: messages, bytes: nil)
        row.msgPerSecond = nil
        row.requests = st.totalRequests
        row.bytesSent = st.bytesSent
        row.requestsByRoute = st.perRoute
        row.filesTouched = d.total
        return (r, d, row)
    }

    // MARK: - output

    func report() {
        print("")
        print("wdsync benchmark  (\(machine["cpu"] ?? "?"), \(machine["cores"] ?? "?") cores, \(machine["memoryGiB"] ?? "?") GiB, \(machine["filesystem"] ?? "?"))")
        print("")
        print(renderTable(rows))
        print("")
        if !ratios.isEmpty {
            print("ratios: " + ratios.sorted { $0.key < $1.key }.map { "\($0.key) = \(String(format: "%.2f", $0.value))" }.joined(separator: ", "))
        }
        if !targets.isEmpty {
            print("targets:")
            for t in targets {
                let mark = t.met.map { $0 ? "met " : "MISS" } ?? "n/a "
                print("  [\(mark)] \(t.name): \(t.goal) -- measured \(t.measured)")
            }
        }
        print("notes:")
        for n in notes { print("  - " + n) }
        for k in ["mbsync", "dovecot", "kernel"] { if let v = machine[k] { print("  - \(k): \(v)") } }

        if let path = o.json {
            let fmt = ISO8601DateFormatter()
            var settings: [String: String] = [
                "messages": "\(o.messages)", "mailboxes": "\(o.mailboxes)", "big": "\(o.big)",
                "only": o.only.sorted().joined(separator: ","), "wdsync": o.wdsync, "seed": "\(o.seed)", "repeat": "\(o.repeats)",
                "idleSeconds": "\(o.idleSeconds)", "soakMinutes": "\(o.soakMinutes)",
            ]
            if let c = o.corpus { settings["corpus"] = c }
            let rep = Report(date: fmt.string(from: Date()), machine: machine, settings: settings, notes: notes,
                             results: rows, ratios: ratios, targets: targets)
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            do {
                try enc.encode(rep).write(to: URL(fileURLWithPath: path))
                print("  - JSON written to \(path)")
            } catch {
                eprint("wdsync-bench: cannot write \(path): \(error)\n")
            }
        }
    }
}
