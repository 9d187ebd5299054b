#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Testing
import WildDuckSim

/// Two-way sync: what a mail program does to the files reaches the server exactly once, merged
/// with the server's changes, and a second run afterwards writes nothing in either direction.
@Suite(.serialized) struct TwoWayTests {
    // MARK: Helpers

    /// A synced account: INBOX with the corpus, Work and Work/Projects with generated mail.
    static func synced(generated: Int = 40) throws -> Harness {
        let h = try Harness()
        try h.seedStandard(generated: generated)
        try h.sync()
        return h
    }

    /// The file wdsync wrote for a server message (relative to the root), found by its name.
    static func file(_ h: Harness, _ mailboxId: String, _ uid: Int) -> String? {
        h.snapshot().keys.first { $0.contains(".wd\(mailboxId)_\(uid).") }
    }

    static func mailbox(_ h: Harness, _ path: String) throws -> String {
        try #require(h.account.mailboxId(path: path))
    }

    /// Every mailbox's modifyIndex: any write on the server moves one.
    static func serverState(_ h: Harness) -> [String: Int] {
        Dictionary(uniqueKeysWithValues: h.account.mailboxes().map { ($0.path, $0.modifyIndex) })
    }

    /// Renames a file to other flags, moving it to cur/ (as mutt does when it reads one).
    @discardableResult
    static func rename(_ h: Harness, _ rel: String, flags: String, folder: String? = nil) throws -> String {
        let name = (rel as NSString).lastPathComponent
        let unique = name.split(separator: ":", maxSplits: 1).first.map(String.init) ?? name
        let dir = folder.map { $0 + "/cur" }
            ?? (rel as NSString).deletingLastPathComponent.replacingOccurrences(of: "/new", with: "/cur")
        let target = "\(dir)/\(unique):2,\(flags)"
        #expect(Glibc.rename(h.maildir + "/" + rel, h.maildir + "/" + target) == 0)
        return target
    }

    /// A message file as mutt writes it (LF line endings), placed into `folder`'s cur/ or new/.
    @discardableResult
    static func writeNew(_ h: Harness, folder: String, flags: String, messageId: String, subject: String,
                         mtime: Int = 1_750_000_000) throws -> String {
        let text = "From: Me <me@example.org>\nTo: You <you@example.org>\nSubject: \(subject)\nMessage-ID: <\(messageId)>\nDate: Mon, 16 Jun 2025 12:00:00 +0000\n\nHello,\nthis was written by mutt.\n"
        let sub = flags.contains("S") ? "cur" : "new"
        let rel = "\(folder)/\(sub)/\(mtime).M\(abs(messageId.hashValue % 100000))P4242.testhost,S=\(text.utf8.count):2,\(flags)"
        try Data(text.utf8).write(to: URL(fileURLWithPath: h.maildir + "/" + rel))
        var times = [timespec(tv_sec: mtime, tv_nsec: 0), timespec(tv_sec: mtime, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, h.maildir + "/" + rel, &times, 0) == 0)
        return rel
    }

    /// A second run writes nothing on the server, touches no file and downloads nothing.
    static func expectQuiet(_ h: Harness, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let files = h.snapshot()
        let server = serverState(h)
        h.server.resetStats()
        let r = try h.run()
        #expect(r.status == 0, "second run failed: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(h.snapshot() == files, "the second run changed files", sourceLocation: sourceLocation)
        #expect(serverState(h) == server, "the second run wrote to the server", sourceLocation: sourceLocation)
        #expect(h.server.stats()["message.eml"] == 0, "the second run downloaded", sourceLocation: sourceLocation)
        let store = try Store(path: h.db)
        #expect(try store.outboxCount() == 0, "mutations left pending", sourceLocation: sourceLocation)
    }

    static func messages(_ h: Harness, withId id: String) -> [(mailbox: String, message: SimMessage)] {
        h.account.mailboxes().flatMap { mb in
            h.account.messages(mailboxId: mb.id).filter { $0.messageId == "<\(id)>" }.map { (mb.path, $0) }
        }
    }

    // MARK: Flags

    @Test func flagRenamesReachTheServerInBulk() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work")
        let list = h.account.messages(mailboxId: work)
        let unseen = list.filter { !$0.seen && !$0.deleted }.prefix(5)
        let seen = try #require(list.first { $0.seen && !$0.flagged && !$0.deleted })
        #expect(unseen.count == 5)
        // Read five messages (new/ → cur/ with S, as mutt does), flag one, mark one unread.
        for m in unseen {
            try Self.rename(h, try #require(Self.file(h, work, m.uid)), flags: Harness.letters(m).replacingOccurrences(of: "S", with: "") + "S")
        }
        let seenFile = try #require(Self.file(h, work, seen.uid))
        try Self.rename(h, seenFile, flags: String(Harness.letters(seen).filter { $0 != "S" } + "F").sortedLetters)
        h.server.resetStats()
        let r = try h.sync()
        let after = Dictionary(uniqueKeysWithValues: h.account.messages(mailboxId: work).map { ($0.uid, $0) })
        for m in unseen { #expect(after[m.uid]?.seen == true) }
        #expect(after[seen.uid]?.seen == false)
        #expect(after[seen.uid]?.flagged == true)
        // One request per distinct change: seen=true (5 messages), and seen=false+flagged=true.
        #expect(r.stderr.contains("in 2 requests"), "\(r.stderr)")
        #expect(h.server.stats()["message.eml"] == 0)
        // Marked unread, the file stays in cur/ where mutt left it (cur/ means "not new").
        #expect(Self.file(h, work, seen.uid)?.hasPrefix("Work/cur/") == true)
        #expect(h.mirrorDifferences().map { $0.replacingOccurrences(of: "\"cur ", with: "\"").replacingOccurrences(of: "\"new ", with: "\"") }
            .allSatisfy { line in
                // Only a cur/-versus-new/ difference: the same entries on both sides.
                guard let extra = line.range(of: "extra "), let missing = line.range(of: ", missing ") else { return false }
                return line[extra.upperBound..<missing.lowerBound] == line[missing.upperBound...]
            })
        try Self.expectQuiet(h)
    }

    @Test func flagsThatCannotBePushedStayLocal() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work")
        let m = try #require(h.account.messages(mailboxId: work).first { !$0.answered && !$0.forwarded && !$0.draft && $0.seen && !$0.flagged })
        let file = try #require(Self.file(h, work, m.uid))
        // mutt replied (R), forwarded (P) and the user marked it a draft (D): none has a REST field.
        let renamed = try Self.rename(h, file, flags: "DPRS")
        try h.sync()
        let server = try #require(h.account.messages(mailboxId: work).first { $0.uid == m.uid })
        #expect(!server.answered && !server.forwarded && !server.draft && !server.flagged)
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/" + renamed))
        // A later server change to the message keeps them.
        try h.account.setFlags(mailboxId: work, uid: m.uid, flagged: true)
        try h.sync()
        let now = try #require(Self.file(h, work, m.uid))
        #expect(now.hasSuffix(":2,DFPRS"), "\(now)")
        try Self.expectQuiet(h)
    }

    // MARK: Deletes and moves

    @Test func anUnlinkedFileIsDeletedOnTheServer() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work")
        let m = try #require(h.account.messages(mailboxId: work).first)
        let count = h.account.messages(mailboxId: work).count
        try FileManager.default.removeItem(atPath: h.maildir + "/" + (try #require(Self.file(h, work, m.uid))))
        try h.sync()
        #expect(h.account.messages(mailboxId: work).count == count - 1)
        #expect(!h.account.messages(mailboxId: work).contains { $0.uid == m.uid })
        try h.expectMirror()
        try Self.expectQuiet(h)
    }

    @Test func aFileRenamedIntoAnotherFolderIsMovedNotCopied() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work"), projects = try Self.mailbox(h, "Work/Projects")
        let m = try #require(h.account.messages(mailboxId: work).first { !$0.seen })
        let file = try #require(Self.file(h, work, m.uid))
        var st = stat()
        #expect(stat(h.maildir + "/" + file, &st) == 0)
        let inode = st.st_ino
        // Moved and read in one go.
        let moved = try Self.rename(h, file, flags: (Harness.letters(m) + "S").sortedLetters, folder: "Work/Projects")
        h.server.resetStats()
        try h.sync()
        #expect(!h.account.messages(mailboxId: work).contains { $0.messageId == m.messageId })
        let there = h.account.messages(mailboxId: projects).filter { $0.messageId == m.messageId }
        #expect(there.count == 1)
        #expect(there.first?.seen == true)
        #expect(h.server.stats()["message.eml"] == 0, "a moved message was downloaded")
        #expect(stat(h.maildir + "/" + moved, &st) == 0 && st.st_ino == inode, "the file was not kept")
        try h.expectMirror()
        try Self.expectQuiet(h)
    }

    @Test func muttSaveCopyPlusUnlinkIsAMove() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work"), projects = try Self.mailbox(h, "Work/Projects")
        let m = try #require(h.account.messages(mailboxId: work).first { $0.seen })
        let file = try #require(Self.file(h, work, m.uid))
        let total = h.totalServerMessages
        // A copy under a new name (mutt's save), then the original goes.
        let copy = "Work/Projects/cur/1750000001.M1P2.testhost:2,\(Harness.letters(m))"
        try FileManager.default.copyItem(atPath: h.maildir + "/" + file, toPath: h.maildir + "/" + copy)
        try FileManager.default.removeItem(atPath: h.maildir + "/" + file)
        h.server.resetStats()
        try h.sync()
        #expect(h.totalServerMessages == total, "a save must not upload a second copy")
        #expect(h.account.messages(mailboxId: projects).filter { $0.messageId == m.messageId }.count == 1)
        #expect(!h.account.messages(mailboxId: work).contains { $0.uid == m.uid })
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/" + copy))
        #expect(h.server.stats()["message.eml"] == 0)
        try h.expectMirror()
        try Self.expectQuiet(h)
    }

    /// Another client moves two messages out of Work while mutt, which has not seen that yet,
    /// saves one into Work/Projects (a copy, then the unlink) and the person `mv`s the other
    /// there: each ends in Work/Projects once, moved from where the other client put it, not
    /// uploaded from the local file as a second copy (issue 19, found by wdsync-torture).
    @Test func aMoveOfAMessageAnotherClientMovedMeanwhileIsNotACopy() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work"), projects = try Self.mailbox(h, "Work/Projects")
        let inbox = try Self.mailbox(h, "INBOX")
        // Read ones: their files are in cur/ wherever they go.
        let list = h.account.messages(mailboxId: work).filter { $0.seen && !$0.deleted }
        #expect(list.count >= 2)
        let (saved, moved) = (list[0], list[1])
        let savedFile = try #require(Self.file(h, work, saved.uid)), movedFile = try #require(Self.file(h, work, moved.uid))
        let total = h.totalServerMessages
        _ = try h.account.move(mailboxId: work, uid: saved.uid, to: inbox)
        _ = try h.account.move(mailboxId: work, uid: moved.uid, to: inbox)
        let copy = "Work/Projects/cur/1750000001.M1P2.testhost:2,\(Harness.letters(saved))"
        try FileManager.default.copyItem(atPath: h.maildir + "/" + savedFile, toPath: h.maildir + "/" + copy)
        try FileManager.default.removeItem(atPath: h.maildir + "/" + savedFile)
        try Self.rename(h, movedFile, flags: Harness.letters(moved), folder: "Work/Projects")
        let r = try h.sync()
        #expect(h.totalServerMessages == total, "a message was uploaded a second time: \(r.stderr)")
        for m in [saved, moved] {
            let places = h.account.mailboxes().flatMap { mb in h.account.messages(mailboxId: mb.id).filter { $0.messageId == m.messageId }.map { _ in mb.id } }
            #expect(places == [projects], "\(m.messageId) is in \(places)")
        }
        #expect(!r.stderr.contains("instead of moving it"), "\(r.stderr)")
        try h.expectMirror()
        try Self.expectQuiet(h)
    }

    /// The same, when a pass already brought the other client's move into the cache before the
    /// person's move was sent (the daemon applies it as it happens; here `--pull-only`): the
    /// message is known, with a file wdsync downloaded for it, where the other client put it. It
    /// is moved from there, and that file goes — not uploaded from the person's file as a
    /// second copy (found by wdsync-torture, seed 71068).
    @Test func aMoveOfAMessageWhoseOtherMoveWasPulledFirstIsNotACopy() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work"), projects = try Self.mailbox(h, "Work/Projects")
        let inbox = try Self.mailbox(h, "INBOX")
        let m = try #require(h.account.messages(mailboxId: work).first { $0.seen && !$0.deleted })
        let file = try #require(Self.file(h, work, m.uid))
        let total = h.totalServerMessages
        try Self.rename(h, file, flags: Harness.letters(m), folder: "Work/Projects")
        _ = try h.account.move(mailboxId: work, uid: m.uid, to: inbox)
        let pulled = try h.run(extra: ["--pull-only"])
        #expect(pulled.status == 0, "\(pulled.stderr)")
        let r = try h.sync()
        #expect(h.totalServerMessages == total, "the message was uploaded a second time: \(r.stderr)")
        let places = h.account.mailboxes().flatMap { mb in h.account.messages(mailboxId: mb.id).filter { $0.messageId == m.messageId }.map { _ in mb.id } }
        #expect(places == [projects], "\(m.messageId) is in \(places)")
        try h.expectMirror()
        try Self.expectQuiet(h)
    }

    /// Another client flags a message and the person moves it (mv) into Work/Projects before
    /// wdsync saw the flag: the server keeps the flag through the move, and so does the moved
    /// file (issue 19, found by wdsync-torture).
    @Test func aFlagAnotherClientSetBeforeAMoveReachesTheMovedFile() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work"), projects = try Self.mailbox(h, "Work/Projects")
        let m = try #require(h.account.messages(mailboxId: work).first { $0.seen && !$0.flagged && !$0.deleted })
        let file = try #require(Self.file(h, work, m.uid))
        try h.account.setFlags(mailboxId: work, uid: m.uid, flagged: true)
        let moved = try Self.rename(h, file, flags: Harness.letters(m), folder: "Work/Projects")
        try h.sync()
        let there = h.account.messages(mailboxId: projects).filter { $0.messageId == m.messageId }
        #expect(there.count == 1 && there.first?.flagged == true)
        let name = (moved as NSString).lastPathComponent
        let unique = name.split(separator: ":", maxSplits: 1).first.map(String.init) ?? name
        #expect(h.snapshot().keys.contains { $0.contains(unique) && $0.hasSuffix(",FS") }, "\(h.snapshot().keys.filter { $0.contains(unique) })")
        try h.expectMirror()
        try Self.expectQuiet(h)
    }

    /// A `--once` that wrote into folders watches them while it runs: the last scan reads none
    /// of them (inotify saw only the run's own writes) and records them, so the next run reads
    /// no folder either. What the user does afterwards is still found.
    @Test func aRunRecordsTheFoldersItWroteWithoutReadingThem() throws {
        let h = try Self.synced()
        // The first sync's folders are younger than the settle rule's second: age them, so the
        // run below reads and records them all whatever the clock says.
        let old = Int(Date().timeIntervalSince1970) - 60
        for case let dir as String in FileManager.default.enumerator(atPath: h.maildir)! where dir.hasSuffix("/cur") || dir.hasSuffix("/new") {
            var times = [timespec(tv_sec: old, tv_nsec: 5), timespec(tv_sec: old, tv_nsec: 5)]
            #expect(utimensat(AT_FDCWD, h.maildir + "/" + dir, &times, 0) == 0)
        }
        #expect(try h.sync(extra: ["-v"]).stderr.contains("scanned 7 folders"))
        let work = try Self.mailbox(h, "Work")
        let m = try #require(h.account.messages(mailboxId: work).first { !$0.seen && !$0.deleted })
        try h.account.deliver(Array("From: a@example.org\r\nSubject: new\r\nMessage-ID: <rec@example.org>\r\n\r\nx\r\n".utf8), to: work)
        try h.account.setFlags(mailboxId: work, uid: m.uid, flagged: true)
        let writing = try h.sync(extra: ["-v"])
        #expect(!writing.stderr.contains("scanned"), "the last scan read folders: \(writing.stderr)")
        let next = try h.sync(extra: ["-v"])
        #expect(!next.stderr.contains("scanned"), "the next run read folders: \(next.stderr)")
        let file = try #require(Self.file(h, work, m.uid))
        try Self.rename(h, file, flags: (Harness.letters(m) + "FS").sortedLetters)
        let after = try h.sync(extra: ["-v"])
        #expect(after.stderr.contains("scanned 1 folders"), "\(after.stderr)")
        #expect(h.account.messages(mailboxId: work).first { $0.uid == m.uid }?.seen == true)
        try h.expectMirror()
        try Self.expectQuiet(h)
    }

    // MARK: Uploads

    @Test func aNewFileIsUploadedOnceAndNeverDownloadedBack() throws {
        let h = try Self.synced()
        let sent = try Self.mailbox(h, "Sent Mail"), drafts = try Self.mailbox(h, "Drafts")
        let before = h.account.messages(mailboxId: sent).count
        let file = try Self.writeNew(h, folder: "Sent Mail", flags: "S", messageId: "sent-1@example.org", subject: "Sent by mutt")
        let draft = try Self.writeNew(h, folder: "Drafts", flags: "DS", messageId: "draft-1@example.org", subject: "Postponed")
        let flagged = try Self.writeNew(h, folder: "INBOX", flags: "F", messageId: "new-1@example.org", subject: "Unread")
        // Never uploaded: a dot file and a file in tmp/.
        try Data("From: x\n\nhidden\n".utf8).write(to: URL(fileURLWithPath: h.maildir + "/Sent Mail/cur/.hidden:2,S"))
        // "." and a combining mark are one Character, but still a dot file.
        try Data("From: y\n\nhidden too\n".utf8).write(to: URL(fileURLWithPath: h.maildir + "/Sent Mail/cur/.\u{0301}hidden:2,S"))
        try Data("From: x\n\nbeing written\n".utf8).write(to: URL(fileURLWithPath: h.maildir + "/Sent Mail/tmp/1750000000.M9P9.testhost"))
        h.server.resetStats()
        try h.sync()
        #expect(h.account.messages(mailboxId: sent).count == before + 1)
        let up = Self.messages(h, withId: "sent-1@example.org")
        #expect(up.count == 1 && up.first?.mailbox == "Sent Mail")
        #expect(up.first?.message.seen == true)
        #expect(up.first.map { Int($0.message.idate.timeIntervalSince1970) } == 1_750_000_000)
        let d = Self.messages(h, withId: "draft-1@example.org")
        #expect(d.count == 1 && d.first?.message.draft == true && d.first?.mailbox == "Drafts")
        let f = Self.messages(h, withId: "new-1@example.org")
        #expect(f.count == 1 && f.first?.message.seen == false && f.first?.message.flagged == true)
        #expect(h.server.stats()["message.eml"] == 0, "an upload came back as a download")
        // The local files are the messages: not renamed, not doubled.
        for rel in [file, draft, flagged] { #expect(FileManager.default.fileExists(atPath: h.maildir + "/" + rel)) }
        #expect(h.snapshot().keys.filter { $0.hasPrefix("Sent Mail/") && !$0.utf8.split(separator: UInt8(ascii: "/")).contains { $0.first == UInt8(ascii: ".") } && !$0.contains("/tmp/") }.count == before + 1)
        _ = drafts
        // The server's listing and its events (the next run re-lists the mailboxes) make no copy.
        try Self.expectQuiet(h)
    }

    @Test func anUploadWhoseAnswerWasLostIsNotSentTwice() throws {
        let h = try Self.synced()
        try Self.writeNew(h, folder: "Sent Mail", flags: "S", messageId: "lost-1@example.org", subject: "Lost answer")
        // The server stores the message, then the connection breaks before the answer is complete.
        h.server.injectFault(.truncateBody, on: "messages")
        // The run looks for it on the server at once, and finds it.
        let first = try h.run()
        #expect(first.status == 0, "\(first.stderr)")
        #expect(Self.messages(h, withId: "lost-1@example.org").count == 1)
        try h.sync()
        #expect(Self.messages(h, withId: "lost-1@example.org").count == 1, "the upload was sent twice")
        #expect(h.snapshot().keys.filter { $0.hasPrefix("Sent Mail/") }.count == h.account.messages(mailboxId: try Self.mailbox(h, "Sent Mail")).count)
        try Self.expectQuiet(h)
    }

    @Test func aKilledRunDoesNotUploadTwice() throws {
        let h = try Self.synced()
        try Self.writeNew(h, folder: "Drafts", flags: "DS", messageId: "killed-1@example.org", subject: "Killed")
        // The request reaches the server; wdsync is killed before the answer.
        h.server.injectFault(.delay(milliseconds: 1500), on: "messages")
        h.server.resetStats()
        let (p, _, _) = h.process(h.baseArguments)
        try p.run()
        #expect(Harness.wait(timeout: 60) { h.server.stats()["messages"] >= 1 })
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(Harness.wait(timeout: 10) { Self.messages(h, withId: "killed-1@example.org").count == 1 })
        try h.sync()
        #expect(Self.messages(h, withId: "killed-1@example.org").count == 1, "the upload was sent twice")
        try Self.expectQuiet(h)
    }

    // MARK: Conflicts

    @Test func flagsMergeThreeWay() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work")
        let list = h.account.messages(mailboxId: work).filter { !$0.seen && !$0.flagged && !$0.deleted && !$0.draft }
        #expect(list.count >= 3)
        let a = list[0], b = list[1], c = list[2]
        // a: read locally, flagged on the server → both.
        try Self.rename(h, try #require(Self.file(h, work, a.uid)), flags: (Harness.letters(a) + "S").sortedLetters)
        try h.account.setFlags(mailboxId: work, uid: a.uid, flagged: true)
        // b: only the server changed it → pulled.
        try h.account.setFlags(mailboxId: work, uid: b.uid, seen: true)
        // c: flagged locally, the server marked it deleted.
        try Self.rename(h, try #require(Self.file(h, work, c.uid)), flags: (Harness.letters(c) + "F").sortedLetters, folder: nil)
        try h.account.setFlags(mailboxId: work, uid: c.uid, deleted: true)
        try h.sync()
        let after = Dictionary(uniqueKeysWithValues: h.account.messages(mailboxId: work).map { ($0.uid, $0) })
        #expect(after[a.uid]?.seen == true && after[a.uid]?.flagged == true)
        #expect(after[b.uid]?.seen == true)
        #expect(after[c.uid]?.flagged == true && after[c.uid]?.deleted == true)
        // c stays in cur/, unread, where the reader put it.
        try h.expectMirror(old: ["\(work) \(c.uid)"])
        try Self.expectQuiet(h)
    }

    @Test func aLocalDeleteWinsOverAServerChange() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work")
        let m = try #require(h.account.messages(mailboxId: work).first { !$0.flagged })
        try FileManager.default.removeItem(atPath: h.maildir + "/" + (try #require(Self.file(h, work, m.uid))))
        try h.account.setFlags(mailboxId: work, uid: m.uid, flagged: true)
        try h.sync()
        #expect(!h.account.messages(mailboxId: work).contains { $0.uid == m.uid })
        try h.expectMirror()
        try Self.expectQuiet(h)
    }

    // MARK: Failures and safety rails

    @Test func changesWaitWhileTheServerFailsAndGoOutLater() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work")
        let m = try #require(h.account.messages(mailboxId: work).first { !$0.seen && !$0.deleted })
        try Self.rename(h, try #require(Self.file(h, work, m.uid)), flags: (Harness.letters(m) + "S").sortedLetters)
        h.server.injectFault(.status(503, body: "{\"error\":\"Service Unavailable\"}"), on: "messages", count: 5)
        let failed = try h.run()
        #expect(failed.status != 0)
        #expect(h.account.messages(mailboxId: work).first { $0.uid == m.uid }?.seen == false)
        h.server.clearFaults()
        try h.sync()
        #expect(h.account.messages(mailboxId: work).first { $0.uid == m.uid }?.seen == true)
        try Self.expectQuiet(h)
    }

    @Test func pullOnlyNeverWritesToTheServer() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work")
        let list = h.account.messages(mailboxId: work)
        let read = try #require(list.first { !$0.seen && !$0.deleted })
        let gone = try #require(list.first { $0.uid != read.uid })
        let readFile = try Self.rename(h, try #require(Self.file(h, work, read.uid)), flags: (Harness.letters(read) + "S").sortedLetters)
        try FileManager.default.removeItem(atPath: h.maildir + "/" + (try #require(Self.file(h, work, gone.uid))))
        let new = try Self.writeNew(h, folder: "Work", flags: "S", messageId: "backup-1@example.org", subject: "Local only")
        let server = Self.serverState(h)
        try h.sync(extra: ["--pull-only"])
        // The server changes another message meanwhile; that still arrives.
        let other = try #require(list.first { $0.uid != read.uid && $0.uid != gone.uid && !$0.flagged })
        try h.account.setFlags(mailboxId: work, uid: other.uid, flagged: true)
        let server2 = Self.serverState(h)
        try h.sync(extra: ["--pull-only"])
        #expect(Self.serverState(h) == server2)
        #expect(server2 != server)  // only by the change made above
        #expect(h.account.messages(mailboxId: work).first { $0.uid == read.uid }?.seen == false)
        #expect(h.account.messages(mailboxId: work).contains { $0.uid == gone.uid })
        #expect(Self.messages(h, withId: "backup-1@example.org").isEmpty)
        // Local changes are not reverted either.
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/" + readFile))
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/" + new))
        #expect(Self.file(h, work, gone.uid) == nil)
        #expect(Self.file(h, work, other.uid)?.contains("F") == true)
    }

    @Test func theMassDeleteBreakerHoldsDeletesUntilAllowed() throws {
        let h = try Self.synced(generated: 60)
        let work = try Self.mailbox(h, "Work")
        let count = h.account.messages(mailboxId: work).count
        // Everything in Work vanishes (rm -rf cur/* new/*).
        for sub in ["cur", "new"] {
            for name in try FileManager.default.contentsOfDirectory(atPath: h.maildir + "/Work/" + sub) {
                try FileManager.default.removeItem(atPath: h.maildir + "/Work/\(sub)/\(name)")
            }
        }
        let r = try h.run()
        #expect(r.status == 66, "\(r.stderr)")
        #expect(r.stderr.contains("--allow-mass-delete"))
        #expect(h.account.messages(mailboxId: work).count == count)
        // Held: the files stay deleted here, and a second run holds them still.
        #expect(Self.file(h, work, h.account.messages(mailboxId: work)[0].uid) == nil)
        #expect(try h.run().status == 66)

        // Meant: allow it.
        try h.sync(extra: ["--allow-mass-delete"])
        #expect(h.account.messages(mailboxId: work).isEmpty)
        try h.expectMirror()
        try Self.expectQuiet(h)
    }

    @Test func aMissingRootOrFolderIsNeverReadAsDeletes() throws {
        let h = try Self.synced()
        let server = Self.serverState(h)
        let total = h.totalServerMessages
        // The disk did not mount.
        try FileManager.default.moveItem(atPath: h.maildir, toPath: h.dir + "/unmounted")
        let r = try h.run()
        #expect(r.status == 74, "\(r.stderr)")
        #expect(r.stderr.contains("missing"))
        #expect(!FileManager.default.fileExists(atPath: h.maildir))
        #expect(Self.serverState(h) == server)
        try FileManager.default.moveItem(atPath: h.dir + "/unmounted", toPath: h.maildir)
        // A folder removed with rm -rf: nothing deleted on the server, it comes back.
        try FileManager.default.removeItem(atPath: h.maildir + "/Work/Projects")
        try h.sync()
        #expect(h.totalServerMessages == total)
        try h.expectMirror()
        try Self.expectQuiet(h)
    }

    /// Another client sets T on a message whose S the person set before wdsync saw the T:
    /// the server keeps both, and so must the file (it lost the S and went back to new/).
    @Test func aLocalFlagAndAnotherClientsFlagOnOneMessageBothStay() throws {
        let h = try Self.synced()
        let work = try Self.mailbox(h, "Work")
        let m = try #require(h.account.messages(mailboxId: work).first { !$0.seen && !$0.deleted && !$0.flagged })
        let file = try #require(Self.file(h, work, m.uid))
        try h.account.setFlags(mailboxId: work, uid: m.uid, deleted: true)
        try Self.rename(h, file, flags: "S")
        try h.sync()
        let server = try #require(h.account.messages(mailboxId: work).first { $0.uid == m.uid })
        #expect(server.seen && server.deleted)
        try h.expectMirror()
    }
}

@Suite(.serialized) struct TwoWayLiveTests {
    /// The daemon notices renames, unlinks and new files on its own (inotify) and pushes them.
    @Test func theDaemonPushesLocalChangesAsTheyHappen() throws {
        let h = try TwoWayTests.synced()
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected"), "\(daemon.log.suffix(2000))")
        let work = try TwoWayTests.mailbox(h, "Work")
        let list = h.account.messages(mailboxId: work)
        let read = try #require(list.first { !$0.seen && !$0.deleted })
        let gone = try #require(list.first { $0.uid != read.uid })
        try TwoWayTests.rename(h, try #require(TwoWayTests.file(h, work, read.uid)), flags: (Harness.letters(read) + "S").sortedLetters)
        #expect(Harness.wait(timeout: 20) { h.account.messages(mailboxId: work).first { $0.uid == read.uid }?.seen == true },
                "\(daemon.log.suffix(2000))")
        try FileManager.default.removeItem(atPath: h.maildir + "/" + (try #require(TwoWayTests.file(h, work, gone.uid))))
        #expect(Harness.wait(timeout: 20) { !h.account.messages(mailboxId: work).contains { $0.uid == gone.uid } })
        try TwoWayTests.writeNew(h, folder: "Sent Mail", flags: "S", messageId: "live-sent@example.org", subject: "Live")
        #expect(Harness.wait(timeout: 20) { TwoWayTests.messages(h, withId: "live-sent@example.org").count == 1 })
        // A server change meanwhile still arrives, and the echo of the upload makes no copy.
        let other = try #require(list.first { $0.uid != read.uid && $0.uid != gone.uid && !$0.flagged })
        try h.account.setFlags(mailboxId: work, uid: other.uid, flagged: true)
        #expect(Harness.wait(timeout: 20) { TwoWayTests.file(h, work, other.uid)?.contains("F") == true })
        #expect(daemon.terminate() == 0, "\(daemon.log.suffix(2000))")
        #expect(TwoWayTests.messages(h, withId: "live-sent@example.org").count == 1)
        try TwoWayTests.expectQuiet(h)
        let sent = try TwoWayTests.mailbox(h, "Sent Mail")
        #expect(h.snapshot().keys.filter { $0.hasPrefix("Sent Mail/") }.count == h.account.messages(mailboxId: sent).count)
    }

    /// mutt's save in front of the daemon: the copy is written at once, the original unlinked
    /// only when the folder is synced, so the two reach the daemon in different scans. The copy
    /// is held back until the unlink comes, and the pair is one move.
    @Test func aSaveIsAMoveInTheDaemonWhenTheUnlinkComesLater() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work"), projects = try TwoWayTests.mailbox(h, "Work/Projects")
        let m = try #require(h.account.messages(mailboxId: work).first { $0.seen })
        let file = try #require(TwoWayTests.file(h, work, m.uid))
        let total = h.totalServerMessages
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected"), "\(daemon.log.suffix(2000))")
        // The copy, written in tmp/ and renamed into cur/ as mutt does. Its mtime differs from
        // the message's date, so an upload (dated by the file) would show on the server.
        let tmp = h.maildir + "/Work/Projects/tmp/1750000002.M1P2.testhost"
        let copy = "Work/Projects/cur/1750000002.M1P2.testhost:2,\(Harness.letters(m))"
        try FileManager.default.copyItem(atPath: h.maildir + "/" + file, toPath: tmp)
        var times = [timespec(tv_sec: 1_750_000_000, tv_nsec: 0), timespec(tv_sec: 1_750_000_000, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, tmp, &times, 0) == 0)
        #expect(Glibc.rename(tmp, h.maildir + "/" + copy) == 0)
        #expect(daemon.waitForLog("not uploaded yet"), "\(daemon.log.suffix(2000))")
        #expect(h.totalServerMessages == total, "the copy was uploaded while the original is still there")
        try FileManager.default.removeItem(atPath: h.maildir + "/" + file)
        #expect(Harness.wait(timeout: 20) {
            !h.account.messages(mailboxId: work).contains { $0.uid == m.uid } && (try? Store(path: h.db).outboxCount()) == 0
        }, "\(daemon.log.suffix(3000))")
        #expect(daemon.terminate() == 0, "\(daemon.log.suffix(2000))")
        let moved = h.account.messages(mailboxId: projects).filter { $0.messageId == m.messageId }
        #expect(moved.count == 1)
        #expect(moved.first?.idate == m.idate, "the copy was uploaded, not moved")
        #expect(h.totalServerMessages == total)
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/" + copy))
        try h.expectMirror()
        try TwoWayTests.expectQuiet(h)
    }
}

/// Real mail programs making the changes: neomutt driven by its own commands, notmuch tags.
@Suite(.serialized) struct TwoWayProgramTests {
    @Test func neomuttReadFlagDeleteSaveAndSync() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work"), projects = try TwoWayTests.mailbox(h, "Work/Projects")
        let list = h.account.messages(mailboxId: work).filter { !$0.deleted && !$0.flagged }
        let unread = try #require(list.first { !$0.seen })
        let rest = list.filter { $0.uid != unread.uid }
        #expect(rest.count >= 3)
        let (flag, delete, save) = (rest[0], rest[1], rest[2])
        func pick(_ m: SimMessage) -> String {
            "<limit>~i '\(m.messageId.trimmingCharacters(in: CharacterSet(charactersIn: "<>")))'<enter>"
        }
        let keys = pick(unread) + "<display-message><exit>" + pick(flag) + "<flag-message>" + pick(delete) + "<delete-message>"
            + pick(save) + "<save-message>=Work/Projects<enter>" + "<sync-mailbox><quit>"
        let settings = "set mbox_type=Maildir folder='\(h.maildir)' confirmappend=no confirmcreate=no delete=yes quit=yes move=no mark_old=no wait_key=no pager_stop=yes"
        let command = "stty cols 200 rows 50; TERM=xterm neomutt -n -F /dev/null -f '\(h.maildir)/Work' -e \"$SETTINGS\" -e 'push \"$KEYS\"'"
        let (status, screen) = try shell("timeout 60 script -qec \"$CMD\" /dev/null",
                                         env: ["CMD": command, "SETTINGS": settings, "KEYS": keys])
        #expect(status == 0, "neomutt failed: \(screen.suffix(500))")
        h.server.resetStats()
        let run = try h.sync()
        // neomutt's save is a copy plus an unlink: a move on the server, not an upload.
        #expect(run.stderr.contains("1 moves") && run.stderr.contains("0 uploads"), "\(run.stderr)")
        let after = Dictionary(uniqueKeysWithValues: h.account.messages(mailboxId: work).map { ($0.uid, $0) })
        #expect(after[unread.uid]?.seen == true, "reading in neomutt did not reach the server")
        #expect(after[flag.uid]?.flagged == true)
        #expect(after[delete.uid] == nil)
        #expect(after[save.uid] == nil)
        #expect(h.account.messages(mailboxId: projects).filter { $0.messageId == save.messageId }.count == 1)
        #expect(h.server.stats()["message.eml"] == 0, "neomutt's changes made wdsync download something")
        try TwoWayTests.expectQuiet(h)
        // The saved copy (neomutt rewrote it) is what the cache records.
        let verify = try h.run(["--verify", "--server", h.server.baseURL, "--user", "demo", "--password-file", h.passwordFile,
                                "--maildir", h.maildir, "--db", h.db])
        #expect(verify.status == 0, "\(verify.stderr)")
    }

    @Test func notmuchTagChangesWithSynchronizeFlags() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        let list = h.account.messages(mailboxId: work).filter { !$0.deleted && !$0.draft }
        let unread = try #require(list.first { !$0.seen })
        let plain = try #require(list.first { !$0.flagged && $0.uid != unread.uid })
        let config = h.dir + "/notmuch-config"
        try "[database]\npath=\(h.maildir)\n[new]\ntags=inbox\n[maildir]\nsynchronize_flags=true\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let env = ["NOTMUCH_CONFIG": config]
        func id(_ m: SimMessage) -> String { m.messageId.trimmingCharacters(in: CharacterSet(charactersIn: "<>")) }
        #expect(try shell("notmuch new", env: env).0 == 0)
        #expect(try shell("notmuch tag -unread -- id:\(id(unread))", env: env).0 == 0)
        #expect(try shell("notmuch tag +flagged -- id:\(id(plain))", env: env).0 == 0)
        try h.sync()
        let after = Dictionary(uniqueKeysWithValues: h.account.messages(mailboxId: work).map { ($0.uid, $0) })
        #expect(after[unread.uid]?.seen == true)
        #expect(after[plain.uid]?.flagged == true)
        // And back: the server's change reaches notmuch's tags through the file name.
        try h.account.setFlags(mailboxId: work, uid: plain.uid, flagged: false)
        try h.sync()
        #expect(try shell("notmuch new", env: env).0 == 0)
        let (_, tags) = try shell("notmuch search --output=tags -- id:\(id(plain))", env: env)
        #expect(!tags.contains("flagged"), "\(tags)")
        try TwoWayTests.expectQuiet(h)
    }
}

extension String {
    /// Maildir flag letters in ASCII order, each once.
    var sortedLetters: String { String(Set(self).sorted()) }
}
