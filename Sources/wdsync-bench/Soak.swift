import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Maildir
import WildDuckSim

/// Resident set size (MiB) and open file descriptors of a running process.
func processFootprint(_ pid: pid_t) -> (rssMiB: Double, fds: Int)? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kB = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) }),
          let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return nil }
    return (kB / 1024, fds.count)
}

/// One side's view of a mailbox for the divergence check: how many messages with given bytes and
/// S/F flags it holds. Bytes, not Message-IDs: the soak never uploads, so every file on disk is
/// the server's message byte for byte.
typealias SoakView = [String: [String: Int]]

extension Bench {
    /// 6. Soak: the daemon under continuous churn for `--soak-minutes` (server deliveries, flag
    /// changes, moves and expunges; local flag changes, moves and deletes as mutt makes them; the
    /// WebSocket cut every minute). Reports RSS and open descriptors at the start and the end,
    /// and how far the Maildir is from the server once the churn stops and the daemon settles.
    func soak(wdsync: String) throws {
        let seconds = o.soakMinutes * 60
        eprint("  soak: \(String(format: "%g", o.soakMinutes)) minutes of churn against the live daemon\n")
        let (account, ids, server, maildir, db) = try simulated("soak", messages: 2_000, mailboxes: 6, seed: o.seed + 11)
        defer { server.stop() }
        let args = try wdsyncArgs(wdsync, server: server, maildir: maildir, db: db, once: false, log: nil)
        let folders = ids.enumerated().map { i, id in
            (id: id, dir: maildir + "/" + FolderNames.encode(mailboxPaths[i].path, layout: .verbatim))
        }
        var rng = SplitMix64(seed: o.seed + 12)
        var start: (rssMiB: Double, fds: Int)?, end: (rssMiB: Double, fds: Int)?
        var peakRss = 0.0, peakFds = 0
        var counts: [String: Int] = [:]
        var drops = 0
        var divergence: Int?
        var settleSeconds = 0.0
        var problem: String?

        func serverView() -> SoakView {
            var v: SoakView = [:]
            for f in folders {
                for m in account.messages(mailboxId: f.id) {
                    v[f.dir, default: [:]][soakKey(m.raw, seen: m.seen, flagged: m.flagged), default: 0] += 1
                }
            }
            return v
        }
        func diskView() -> SoakView {
            var v: SoakView = [:]
            for f in folders {
                for sub in ["new", "cur"] {
                    let dir = f.dir + "/" + sub
                    for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where !name.hasPrefix(".") {
                        guard let data = FileManager.default.contents(atPath: dir + "/" + name) else { continue }
                        let flags = MessageFlags(fileName: name)
                        v[f.dir, default: [:]][soakKey(Array(data), seen: flags.contains(.seen), flagged: flags.contains(.flagged)), default: 0] += 1
                    }
                }
            }
            return v
        }
        /// Messages on one side and not the other (0 = the Maildir is the server's state).
        func difference() -> Int {
            let s = serverView(), d = diskView()
            var n = 0
            for dir in Set(s.keys).union(d.keys) {
                let a = s[dir] ?? [:], b = d[dir] ?? [:]
                for k in Set(a.keys).union(b.keys) { n += abs((a[k] ?? 0) - (b[k] ?? 0)) }
            }
            return n
        }
        /// Waits up to `limit` seconds for the Maildir to match the server; the last difference.
        func settle(_ limit: Double) -> Int {
            let deadline = monotonicNs() + UInt64(limit * 1e9)
            var d = difference()
            while d > 0 && monotonicNs() < deadline {
                usleep(500_000)
                d = difference()
            }
            return d
        }

        let r = try measure(args, name: "wdsync-soak") { pid in
            guard settle(600) == 0 else { problem = "the first sync never matched the server"; return }
            usleep(2_000_000)
            start = processFootprint(pid)
            let t0 = monotonicNs()
            var nextDrop = t0 + 60_000_000_000, nextReport = t0 + 60_000_000_000
            var serial = 0
            while monotonicNs() - t0 < UInt64(seconds * 1e9) {
                if cleanup.isInterrupted { return }
                let action = soakAction(account: account, folders: folders, serial: &serial, rng: &rng)
                counts[action, default: 0] += 1
                let now = monotonicNs()
                if now >= nextDrop {
                    server.webSocketAction(.drop)
                    drops += 1
                    nextDrop += 60_000_000_000
                }
                if now >= nextReport, let f = processFootprint(pid) {
                    peakRss = max(peakRss, f.rssMiB); peakFds = max(peakFds, f.fds)
                    eprint(String(format: "    %3.0f min: RSS %.1f MiB, %d fds, %d actions\n",
                                  Double(now - t0) / 6e10, f.rssMiB, f.fds, counts.values.reduce(0, +)))
                    nextReport += 60_000_000_000
                }
                usleep(200_000)
            }
            let t1 = monotonicNs()
            divergence = settle(300)
            settleSeconds = Double(monotonicNs() - t1) / 1e9
            end = processFootprint(pid)
            kill(pid, SIGTERM)
        }

        let actions = counts.values.reduce(0, +)
        for (subject, f) in [("start (after the first sync)", start), ("end (churn stopped, settled)", end)] {
            var row = Row("soak", subject)
            row.peakRssMiB = f?.rssMiB
            row.note = f.map { "\($0.fds) open fds" }
            if f == nil { row.status = "not measured (\(problem ?? r.statusText))" }
            rows.append(row)
        }
        var churn = Row("soak", "churn")
        churn.messages = actions
        churn.note = counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            + "; WebSocket cut \(drops)×; settled in \(String(format: "%.1f", settleSeconds)) s; peak RSS \(String(format: "%.1f", max(peakRss, end?.rssMiB ?? 0))) MiB, peak fds \(max(peakFds, end?.fds ?? 0))"
        if let problem { churn.status = "failed (\(problem))" }
        rows.append(churn)
        if let s = start, let e = end {
            let flat = e.rssMiB <= s.rssMiB * 1.10 + 5 && e.fds <= s.fds + 2
            targets.append(Target(name: "soak footprint", goal: "RSS and open fds flat (RSS +10 % + 5 MiB at most, fds +2)",
                                  measured: String(format: "RSS %.1f → %.1f MiB, fds %d → %d", s.rssMiB, e.rssMiB, s.fds, e.fds), met: flat))
        }
        targets.append(Target(name: "soak divergence", goal: "0 messages differ from the server at the end",
                              measured: divergence.map { "\($0)" } ?? "not measured", met: divergence.map { $0 == 0 }))
    }
}

private func soakKey(_ bytes: [UInt8], seen: Bool, flagged: Bool) -> String {
    var h = Hasher()
    h.combine(bytes)
    return "\(h.finalize())|\(seen ? "S" : "")\(flagged ? "F" : "")"
}

/// One random change, on the server or in the Maildir; returns its name for the tally. Local
/// changes are made as mutt makes them (rename for flags and moves, unlink for deletes); a file
/// the daemon renamed or removed meanwhile is simply skipped.
private func soakAction(account: SimAccount, folders: [(id: String, dir: String)], serial: inout Int,
                        rng: inout SplitMix64) -> String {
    let f = folders[Int.random(in: 0..<folders.count, using: &rng)]
    let other = folders[Int.random(in: 0..<folders.count, using: &rng)]
    let roll = Int.random(in: 0..<100, using: &rng)
    if roll < 30 {
        serial += 1
        let raw = Array("From: soak@example.com\r\nTo: demo@example.com\r\nSubject: soak \(serial)\r\nMessage-ID: <soak-\(serial)@bench>\r\n\r\nchurn \(serial)\r\n".utf8)
        return (try? account.deliver(raw, to: f.id)) != nil ? "deliver" : "deliver failed"
    }
    if roll < 70 {
        let messages = account.messages(mailboxId: f.id)
        guard let m = messages.randomElement(using: &rng) else { return "skip" }
        switch roll {
        case ..<50:
            let seen = Bool.random(using: &rng)
            _ = try? account.setFlags(mailboxId: f.id, uid: m.uid, seen: seen ? !m.seen : nil, flagged: seen ? nil : !m.flagged)
            return "server flag"
        case ..<60:
            guard other.id != f.id else { return "skip" }
            _ = try? account.move(mailboxId: f.id, uid: m.uid, to: other.id)
            return "server move"
        default:
            _ = try? account.expunge(mailboxId: f.id, uid: m.uid)
            return "server expunge"
        }
    }
    let sub = Bool.random(using: &rng) ? "cur" : "new"
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: f.dir + "/" + sub),
          let name = names.filter({ !$0.hasPrefix(".") }).randomElement(using: &rng) else { return "skip" }
    let from = f.dir + "/" + sub + "/" + name
    let unique = name.split(separator: ":", maxSplits: 1).first.map(String.init) ?? name
    switch roll {
    case ..<85:
        var flags = MessageFlags(fileName: name)
        let flag: MessageFlags = Bool.random(using: &rng) ? .seen : .flagged
        if flags.contains(flag) { flags.remove(flag) } else { flags.insert(flag) }
        return rename(from, f.dir + "/cur/" + unique + ":2," + flags.letters) == 0 ? "local flag" : "skip"
    case ..<93:
        guard other.id != f.id else { return "skip" }
        return rename(from, other.dir + "/" + sub + "/" + name) == 0 ? "local move" : "skip"
    default:
        return unlink(from) == 0 ? "local delete" : "skip"
    }
}
