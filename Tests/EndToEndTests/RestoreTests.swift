#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Testing
@testable import WildDuckSim

/// `wdsync --restore`: a backup back on a server (another simulator stands for the new server
/// or the wiped account), checked on the server and by syncing the restored account again.
@Suite struct RestoreTests {
    /// `--restore` of `backup` (its Maildir and cache) onto `target`'s account.
    static func restoreArguments(_ backup: Harness, to target: Harness, db: String? = nil) -> [String] {
        ["--restore", "--server", target.server.baseURL, "--user", "demo", "--password-file", target.passwordFile,
         "--maildir", backup.maildir, "--db", db ?? backup.db]
    }

    /// Every folder (directory holding cur/) under `root`: "sub letters digest" per message file,
    /// the letters without R and P (the API cannot set \Answered and $Forwarded).
    static func contents(_ root: String) -> [String: [String]] {
        var out: [String: [String]] = [:]
        guard let e = FileManager.default.enumerator(atPath: root) else { return out }
        while let rel = e.nextObject() as? String {
            let parts = rel.split(separator: "/").map(String.init)
            guard parts.count >= 2, ["cur", "new"].contains(parts[parts.count - 2]),
                  let data = FileManager.default.contents(atPath: root + "/" + rel) else { continue }
            let folder = parts.dropLast(2).joined(separator: "/")
            let name = parts[parts.count - 1]
            let letters = String((name.split(separator: ",", maxSplits: 1).dropFirst().first ?? "").filter { $0 != "R" && $0 != "P" })
            out[folder, default: []].append("\(parts[parts.count - 2]) \(letters) \(digest(Array(data)))")
        }
        return out.mapValues { $0.sorted() }
    }

    /// A message's bytes as the server's rebuild leaves them comparable: WildDuck stores a
    /// message with CRLF line ends, so a file with bare LFs comes back with CRLFs.
    static func digest(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        for b in bytes where b != 0x0D { out.append(b) }
        while out.last == 0x0A { out.removeLast() }
        return Harness.digest(out)
    }

    /// What differs between two server states: "path: extra […], missing […]".
    static func difference(_ actual: [String: [String]], _ expected: [String: [String]]) -> String {
        Set(actual.keys).union(expected.keys).sorted().compactMap { path -> String? in
            var a = actual[path] ?? [], e = expected[path] ?? []
            for item in Array(a) { if let i = e.firstIndex(of: item), let j = a.firstIndex(of: item) { e.remove(at: i); a.remove(at: j) } }
            return a.isEmpty && e.isEmpty ? nil : "\(path): extra \(a), missing \(e)"
        }.joined(separator: "\n")
    }

    static func sha(_ path: String) -> String { Harness.digest(Array(FileManager.default.contents(atPath: path) ?? Data())) }

    /// Messages on the simulator, by mailbox path: "digest seen flagged draft deleted idate".
    static func serverMessages(_ h: Harness) -> [String: [String]] {
        var out: [String: [String]] = [:]
        for mailbox in h.account.mailboxes() {
            // Empty messages cannot be uploaded (WildDuck refuses them): the restore lists them.
            out[mailbox.path] = h.account.messages(mailboxId: mailbox.id).filter { !$0.raw.isEmpty }.map {
                "\(digest($0.raw)) \($0.seen) \($0.flagged) \($0.draft) \($0.deleted) \(Int($0.idate.timeIntervalSince1970))"
            }.sorted()
        }
        return out
    }

    @Test func restoreIntoAnEmptyAccountThenSyncGivesTheBackupAgain() throws {
        let backup = try Harness()
        try backup.seedStandard(generated: 90)
        // Mailbox attributes to carry: hidden, unsubscribed, retention.
        let hidden = try backup.account.createMailbox(path: "Old", specialUse: nil, hidden: true, retention: nil, encryptMessages: false)
        try backup.account.deliver(Array("From: a@example.org\r\nSubject: kept\r\nMessage-ID: <old-1@example.org>\r\n\r\nold\r\n".utf8), to: hidden,
                                   seen: true, idate: Date(timeIntervalSince1970: 1_500_000_000))
        let quiet = try backup.account.createMailbox(path: "Lists", specialUse: nil, hidden: false, retention: 7 * 24 * 3600 * 1000, encryptMessages: false)
        try backup.account.updateMailbox(id: quiet, subscribed: false)
        // Two messages without a Message-ID, and two identical ones: each must arrive once.
        let inbox = try #require(backup.account.mailboxId(path: "INBOX"))
        for subject in ["no id one", "no id two"] {
            try backup.account.deliver(Array("From: b@example.org\r\nSubject: \(subject)\r\n\r\nbody\r\n".utf8), to: inbox,
                                       flagged: true, idate: Date(timeIntervalSince1970: 1_600_000_000))
        }
        let twin = Array("From: c@example.org\r\nSubject: twin\r\nMessage-ID: <twin@example.org>\r\n\r\nsame\r\n".utf8)
        for _ in 0..<2 { try backup.account.deliver(twin, to: quiet, idate: Date(timeIntervalSince1970: 1_650_000_000)) }
        // Settings, autoreply and a filter.
        backup.account.updateUser(["language": "de", "spamLevel": "80"])
        backup.account.setAutoreply(status: true, subject: "Away", text: "Back on Monday")
        let filter = backup.account.addFilter(name: "lists")
        backup.account.mutate { s in
            guard let i = s.filters.firstIndex(where: { $0.id == filter }) else { return }
            s.filters[i].query = .object([("from", .string("alice"))])
            s.filters[i].action = .object([("seen", .bool(true)), ("mailbox", .string(quiet))])
        }
        try backup.sync()
        let before = backup.snapshot()
        let dbBefore = Self.sha(backup.db)

        let target = try Harness()
        let result = try target.run(Self.restoreArguments(backup, to: target))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("not carried"), "\\Answered must be listed: \(result.stderr)")
        // The filter whole, moving to the target's own Lists.
        let restoredFilter = target.account.state.withLock { $0.filters.first { $0.name == "lists" } }
        let targetLists = try #require(target.account.mailboxId(path: "Lists"))
        #expect(restoredFilter?.query == .object([("from", .string("alice"))]))
        #expect(restoredFilter?.action == .object([("seen", .bool(true)), ("mailbox", .string(targetLists))]))
        #expect(target.account.userField("language") == "de")
        #expect(target.account.userField("spamLevel") == "80")
        let autoreply = target.account.state.withLock { $0.autoreply }
        #expect(autoreply.status && autoreply.subject == "Away" && autoreply.text == "Back on Monday")
        // The backup is read, never written.
        #expect(backup.snapshot() == before)
        #expect(Self.sha(backup.db) == dbBefore)

        // On the server: every message with its bytes, flags (but \Answered) and internal date.
        let expected = Self.serverMessages(backup)
        #expect(Self.serverMessages(target) == expected, "\(Self.difference(Self.serverMessages(target), expected))")
        let restored = Dictionary(uniqueKeysWithValues: target.account.mailboxes().map { ($0.path, $0) })
        #expect(restored["Old"]?.hidden == true)
        #expect(restored["Lists"]?.subscribed == false)

        // A fresh sync of the restored account is the backup again.
        try target.sync()
        var backupContents = Self.contents(backup.maildir)
        backupContents = backupContents.mapValues { $0.filter { !$0.hasSuffix(" " + Self.digest([])) } }
        #expect(Self.contents(target.maildir) == backupContents)

        // Again: nothing is added.
        let again = try target.run(Self.restoreArguments(backup, to: target))
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.contains(" 0 messages uploaded"), "\(again.stderr)")
        #expect(Self.serverMessages(target) == expected, "\(Self.difference(Self.serverMessages(target), expected))")
        #expect(target.account.state.withLock { $0.filters.count } == 1)
    }

    /// Sets a simulator filter's rules (the simulator's own `addFilter` gives default ones).
    static func setFilter(_ h: Harness, _ id: String, query: JSONValue, action: JSONValue, disabled: Bool = false) {
        h.account.mutate { s in
            guard let i = s.filters.firstIndex(where: { $0.id == id }) else { return }
            s.filters[i].query = query
            s.filters[i].action = action
            s.filters[i].disabled = disabled
        }
    }

    /// Filters: the sync keeps each one whole, reading it only when the listing changed; the
    /// restore creates those the target lacks with the same query and action (a "move to folder"
    /// into the target's own mailbox), says so first with --dry-run, leaves the target's own
    /// filters alone, adds none on a rerun; a cache without them whole lists them as not restored.
    @Test func filtersAreRecreatedOnceWithTheirRules() throws {
        let backup = try Harness()
        let lists = try backup.account.createMailbox(path: "Lists")
        let named = backup.account.addFilter(name: "lists")
        Self.setFilter(backup, named, query: .object([("from", .string("alice")), ("listId", .string("dev.example.org"))]),
                       action: .object([("seen", .bool(true)), ("mailbox", .string(lists))]))
        let unnamed = backup.account.addFilter(name: "")
        Self.setFilter(backup, unnamed, query: .object([("subject", .string("invoice")), ("size", .int(1000))]),
                       action: .object([("flag", .bool(true)), ("targets", .array([.string("archive@example.org")]))]))
        let off = backup.account.addFilter(name: "old")
        Self.setFilter(backup, off, query: .object([("text", .string("lottery"))]), action: .object([("delete", .bool(true))]), disabled: true)
        try backup.sync()
        let expected = backup.account.state.withLock { $0.filters }

        // A run that changed nothing reads no filter again: the same 5 requests as ever (after
        // the run that confirms the first one's listings from the journal); one changed filter
        // is read once more.
        try backup.sync()
        backup.server.resetStats()
        try backup.sync()
        #expect(backup.server.stats().totalRequests == 5, "\(backup.server.stats().perRoute)")
        Self.setFilter(backup, off, query: .object([("text", .string("lottery win"))]), action: .object([("delete", .bool(true))]), disabled: true)
        backup.server.resetStats()
        try backup.sync()
        #expect(backup.server.stats()["filters"] == 2, "listing and the changed filter: \(backup.server.stats().perRoute)")

        // The target has a filter of its own named like one of the backup's, with other rules.
        let target = try Harness()
        let own = target.account.addFilter(name: "lists")
        Self.setFilter(target, own, query: .object([("from", .string("bob"))]), action: .object([("spam", .bool(true))]))
        let dry = try target.run(Self.restoreArguments(backup, to: target) + ["--dry-run"])
        #expect(dry.status == 0, "\(dry.stderr)")
        for name in ["lists", "", "old"] { #expect(dry.stderr.contains("would create filter \"\(name)\""), "\(dry.stderr)") }
        #expect(target.account.state.withLock { $0.filters.count } == 1)

        let result = try target.run(Self.restoreArguments(backup, to: target))
        #expect(result.status == 0, "\(result.stderr)")
        let restored = target.account.state.withLock { $0.filters }
        #expect(restored.count == 4, "\(restored)")
        #expect(restored.first { $0.id == own }.map { $0.query == .object([("from", .string("bob"))]) && $0.name == "lists" } == true)
        let targetLists = try #require(target.account.mailboxId(path: "Lists"))
        let created = restored.filter { $0.id != own }
        let byName = Dictionary(grouping: created, by: \.name)
        #expect(byName["lists"]?.first?.query == .object([("from", .string("alice")), ("listId", .string("dev.example.org"))]))
        #expect(byName["lists"]?.first?.action == .object([("seen", .bool(true)), ("mailbox", .string(targetLists))]))
        let theUnnamed = try #require(expected.first { $0.id == unnamed })
        #expect(byName[""]?.first.map { $0.query == theUnnamed.query && $0.action == theUnnamed.action && !$0.disabled } == true)
        #expect(byName["old"]?.first.map { $0.query == .object([("text", .string("lottery win"))]) && $0.disabled } == true)

        // Again: nothing is added, the three are found.
        let again = try target.run(Self.restoreArguments(backup, to: target))
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.contains("3 filter(s) of the backup already there"), "\(again.stderr)")
        #expect(target.account.state.withLock { $0.filters.count } == 4)

        // A cache written before filters were kept whole (no detail_json column): listed, not restored.
        let old = target.dir + "/old.db"
        try FileManager.default.copyItem(atPath: backup.db, toPath: old)
        for suffix in ["-wal", "-shm"] where FileManager.default.fileExists(atPath: backup.db + suffix) {
            try FileManager.default.copyItem(atPath: backup.db + suffix, toPath: old + suffix)
        }
        do {
            let store = try Store(path: old)
            try store.db.run("ALTER TABLE filters DROP COLUMN detail_json")
            try store.db.run("DELETE FROM schema_migrations WHERE version = 13")
        }
        let fresh = try Harness()
        let older = try fresh.run(Self.restoreArguments(backup, to: fresh, db: old))
        #expect(older.status == 0, "\(older.stderr)")
        #expect(older.stderr.contains("not restored: filters the backup has only in words"), "\(older.stderr)")
        #expect(older.stderr.contains("by hand): 3"), "\(older.stderr)")
        #expect(fresh.account.state.withLock { $0.filters.isEmpty })
    }

    @Test func nothingOnTheTargetIsChangedAndDryRunCreatesNothing() throws {
        let backup = try Harness()
        try backup.seedStandard(generated: 30)
        try backup.sync()
        backup.account.updateUser(["language": "de"])
        backup.account.setAutoreply(status: true, subject: "Away", text: "Back on Monday")
        try backup.sync()
        let target = try Harness()
        // Settings of its own, which stay.
        target.account.updateUser(["language": "fi"])
        target.account.setAutoreply(status: false, subject: "Old", text: "kept")
        // The target already has mail, in a mailbox the backup also has, with other flags.
        let work = try target.account.createMailbox(path: "Work")
        try target.account.updateMailbox(id: work, subscribed: false)
        let own = Array("From: d@example.org\r\nSubject: mine\r\nMessage-ID: <mine@example.org>\r\n\r\nmine\r\n".utf8)
        let ownUid = try target.account.deliver(own, to: work, seen: false, flagged: true)
        // One of the backup's messages is there already, unread where the backup has it read.
        let backupWork = try #require(backup.account.mailboxId(path: "Work"))
        let shared = try #require(backup.account.messages(mailboxId: backupWork).first { $0.seen })
        let sharedUid = try target.account.deliver(shared.raw, to: work, seen: false, idate: shared.idate)
        let mailboxesBefore = target.account.mailboxes().map(\.path).sorted()
        let totalBefore = target.totalServerMessages

        let dry = try target.run(Self.restoreArguments(backup, to: target) + ["--dry-run"])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stderr.contains("would create mailbox Work/Projects"), "\(dry.stderr)")
        #expect(dry.stderr.contains("would upload"), "\(dry.stderr)")
        #expect(target.account.mailboxes().map(\.path).sorted() == mailboxesBefore)
        #expect(target.totalServerMessages == totalBefore)

        let result = try target.run(Self.restoreArguments(backup, to: target))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("1 already there"), "\(result.stderr)")
        let mine = try #require(target.account.messages(mailboxId: work).first { $0.uid == ownUid })
        #expect(!mine.seen && mine.flagged)
        let kept = try #require(target.account.messages(mailboxId: work).first { $0.uid == sharedUid })
        #expect(!kept.seen)
        #expect(target.account.mailboxes().first { $0.id == work }?.subscribed == false)
        #expect(target.account.userField("language") == "fi")
        #expect(target.account.state.withLock { $0.autoreply.subject } == "Old")
        // Everything of the backup is there once, next to what the target had.
        let empty = backup.account.mailboxes().reduce(0) { $0 + backup.account.messages(mailboxId: $1.id).filter { $0.raw.isEmpty }.count }
        #expect(target.totalServerMessages == backup.totalServerMessages + 1 - empty)
        #expect(target.account.messages(mailboxId: work).filter { Harness.digest($0.raw) == Harness.digest(shared.raw) }.count == 1)
    }

    @Test func killedRestoresEndWithEveryMessageOnce() throws {
        let backup = try Harness()
        try backup.seedStandard(generated: 300)
        try backup.sync()
        let target = try Harness()
        // Slow uploads, so that kills land in the middle of them.
        target.server.injectFault(.delay(milliseconds: 5), on: "messages", count: 100_000)
        var kills = 0
        for round in 0..<6 {
            let (p, _, _) = target.process(Self.restoreArguments(backup, to: target))
            try p.run()
            let threshold = target.totalServerMessages + 20 + round * 7
            _ = Harness.wait(timeout: 30) { !p.isRunning || target.totalServerMessages >= threshold }
            if p.isRunning {
                kill(p.processIdentifier, SIGKILL)
                kills += 1
            }
            p.waitUntilExit()
        }
        print("restore kill test: \(kills) runs killed, \(target.totalServerMessages) of \(backup.totalServerMessages) messages before the last run")
        #expect(kills > 0)
        target.server.clearFaults()
        let last = try target.run(Self.restoreArguments(backup, to: target))
        #expect(last.status == 0, "\(last.stderr)")
        #expect(Self.serverMessages(target) == Self.serverMessages(backup), "\(Self.difference(Self.serverMessages(target), Self.serverMessages(backup)))")
    }

    /// kill -9 while the server is still storing an upload (its client gone), and at once a
    /// rerun: the rerun must not send it again. The simulator holds the fourth upload for 1.5 s.
    @Test func aRerunWaitsForAnUploadTheServerIsStillStoring() throws {
        let backup = try Harness()
        try backup.seedStandard(generated: 20)
        try backup.sync()
        let target = try Harness()
        let listings = backup.account.mailboxes().filter { target.account.mailboxId(path: $0.path) != nil }.count
        target.server.injectFault(.delay(milliseconds: 1500), on: "messages", count: 1, after: listings + 3)
        let (p, _, _) = target.process(Self.restoreArguments(backup, to: target) + ["--connections", "1"])
        try p.run()
        #expect(Harness.wait(timeout: 30) { target.server.stats()["messages"] > listings + 3 })
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let rerun = try target.run(Self.restoreArguments(backup, to: target))
        #expect(rerun.status == 0, "\(rerun.stderr)")
        usleep(2_000_000)   // the held upload is stored by now, whenever the rerun ended
        #expect(Self.serverMessages(target) == Self.serverMessages(backup), "\(Self.difference(Self.serverMessages(target), Self.serverMessages(backup)))")
    }

    /// A filter creation the server is still storing when the restore is killed is not sent
    /// again by the rerun: it was recorded, and the rerun lists the filters until it shows.
    @Test func aRerunWaitsForAFilterTheServerIsStillCreating() throws {
        let backup = try Harness()
        let id = backup.account.addFilter(name: "held")
        Self.setFilter(backup, id, query: .object([("from", .string("carol"))]), action: .object([("flag", .bool(true))]))
        try backup.sync()
        let target = try Harness()
        // The listing goes through; the creation is held 1.5 s, then stored.
        target.server.injectFault(.delay(milliseconds: 1500), on: "filters", count: 1, after: 1)
        let (p, _, _) = target.process(Self.restoreArguments(backup, to: target))
        try p.run()
        #expect(Harness.wait(timeout: 30) { target.server.stats()["filters"] >= 2 })
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let rerun = try target.run(Self.restoreArguments(backup, to: target))
        #expect(rerun.status == 0, "\(rerun.stderr)")
        usleep(2_000_000)   // the held creation is stored by now, whenever the rerun ended
        #expect(target.account.state.withLock { $0.filters.count } == 1)
    }

    /// A Maildir that mbsync or OfflineIMAP made: folders from the tree (both layouts), flags
    /// from the names, the internal date from the modification time.
    @Test(arguments: ["verbatim", "maildir++"])
    func restoreFromAPlainMaildir(layout: String) throws {
        let target = try Harness()
        let root = target.dir + "/plain"
        let folders = layout == "verbatim" ? ["INBOX": "INBOX", "Work": "Work", "Work/Projects": "Work/Projects", "Sent": "Sent Mail"]
            : ["": "INBOX", ".Work": "Work", ".Work.Projects": "Work/Projects", ".Sent": "Sent Mail"]
        var expected: [String: [String]] = [:]
        var n = 0
        for (directory, path) in folders.sorted(by: { $0.key < $1.key }) {
            for sub in ["cur", "new", "tmp"] {
                try FileManager.default.createDirectory(atPath: root + "/" + directory + "/" + sub, withIntermediateDirectories: true)
            }
            for (info, seen, flagged, draft, deleted) in [("2,S", true, false, false, false), ("2,FS", true, true, false, false),
                                                        ("2,DRT", false, false, true, true), ("", false, false, false, false)] {
                n += 1
                let id = n % 3 == 0 ? "" : "Message-ID: <plain-\(n)@example.org>\n"
                // Without a Message-ID, some with an encoded subject (WildDuck lists it decoded).
                let subject = n % 6 == 0 ? "=?UTF-8?B?\(Data("Grüße \(n)".utf8).base64EncodedString())?=" : "plain \(n)"
                let text = "From: e@example.org\n\(id)Subject: \(subject)\n\nbody \(n)\n"
                let name = "\(1_700_000_000 + n).M\(n)P1.host" + (info.isEmpty ? "" : ":" + info)
                let file = root + "/" + directory + (info.isEmpty ? "/new/" : "/cur/") + name
                try Data(text.utf8).write(to: URL(fileURLWithPath: file))
                let mtime = 1_400_000_000 + n * 1000
                var times = [timespec(tv_sec: mtime, tv_nsec: 0), timespec(tv_sec: mtime, tv_nsec: 0)]
                #expect(utimensat(AT_FDCWD, file, &times, 0) == 0)
                expected[path, default: []].append("\(Self.digest(Array(text.utf8))) \(seen) \(flagged) \(draft) \(deleted) \(mtime)")
            }
        }
        let args = ["--restore", "--server", target.server.baseURL, "--user", "demo", "--password-file", target.passwordFile,
                    "--maildir", root, "--db", target.dir + "/no-such-cache.sqlite"]
        let result = try target.run(args)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: target.dir + "/no-such-cache.sqlite"))
        let onServer = Self.serverMessages(target).filter { !$0.value.isEmpty }
        #expect(onServer == expected.mapValues { $0.sorted() })
        // A cache of another Maildir is refused, not taken for this one's.
        let other = try Harness()
        try other.sync()
        let wrong = try target.run(Array(args.dropLast(2)) + ["--db", other.db])
        #expect(wrong.status == 64 && wrong.stderr.contains("belongs to the Maildir"), "\(wrong.stderr)")
        // Twice: nothing more, the messages without a Message-ID included.
        let again = try target.run(args)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(Self.serverMessages(target).filter { !$0.value.isEmpty } == onServer)
    }
}
