import Foundation
#if canImport(Glibc)
import Glibc
#endif
import WildDuckSim

/// Watches Maildir `new/` and `cur/` directories for files arriving (created or renamed in) or,
/// with `departures`, leaving (unlinked or renamed away).
final class ArrivalWatch {
    let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 64 * 1024)

    init(directories: [String], departures: Bool = false) throws {
        fd = inotify_init1(Int32(IN_CLOEXEC))
        guard fd >= 0 else { throw BenchError("inotify_init1 failed") }
        let mask = departures ? UInt32(IN_DELETE | IN_MOVED_FROM) : UInt32(IN_CREATE | IN_MOVED_TO)
        for d in directories where inotify_add_watch(fd, d, mask) < 0 {
            throw BenchError("cannot watch \(d)")
        }
    }

    deinit { close(fd) }

    /// Waits until a file whose name contains `marker` arrives; returns false on timeout.
    func wait(for marker: String, timeoutMs: Int32) -> Bool {
        let deadline = monotonicNs() + UInt64(timeoutMs) * 1_000_000
        while monotonicNs() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = Int32((deadline - min(deadline, monotonicNs())) / 1_000_000) + 1
            guard poll(&p, 1, left) > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { continue }
            var offset = 0
            while offset + 16 <= n {
                let len = buffer.withUnsafeBytes { Int($0.load(fromByteOffset: offset + 12, as: UInt32.self)) }
                let nameBytes = buffer[(offset + 16)..<min(n, offset + 16 + len)].prefix { $0 != 0 }
                if String(decoding: nameBytes, as: UTF8.self).contains(marker) { return true }
                offset += 16 + len
            }
        }
        return false
    }
}

extension Bench {
    /// 4. Live latency: a simulator mutation → the file in place in the Maildir (or, for an
    /// expunge, gone from it), one event at a time, for new messages, flag changes and
    /// expunges, with the daemon on the WebSocket.
    func live(wdsync: String) throws {
        let events = o.liveEvents
        eprint("  live latency (\(events) new messages, \(events) flag changes, \(events) expunges)\n")
        let (account, ids, server, maildir, db) = try simulated("live", messages: 200, mailboxes: 4, seed: o.seed + 7)
        defer { server.stop() }
        let args = try wdsyncArgs(wdsync, server: server, maildir: maildir, db: db, once: false, log: "-v")
        guard let inbox = account.mailboxId(path: "INBOX") ?? ids.first else { throw BenchError("no INBOX") }

        var newLatencies: [Double] = [], flagLatencies: [Double] = [], expungeLatencies: [Double] = []
        var problem: String?
        let log = "\(work)/logs/wdsync-live.err"
        let r = try measure(args, name: "wdsync-live") { pid in
            let deadline = monotonicNs() + 60_000_000_000
            while monotonicNs() < deadline {
                if let s = try? String(contentsOfFile: log, encoding: .utf8), s.contains("connected (WebSocket)") { break }
                usleep(20_000)
            }
            usleep(300_000)   // let the post-connect reconcile finish
            let folder = maildir + "/INBOX"
            guard let watch = try? ArrivalWatch(directories: [folder + "/new", folder + "/cur"]) else {
                problem = "cannot watch \(folder)"; return
            }
            // New messages.
            for i in 0..<events {
                let raw = Array("From: bench@example.com\r\nSubject: live \(i)\r\nMessage-ID: <live-\(i)-\(o.seed)@bench>\r\n\r\nlatency probe \(i)\r\n".utf8)
                let t0 = monotonicNs()
                guard let uid = try? account.deliver(raw, to: inbox) else { problem = "deliver failed"; return }
                guard watch.wait(for: "\(inbox)_\(uid).", timeoutMs: 5000) else { problem = "new message \(uid) never arrived"; return }
                newLatencies.append(Double(monotonicNs() - t0) / 1e6)
            }
            // Flag changes: toggle \Seen, which moves the file between new/ and cur/.
            let messages = account.messages(mailboxId: inbox)
            for i in 0..<events {
                let m = messages[i % messages.count]
                let seen = !(account.messages(mailboxId: inbox).first { $0.uid == m.uid }?.seen ?? false)
                let t0 = monotonicNs()
                guard (try? account.setFlags(mailboxId: inbox, uid: m.uid, seen: seen)) != nil else { problem = "setFlags failed"; return }
                guard watch.wait(for: "\(inbox)_\(m.uid).", timeoutMs: 5000) else { problem = "flag change of \(m.uid) never arrived"; return }
                flagLatencies.append(Double(monotonicNs() - t0) / 1e6)
            }
            // Expunges: the file leaves new/ or cur/ (unlinked, or renamed out of readers' view).
            guard let departures = try? ArrivalWatch(directories: [folder + "/new", folder + "/cur"], departures: true) else {
                problem = "cannot watch \(folder)"; return
            }
            for m in account.messages(mailboxId: inbox).prefix(events) {
                let t0 = monotonicNs()
                guard (try? account.expunge(mailboxId: inbox, uid: m.uid)) != nil else { problem = "expunge failed"; return }
                guard departures.wait(for: "\(inbox)_\(m.uid).", timeoutMs: 10_000) else { problem = "expunge of \(m.uid) never arrived"; return }
                expungeLatencies.append(Double(monotonicNs() - t0) / 1e6)
            }
            kill(pid, SIGTERM)
        }
        for (subject, values) in [("new message → file", newLatencies), ("flag change → rename", flagLatencies),
                                  ("expunge → file gone", expungeLatencies)] {
            var row = Row("live", subject)
            row.messages = values.count
            if values.count == events {
                let sorted = values.sorted()
                func pct(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
                row.p50Ms = pct(0.50); row.p95Ms = pct(0.95); row.p99Ms = pct(0.99)
            } else {
                row.status = "failed (\(problem ?? r.statusText))"
            }
            row.peakRssMiB = r.maxrssMiB
            rows.append(row)
        }
        let p = { (v: [Double], q: Double) -> Double? in
            v.count == events ? v.sorted()[min(v.count - 1, Int(Double(v.count) * q))] : nil
        }
        if let n50 = p(newLatencies, 0.5), let n99 = p(newLatencies, 0.99), let f99 = p(flagLatencies, 0.99) {
            targets.append(Target(name: "live new message", goal: "p50 < 5 ms, p99 < 20 ms",
                                  measured: String(format: "p50 %.2f ms, p99 %.2f ms", n50, n99), met: n50 < 5 && n99 < 20))
            targets.append(Target(name: "live flag change", goal: "p99 < 10 ms", measured: String(format: "p99 %.2f ms", f99), met: f99 < 10))
            if let e99 = p(expungeLatencies, 0.99) {
                targets.append(Target(name: "live expunge", goal: "p99 < 20 ms", measured: String(format: "p99 %.2f ms", e99), met: e99 < 20))
            }
        } else {
            targets.append(Target(name: "live latency", goal: "p50 < 5 ms, p99 < 20 ms", measured: "not measured", met: nil))
        }
    }
}
