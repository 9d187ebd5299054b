#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Testing
import WildDuckSim

/// kill -9 at random moments while `wdsync --once` pushes hundreds of local changes and dozens
/// of uploads, then re-runs until one completes: every upload is on the server exactly once,
/// every change is applied, and a final run writes nothing in either direction.
///
/// The kill points are random (seeded; the seed is printed, and `WDSYNC_KILL_SEED=N` repeats
/// a run): a run is killed once the server has answered a random number of its requests, plus
/// a random fraction of a millisecond. Which step that lands in depends on the machine's speed,
/// so nothing asserted depends on it: the outcome must be the same for any kill point.
@Suite(.serialized) struct TwoWayKillTests {
    /// What the test did to one message that was on the server before.
    struct Intent {
        var path: String          // mailbox it must be in afterwards (nil: deleted)
        var deleted: Bool
        var seen: Bool
        var flagged: Bool
        var trashed: Bool
    }

    @Test func killedRunsPushEveryChangeExactlyOnce() throws {
        let seed = ProcessInfo.processInfo.environment["WDSYNC_KILL_SEED"].flatMap { UInt64($0) }
            ?? UInt64.random(in: 1...999_999)
        print("kill -9 test: seed \(seed) (WDSYNC_KILL_SEED=\(seed) repeats this run)")
        var rng = SplitMix64(seed: seed)
        let h = try Harness()
        try h.seedStandard(generated: 240)
        try h.sync()

        // Every message on the server, by content (raw bytes do not change with a move).
        let paths = ["INBOX", "Work", "Work/Projects", "Sent Mail"]
        var intents: [String: [Intent]] = [:]       // digest → what each copy must become
        var changes = 0
        // The files as the first sync left them (each message is changed once, so this stays true).
        let files = Dictionary(h.snapshot().keys.compactMap { rel -> (String, String)? in
            guard let r = rel.range(of: ".wd"), let end = rel[r.upperBound...].firstIndex(of: ".") else { return nil }
            return (String(rel[r.upperBound..<end]), rel)
        }, uniquingKeysWith: { a, _ in a })
        func file(_ mailbox: String, _ uid: Int) -> String? { files["\(mailbox)_\(uid)"] }
        for path in paths {
            let id = try #require(h.account.mailboxId(path: path))
            var list = h.account.messages(mailboxId: id).shuffled(using: &rng)
            // Fewer than 10 deletes per mailbox; with the T flags below, the mass-delete breaker
            // (which counts both over the day) would hold them, and it is not what this test is
            // about: its runs allow mass deletes.
            for m in list.prefix(8) {
                try FileManager.default.removeItem(atPath: h.maildir + "/" + (try #require(file(id, m.uid))))
                intents[Harness.digest(m.raw), default: []].append(Intent(path: path, deleted: true, seen: m.seen, flagged: m.flagged, trashed: m.deleted))
                changes += 1
            }
            list.removeFirst(min(8, list.count))
            // Moves to another of the folders, half of them read on the way (mutt's save).
            for (i, m) in list.prefix(14).enumerated() {
                let target = paths.filter { $0 != path }[Int(rng.next() % 3)]
                let seen = i % 2 == 0 ? true : m.seen
                try Self.place(h, try #require(file(id, m.uid)), in: target,
                               flags: Self.letters(m, seen: seen, flagged: m.flagged, trashed: m.deleted))
                intents[Harness.digest(m.raw), default: []].append(Intent(path: target, deleted: false, seen: seen, flagged: m.flagged, trashed: m.deleted))
                changes += 1
            }
            list.removeFirst(min(14, list.count))
            // Flag changes: each message gets a different combination of S, F and T.
            for m in list.prefix(55) {
                var s = m.seen, f = m.flagged, t = m.deleted
                repeat {
                    let r = rng.next()
                    if r & 1 != 0 { s.toggle() }
                    if r & 2 != 0 { f.toggle() }
                    if r & 4 != 0 && r & 8 != 0 { t.toggle() }
                } while s == m.seen && f == m.flagged && t == m.deleted
                try Self.place(h, try #require(file(id, m.uid)), in: path,
                               flags: Self.letters(m, seen: s, flagged: f, trashed: t))
                intents[Harness.digest(m.raw), default: []].append(Intent(path: path, deleted: false, seen: s, flagged: f, trashed: t))
                changes += 1
            }
            for m in list.dropFirst(55) {
                intents[Harness.digest(m.raw), default: []].append(Intent(path: path, deleted: false, seen: m.seen, flagged: m.flagged, trashed: m.deleted))
            }
        }
        // Messages of the other mailboxes stay as they are.
        for mailbox in h.account.mailboxes() where !paths.contains(mailbox.path) {
            for m in h.account.messages(mailboxId: mailbox.id) {
                intents[Harness.digest(m.raw), default: []].append(Intent(path: mailbox.path, deleted: false, seen: m.seen, flagged: m.flagged, trashed: m.deleted))
            }
        }
        // New files, as mutt's `record` and `postpone` write them; some without a Message-ID.
        var uploads: [(subject: String, path: String, flags: String)] = []
        for i in 0..<36 {
            let path = (paths + ["Drafts"])[i % 5]
            let flags = path == "Drafts" ? "DS" : ["S", "", "FS", "F"][Int(rng.next() % 4)]
            let subject = "kill-test upload \(i)"
            let id = i % 6 == 5 ? "" : "Message-ID: <kill-\(seed)-\(i)@example.org>\n"
            let text = "From: Me <me@example.org>\nTo: You <you@example.org>\nSubject: \(subject)\n\(id)Date: Mon, 16 Jun 2025 12:00:00 +0000\n\nUpload \(i).\n"
            let mtime = 1_750_000_000 + i * 7
            let rel = "\(path)/\(flags.contains("S") ? "cur" : "new")/\(mtime).M\(i)P4242.testhost,S=\(text.utf8.count):2,\(flags)"
            try Data(text.utf8).write(to: URL(fileURLWithPath: h.maildir + "/" + rel))
            var times = [timespec(tv_sec: mtime, tv_nsec: 0), timespec(tv_sec: mtime, tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, h.maildir + "/" + rel, &times, 0) == 0)
            uploads.append((subject, path, flags))
        }
        #expect(changes >= 300)

        // Runs killed at random points — after a random number of the server's answers, or
        // after a random time — until one finishes on its own; then runs until one completes.
        var kills = 0
        for round in 0..<10 {
            h.server.resetStats()
            let (p, _, _) = h.process(h.baseArguments + ["--allow-mass-delete"])
            try p.run()
            let threshold = 1 + Int(rng.next() % 30)
            let delay = useconds_t(rng.next() % (round % 2 == 0 ? 900 : 200_000))
            if round % 2 == 0 {
                while p.isRunning && h.server.stats().totalRequests < threshold { usleep(200) }
            }
            usleep(delay)
            let killed = p.isRunning
            if killed {
                kill(p.processIdentifier, SIGKILL)
                kills += 1
            }
            p.waitUntilExit()
            print("kill -9 test: run \(round) \(killed ? "killed" : "finished") after \(h.server.stats().totalRequests) requests")
            if !killed && p.terminationStatus == 0 { break }
        }
        #expect(kills > 0)
        var finished = false
        for _ in 0..<4 where !finished {
            finished = try h.run(extra: ["--allow-mass-delete"]).status == 0
        }
        #expect(finished, "no run completed after the kills")

        // Every upload exactly once, in its mailbox, with its flags.
        var all: [(path: String, message: SimMessage)] = []
        for mailbox in h.account.mailboxes() {
            for m in h.account.messages(mailboxId: mailbox.id) { all.append((mailbox.path, m)) }
        }
        for upload in uploads {
            let found = all.filter { $0.message.subject == upload.subject }
            #expect(found.count == 1, "\(upload.subject) is on the server \(found.count) times (seed \(seed))")
            if let m = found.first {
                #expect(m.path == upload.path, "\(upload.subject) is in \(m.path), not \(upload.path)")
                #expect(m.message.seen == upload.flags.contains("S") && m.message.flagged == upload.flags.contains("F")
                        && m.message.draft == upload.flags.contains("D"), "\(upload.subject): wrong flags")
            }
        }
        // Every other message where and as intended; deleted ones gone.
        var remaining = intents
        for (path, m) in all where !uploads.contains(where: { $0.subject == m.subject }) {
            let digest = Harness.digest(m.raw)
            guard let index = remaining[digest]?.firstIndex(where: {
                !$0.deleted && $0.path == path && $0.seen == m.seen && $0.flagged == m.flagged && $0.trashed == m.deleted
            }) else {
                Issue.record("unexpected on the server: \(path) uid \(m.uid) \(m.messageId) seen \(m.seen) flagged \(m.flagged) deleted \(m.deleted) (seed \(seed))")
                continue
            }
            remaining[digest]?.remove(at: index)
        }
        let missing = remaining.values.flatMap { $0 }.filter { !$0.deleted }
        #expect(missing.isEmpty, "not on the server as intended: \(missing) (seed \(seed))")
        try TwoWayTests.expectQuiet(h)
        // The Maildir holds each server message once: the uploads as the files mutt wrote (the
        // server stores a rebuilt copy), every other message byte for byte with its flags.
        for mailbox in h.account.mailboxes() {
            var local: [String: Int] = [:]   // "sub letters digest" → count
            var texts: [String] = []
            for sub in ["cur", "new"] {
                let dir = h.maildir + "/" + mailbox.path + "/" + sub
                for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
                    guard let data = FileManager.default.contents(atPath: dir + "/" + name) else { continue }
                    let letters = name.split(separator: ":", maxSplits: 1).dropFirst().first.map { String($0.dropFirst(2)) } ?? ""
                    local["\(sub) \(letters) \(Harness.digest(Array(data)))", default: 0] += 1
                    texts.append(String(decoding: data, as: UTF8.self))
                }
            }
            let server = h.account.messages(mailboxId: mailbox.id)
            #expect(texts.count == server.count, "\(mailbox.path): \(texts.count) files for \(server.count) messages (seed \(seed))")
            for m in server {
                if uploads.contains(where: { $0.subject == m.subject }) {
                    #expect(texts.filter { $0.contains("Subject: \(m.subject)\n") }.count == 1, "\(m.subject) is not on disk once")
                } else {
                    let key = "\(m.seen ? "cur" : "new") \(Harness.letters(m)) \(Harness.digest(m.raw))"
                    #expect((local[key] ?? 0) > 0, "\(mailbox.path) uid \(m.uid) has no file \(key) (seed \(seed))")
                    local[key, default: 0] -= 1
                }
            }
        }
    }

    /// Renames a message file into `folder` with `flags`: into cur/ when seen, new/ when not.
    static func place(_ h: Harness, _ rel: String, in folder: String, flags: String) throws {
        let name = (rel as NSString).lastPathComponent
        let unique = name.split(separator: ":", maxSplits: 1).first.map(String.init) ?? name
        let target = "\(folder)/\(flags.contains("S") ? "cur" : "new")/\(unique):2,\(flags)"
        #expect(Glibc.rename(h.maildir + "/" + rel, h.maildir + "/" + target) == 0, "\(rel) → \(target)")
    }

    static func letters(_ m: SimMessage, seen: Bool, flagged: Bool, trashed: Bool) -> String {
        var s = ""
        if m.draft { s += "D" }
        if flagged { s += "F" }
        if m.forwarded { s += "P" }
        if m.answered && !m.forwarded { s += "R" }
        if seen { s += "S" }
        if trashed { s += "T" }
        return s
    }
}
