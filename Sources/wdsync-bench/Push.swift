// Two-way sync: what a local change costs (`--only push`).
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import WildDuckSim

extension Bench {
    func push(wdsync: String) throws {
        eprint("two-way push\n")
        guard findExecutable(wdsync) != nil else {
            var r = Row("push", "wdsync"); r.status = "not built (\(wdsync))"; rows.append(r)
            return
        }
        try pushLive(wdsync: wdsync)
        try pushBig(wdsync: wdsync)
    }

    /// Message files of a folder (relative to the root: "INBOX/cur/NAME").
    func messageFiles(_ maildir: String, folder: String) -> [String] {
        ["cur", "new"].flatMap { sub in
            ((try? FileManager.default.contentsOfDirectory(atPath: "\(maildir)/\(folder)/\(sub)")) ?? [])
                .filter { !$0.hasPrefix(".") }.map { "\(folder)/\(sub)/\($0)" }
        }
    }

    /// Renames a message file as mutt does when the user reads (S, into cur/) or un-reads it
    /// (into new/), or flags it (F); returns the new relative path.
    func toggle(_ maildir: String, _ rel: String, flag: Character) -> String? {
        let parts = rel.split(separator: "/")
        guard parts.count >= 3, let name = parts.last else { return nil }
        let folder = parts.dropLast(2).joined(separator: "/")
        let split = name.split(separator: ":", maxSplits: 1)
        let unique = String(split[0])
        var letters = Set(split.count > 1 ? String(split[1].dropFirst(2)) : "")
        if letters.contains(flag) { letters.remove(flag) } else { letters.insert(flag) }
        let sub = flag == "S" ? (letters.contains("S") ? "cur" : "new") : String(parts[parts.count - 2])
        let target = "\(folder)/\(sub)/\(unique):2,\(String(letters.sorted()))"
        return rename("\(maildir)/\(rel)", "\(maildir)/\(target)") == 0 ? target : nil
    }

    /// The uid in the name of a file wdsync wrote (`<idate>.wd<mailbox>_<uid>.<host>:2,…`).
    func uid(ofFile file: String) -> Int? {
        guard let r = file.range(of: "_") else { return nil }
        return Int(file[r.upperBound...].prefix { $0.isNumber })
    }

    /// Live push latency: a rename in the Maildir (mutt reading or un-reading a message) → the
    /// server's message has the file's \Seen (woken by the simulator's change signal), one at a
    /// time, with the daemon on the WebSocket. Not "the mailbox's modifyIndex moved": WildDuck
    /// moves it twice for one REST flag update (the request, then its journal entries), and a
    /// change taken as done at the first would let the next rename in before it is sent.
    func pushLive(wdsync: String) throws {
        let changes = 200
        eprint("  live push latency (\(changes) renames)\n")
        let (account, ids, server, maildir, db) = try simulated("push-live", messages: 200, mailboxes: 4, seed: o.seed + 11)
        defer { server.stop() }
        let args = try wdsyncArgs(wdsync, server: server, maildir: maildir, db: db, once: false, log: "-v")
        guard let inbox = account.mailboxId(path: "INBOX") ?? ids.first else { throw BenchError("no INBOX") }
        func seenOnServer(_ uid: Int) -> Bool? { account.messages(mailboxId: inbox).first { $0.uid == uid }?.seen }

        var latencies: [Double] = []
        var problem: String?
        let log = "\(work)/logs/wdsync-push-live.err"
        let r = try measure(args, name: "wdsync-push-live") { pid in
            let deadline = monotonicNs() + 60_000_000_000
            while monotonicNs() < deadline {
                if let s = try? String(contentsOfFile: log, encoding: .utf8), s.contains("connected (WebSocket)") { break }
                usleep(20_000)
            }
            usleep(300_000)   // let the post-connect reconcile finish
            guard let signal = account.watchChanges() else { problem = "cannot watch the simulator"; return }
            defer { account.unwatchChanges(signal) }
            var files = messageFiles(maildir, folder: "INBOX")
            guard !files.isEmpty else { problem = "no files in INBOX"; return }
            var buffer = [UInt8](repeating: 0, count: 256)
            for i in 0..<changes {
                while read(signal, &buffer, buffer.count) > 0 {}
                let k = i % files.count
                guard let uid = uid(ofFile: files[k]) else { problem = "\(files[k]) is not wdsync's"; return }
                let t0 = monotonicNs()
                guard let renamed = toggle(maildir, files[k], flag: "S") else { problem = "rename of \(files[k]) failed"; return }
                files[k] = renamed
                let seen = renamed.contains("/cur/")
                var done = false
                while !done && monotonicNs() - t0 < 5_000_000_000 {
                    var p = pollfd(fd: signal, events: Int16(POLLIN), revents: 0)
                    guard poll(&p, 1, 100) > 0 else { continue }
                    while read(signal, &buffer, buffer.count) > 0 {}
                    done = seenOnServer(uid) == seen
                }
                guard done else { problem = "change \(i) never reached the server"; return }
                latencies.append(Double(monotonicNs() - t0) / 1e6)
            }
            kill(pid, SIGTERM)
        }
        var row = Row("push", "live: rename → server")
        row.messages = latencies.count
        row.peakRssMiB = r.maxrssMiB
        let sorted = latencies.sorted()
        func pct(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        if latencies.count == changes {
            row.p50Ms = pct(0.5); row.p95Ms = pct(0.95); row.p99Ms = pct(0.99)
            // The server must show what the files say.
            let seen = Dictionary(account.messages(mailboxId: inbox).map { ($0.uid, $0.seen) }, uniquingKeysWith: { a, _ in a })
            var wrong = 0
            for file in messageFiles(maildir, folder: "INBOX") {
                guard let uid = uid(ofFile: file) else { continue }
                let letters = file.split(separator: ":").last.map { String($0.dropFirst(2)) } ?? ""
                if seen[uid] != letters.contains("S") { wrong += 1 }
            }
            if wrong > 0 { row.status = "wrong"; row.note = "\(wrong) messages differ from their files" }
            targets.append(Target(name: "live push", goal: "p50 < 10 ms, p99 < 50 ms over \(changes) changes",
                                  measured: String(format: "p50 %.2f ms, p99 %.2f ms", pct(0.5), pct(0.99)),
                                  met: wrong == 0 ? pct(0.5) < 10 && pct(0.99) < 50 : nil))
        } else {
            row.status = "failed (\(problem ?? r.statusText))"
            row.note = lastLine("wdsync-push-live")
            targets.append(Target(name: "live push", goal: "p50 < 10 ms, p99 < 50 ms", measured: "not measured", met: nil))
        }
        rows.append(row)
    }

    /// On the big account: 1,000 local flag changes in one `--once` (requests per change: bulk
    /// PUTs), then a no-op `--once` with two-way sync on (the scan stats two directories per folder).
    func pushBig(wdsync: String) throws {
        let n = o.big, flagChanges = 1000
        let suffix = n == 100_000 ? "" : " (on \(n), not 100k)"
        eprint("  big account for the push: \(n) messages in 20 mailboxes\n")
        let (account, ids, server, maildir, db) = try simulated("push-big", messages: n, mailboxes: 20, seed: o.seed &+ 300)
        defer { server.stop() }
        let args = try wdsyncArgs(wdsync, server: server, maildir: maildir, db: db, once: true)
        eprint("  initial sync\n")
        let first = try measure(args, name: "wdsync-push-initial")
        guard first.ok else {
            var r = Row("push", "wdsync --once"); r.status = "initial sync failed (\(first.statusText))"; rows.append(r)
            return
        }

        // 1,000 flag changes spread over the mailboxes: half read or un-read (S, moving the file
        // between new/ and cur/), half flagged or unflagged (F).
        eprint("  \(flagChanges) local flag changes, --once\n")
        let paths = Dictionary(uniqueKeysWithValues: account.mailboxes().map { ($0.id, $0.path) })
        var renamed = 0
        for (i, id) in ids.enumerated() {
            guard let path = paths[id] else { continue }
            let files = messageFiles(maildir, folder: path).sorted()
            let per = flagChanges / ids.count + (i < flagChanges % ids.count ? 1 : 0)
            for (k, file) in files.prefix(per).enumerated() where toggle(maildir, file, flag: k % 2 == 0 ? "S" : "F") != nil {
                renamed += 1
            }
        }
        let once = try wdsyncArgs(wdsync, server: server, maildir: maildir, db: db, once: true, log: nil)
        let (r, d, row0) = try incremental(once, name: "wdsync-push-flags", benchmark: "push", messages: renamed,
                                           server: server, maildir: maildir)
        var row = row0
        row.subject = "\(renamed) local flag changes, --once"
        // "pushed N flag changes, … in M requests"
        let log = (try? String(contentsOfFile: "\(work)/logs/wdsync-push-flags.err", encoding: .utf8)) ?? ""
        let line = log.split(separator: "\n").first { $0.contains("pushed ") && $0.contains(" requests") }.map(String.init) ?? ""
        let words = line.split(separator: " ")
        let pushed = words.firstIndex(of: "pushed").flatMap { words.indices.contains($0 + 1) ? Int(words[$0 + 1]) : nil }
        let requests = words.firstIndex(of: "in").flatMap { words.indices.contains($0 + 1) ? Int(words[$0 + 1]) : nil }
        if let pushed, let requests, pushed > 0 {
            row.note = String(format: "pushed %d in %d requests (%.3f per change); %d requests in all; touched %@",
                              pushed, requests, Double(requests) / Double(pushed), row.requests ?? 0, d.text)
            targets.append(Target(name: "push \(flagChanges) flag changes", goal: "requests per change well under 0.1",
                                  measured: String(format: "%.3f (%d requests for %d changes)", Double(requests) / Double(pushed), requests, pushed),
                                  met: pushed == renamed ? Double(requests) / Double(pushed) < 0.1 : nil))
            if pushed != renamed { row.status = "incomplete"; row.note = "pushed \(pushed) of \(renamed); " + (row.note ?? "") }
        } else {
            row.status = r.ok ? "no push summary" : "failed (\(r.statusText))"
            row.note = lastLine("wdsync-push-flags")
        }
        rows.append(row)

        eprint("  no-op --once (two-way)\n")
        let (nr, nd, noop0) = try incremental(args, name: "wdsync-push-noop", benchmark: "push", messages: n,
                                              server: server, maildir: maildir)
        var noop = noop0
        noop.subject = "no-op --once, two-way"
        noop.note = nd.total > 0 ? "touched " + nd.text : nil
        if !nr.ok { noop.note = lastLine("wdsync-push-noop") }
        rows.append(noop)
        targets.append(Target(name: "no-op --once, two-way", goal: "< 0.5 s on 100k",
                              measured: String(format: "%.3f s, %d touched", nr.wall, nd.total) + suffix,
                              met: nr.ok ? nr.wall < 0.5 && nd.total == 0 : nil))
    }
}
