#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Testing
import WildDuckSim

/// The Maildir wdsync reads as local changes is always the one its cache last wrote: a Maildir
/// restored from a backup, an empty directory where the disk did not mount, a root moved away
/// under the daemon are refused (74, nothing changed); a cache restored from a backup or
/// deleted takes the files that are there, without a second copy on either side.
@Suite(.serialized) struct MaildirIdentityTests {
    static func message(_ n: Int, _ tag: String) -> [UInt8] {
        Array("From: a@example.org\r\nTo: demo@example.org\r\nSubject: \(tag) \(n)\r\nMessage-ID: <\(tag)-\(n)@example.org>\r\nDate: Mon, 16 Jun 2025 12:00:00 +0000\r\n\r\nbody \(n)\r\n".utf8)
    }

    /// Every file under the root but the marker.
    static func mailFiles(_ h: Harness) -> Set<String> { Set(h.snapshot().keys) }

    /// The marker's inode and contents: a run that changes nothing leaves both alone.
    static func marker(_ h: Harness) -> (UInt64, String)? {
        var st = stat()
        guard stat(h.maildir + "/.wdsync-state", &st) == 0,
              let text = try? String(contentsOfFile: h.maildir + "/.wdsync-state", encoding: .utf8) else { return nil }
        return (UInt64(st.st_ino), text)
    }

    /// A message you wrote, with CRLF line ends: the server's copy has the same bytes, so the
    /// Maildir can be compared with the server byte for byte once it is uploaded.
    @discardableResult
    static func writeMine(_ h: Harness, folder: String, messageId: String) throws -> String {
        let text = "From: Me <me@example.org>\r\nTo: You <you@example.org>\r\nSubject: mine\r\nMessage-ID: <\(messageId)>\r\nDate: Mon, 16 Jun 2025 12:00:00 +0000\r\n\r\nwritten by hand\r\n"
        let rel = "\(folder)/cur/1750000000.M1P4242.testhost:2,S"
        try Data(text.utf8).write(to: URL(fileURLWithPath: h.maildir + "/" + rel))
        // Its date as mtime, as mutt sets it: a file written just now is not uploaded until it
        // has stopped changing for 2 s (see LocalScan.quietSeconds).
        var times = [timespec(tv_sec: 1_750_000_000, tv_nsec: 0), timespec(tv_sec: 1_750_000_000, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, h.maildir + "/" + rel, &times, 0) == 0)
        return rel
    }

    /// Copies the Maildir root aside, keeping modes and times (a backup).
    static func backup(_ h: Harness) throws -> String {
        let copy = h.dir + "/backup-\(UUID().uuidString.prefix(6))"
        let (status, out) = try shell("cp -a '\(h.maildir)' '\(copy)'")
        #expect(status == 0, "\(out)")
        return copy
    }

    static func restore(_ h: Harness, from copy: String) throws {
        let (status, out) = try shell("rm -rf '\(h.maildir)' && cp -a '\(copy)' '\(h.maildir)'")
        #expect(status == 0, "\(out)")
    }

    @Test func aMaildirRestoredFromABackupIsRefusedThenAdopted() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        let copy = try Self.backup(h)
        // Since the backup: 9 new messages (under the mass-delete breaker's 10), one expunged
        // on the server, one message read on the server.
        for n in 1...9 { try h.account.deliver(Self.message(n, "after-backup"), to: work) }
        let gone = try #require(h.account.messages(mailboxId: work).first)
        try h.account.expunge(mailboxId: work, uid: gone.uid)
        try h.sync()
        try Self.restore(h, from: copy)
        // Your own mail written into the restored Maildir before you notice.
        let mine = try Self.writeMine(h, folder: "Work", messageId: "mine-1@example.org")

        let total = h.totalServerMessages
        let server = TwoWayTests.serverState(h)
        let files = h.snapshot()
        h.server.resetStats()
        let refused = try h.run()
        #expect(refused.status == 74, "\(refused.stderr)")
        #expect(refused.stderr.contains("is not the one this cache last wrote: it is older"), "\(refused.stderr)")
        #expect(refused.stderr.contains("--adopt-maildir"), "\(refused.stderr)")
        #expect(h.totalServerMessages == total, "the restored Maildir deleted or uploaded mail")
        #expect(TwoWayTests.serverState(h) == server, "the restored Maildir changed the server")
        #expect(h.snapshot() == files, "the refused run changed files")
        #expect(h.server.stats()["message.eml"] == 0)

        // The way on: nothing sent from the old Maildir, only what it lacks is downloaded.
        h.server.resetStats()
        let adopted = try h.sync(extra: ["--adopt-maildir"])
        #expect(h.server.stats()["message.eml"] == 9, "\(adopted.stderr)")
        #expect(h.totalServerMessages == total + 1, "only your own new message is uploaded")
        #expect(TwoWayTests.messages(h, withId: "mine-1@example.org").count == 1)
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/" + mine), "your own file was lost")
        #expect(!h.account.messages(mailboxId: work).contains { $0.messageId == gone.messageId }, "the expunged message came back")
        // Its stale file is kept, out of the way.
        let aside = Self.mailFiles(h).filter { $0.hasPrefix("%wdsync-set-aside/") }
        #expect(aside.count == 1, "\(aside)")
        #expect(adopted.stderr.contains("%wdsync-set-aside"), "\(adopted.stderr)")
        try h.expectMirror()
        try TwoWayTests.expectQuiet(h)
    }

    @Test func anEmptyDirectoryWhereTheMaildirWasIsRefused() throws {
        let h = try TwoWayTests.synced()
        // The disk mounted late: the root is an empty mount point.
        #expect(rename(h.maildir, h.dir + "/unmounted") == 0)
        #expect(mkdir(h.maildir, 0o700) == 0)
        let total = h.totalServerMessages
        let server = TwoWayTests.serverState(h)
        h.server.resetStats()
        let r = try h.run()
        #expect(r.status == 74, "\(r.stderr)")
        #expect(r.stderr.contains("has no .wdsync-state"), "\(r.stderr)")
        #expect(h.server.stats()["message.eml"] == 0, "the empty directory was filled again")
        #expect(h.totalServerMessages == total && TwoWayTests.serverState(h) == server)
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: h.maildir)) ?? ["?"]).isEmpty)
        // Mounted again, all is well.
        #expect(rmdir(h.maildir) == 0 && rename(h.dir + "/unmounted", h.maildir) == 0)
        try TwoWayTests.expectQuiet(h)

        // Or the user means a new, empty Maildir: --adopt-maildir fills it, sending nothing.
        #expect(rename(h.maildir, h.dir + "/old") == 0 && mkdir(h.maildir, 0o700) == 0)
        h.server.resetStats()
        try h.sync(extra: ["--adopt-maildir"])
        #expect(h.server.stats()["message.eml"] == total)
        #expect(TwoWayTests.serverState(h) == server)
        try h.expectMirror()
        // The old one is now older than the cache.
        #expect(rename(h.maildir, h.dir + "/new") == 0 && rename(h.dir + "/old", h.maildir) == 0)
        let old = try h.run()
        #expect(old.status == 74 && old.stderr.contains("it is older"), "\(old.stderr)")
        #expect(TwoWayTests.serverState(h) == server)
    }

    /// A flag change read from the Maildir but not sent yet (here held by --pull-only; in the
    /// daemon, a T still settling) when the root was replaced by an empty directory: the person
    /// adopts the empty one, and every file is written with the server's flags. The dropped
    /// change must not come back in the new file's name, where it would never reach the server
    /// (issue 19, found by wdsync-torture).
    @Test func anAdoptedEmptyRootCarriesNoDroppedFlagChange() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        let m = try #require(h.account.messages(mailboxId: work).first { $0.seen && !$0.flagged && !$0.deleted })
        let file = try #require(TwoWayTests.file(h, work, m.uid))
        try TwoWayTests.rename(h, file, flags: (Harness.letters(m) + "F").sortedLetters)
        try h.sync(extra: ["--pull-only"])
        #expect(h.account.messages(mailboxId: work).first { $0.uid == m.uid }?.flagged == false)
        #expect(rename(h.maildir, h.dir + "/unmounted") == 0 && mkdir(h.maildir, 0o700) == 0)
        let server = TwoWayTests.serverState(h)
        try h.sync(extra: ["--adopt-maildir"])
        #expect(TwoWayTests.serverState(h) == server, "the adoption sent something")
        let now = try #require(TwoWayTests.file(h, work, m.uid))
        #expect(!(now.components(separatedBy: ":2,").last ?? "F").contains("F"), "\(now)")
        try h.expectMirror()
        try TwoWayTests.expectQuiet(h)
    }

    @Test func theDaemonStopsWhenItsMaildirIsMovedAway() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        let daemon = try h.startDaemon(extra: ["--poll-interval", "3600"])
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log.suffix(2000))")
        try h.expectMirrorEventually()
        // A live change moves the generation on within a second or so: a copy taken before it
        // is older than the cache from then on.
        func generation() -> Int? {
            Self.marker(h)?.1.split(separator: "\n").first { $0.hasPrefix("generation ") }.flatMap { Int($0.dropFirst(11)) }
        }
        _ = Harness.wait(timeout: 5) { generation() != nil }
        let before = try #require(generation())
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        try h.account.deliver(Self.message(0, "live"), to: inbox)
        try h.expectMirrorEventually()
        #expect(Harness.wait(timeout: 10) { (generation() ?? 0) > before }, "the generation did not move after a live change")
        #expect(rename(h.maildir, h.dir + "/moved") == 0)
        h.server.resetStats()
        try h.account.deliver(Self.message(1, "while-moved"), to: inbox)
        let stopped = Harness.wait(timeout: 20) { !daemon.process.isRunning }
        #expect(stopped, "the daemon kept running: \(daemon.log.suffix(2000))")
        if stopped { #expect(daemon.process.terminationStatus == 74, "\(daemon.log.suffix(2000))") }
        #expect(daemon.log.contains("changed under wdsync"), "\(daemon.log.suffix(2000))")
        #expect(!FileManager.default.fileExists(atPath: h.maildir), "the daemon created the root again")
        #expect(h.server.stats()["message.eml"] == 0)
    }

    /// A copy with the same marker put in the root's place (`cp -a` of it, a message removed in
    /// the copy) is another directory all the same: the daemon stops at its next scan and sends
    /// nothing — a scan that read some folders before such a swap and some after would read a
    /// message moved between them as a delete.
    @Test func theDaemonStopsWhenItsMaildirIsReplacedByACopy() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        let daemon = try h.startDaemon(extra: ["--poll-interval", "3600"])
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log.suffix(2000))")
        try h.expectMirrorEventually()
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        let m = try #require(h.account.messages(mailboxId: inbox).first)
        let copy = try Self.backup(h)
        let file = try #require(TwoWayTests.file(h, inbox, m.uid))
        #expect(unlink(copy + "/" + file) == 0)
        let server = TwoWayTests.serverState(h)
        #expect(rename(h.maildir, h.dir + "/old") == 0 && rename(copy, h.maildir) == 0)
        daemon.signal(SIGUSR1)
        let stopped = Harness.wait(timeout: 20) { !daemon.process.isRunning }
        #expect(stopped, "the daemon kept running: \(daemon.log.suffix(2000))")
        if stopped { #expect(daemon.process.terminationStatus == 74, "\(daemon.log.suffix(2000))") }
        #expect(daemon.log.contains("changed under wdsync"), "\(daemon.log.suffix(2000))")
        #expect(TwoWayTests.serverState(h) == server, "the daemon wrote to the server")
        #expect(h.account.messages(mailboxId: inbox).contains { $0.uid == m.uid })
    }

    /// The daemon moves the generation before it records a change read from the Maildir, not a
    /// second later: a copy taken before the change and put in the root's place right after it
    /// is older than the cache, and the next run refuses it instead of taking it for the
    /// Maildir it last wrote (and reading the change back out of it).
    @Test func aCopyFromBeforeADaemonsChangeIsOlderAtOnce() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        let m = try #require(h.account.messages(mailboxId: work).first { !$0.flagged && !$0.deleted })
        let file = try #require(TwoWayTests.file(h, work, m.uid))
        let copy = try Self.backup(h)
        let daemon = try h.startDaemon(extra: ["--poll-interval", "3600"])
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log.suffix(2000))")
        try TwoWayTests.rename(h, file, flags: (Harness.letters(m) + "F").sortedLetters)
        #expect(Harness.wait(timeout: 10) { h.account.messages(mailboxId: work).first { $0.uid == m.uid }?.flagged == true },
                "\(daemon.log.suffix(2000))")
        #expect(rename(h.maildir, h.dir + "/old") == 0 && rename(copy, h.maildir) == 0)
        _ = daemon.terminate()
        let r = try h.run()
        #expect(r.status == 74, "a copy from before the daemon's change was taken as the Maildir: \(r.stderr)")
        #expect(h.account.messages(mailboxId: work).first { $0.uid == m.uid }?.flagged == true, "the change was undone")
    }

    /// A cache restored from a backup goes on along another history than the Maildir copies
    /// taken since. Counting generations by one, it came back to the generation of such a copy,
    /// and the copy, restored later, was taken for the Maildir the cache last wrote: a message
    /// gone from the server stayed in it for good. The copy is refused or adopted instead.
    @Test func aMaildirCopyFromAnotherHistoryIsNotTakenForTheCachesOwn() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        let oldMaildir = try Self.backup(h)
        var (status, out) = try shell("cp -a '\(h.db)' '\(h.db).old'")
        #expect(status == 0, "\(out)")
        try h.account.deliver(Self.message(1, "gone-later"), to: work)
        try h.sync()
        let copy = try Self.backup(h)
        let gone = try #require(h.account.messages(mailboxId: work).first { $0.messageId == "<gone-later-1@example.org>" })
        try h.account.expunge(mailboxId: work, uid: gone.uid)
        try h.sync()
        // The old pair put back, and one pass with a download: as far from it as the copy.
        try Self.restore(h, from: oldMaildir)
        for suffix in ["-wal", "-shm"] { unlink(h.db + suffix) }
        (status, out) = try shell("cp -a '\(h.db).old' '\(h.db)'")
        #expect(status == 0, "\(out)")
        try h.account.deliver(Self.message(2, "since"), to: work)
        try h.sync()
        try Self.restore(h, from: copy)
        let r = try h.run()
        if r.status == 74 {
            #expect(try h.run(extra: ["--adopt-maildir"]).status == 0)
        } else {
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stderr.contains("older than the Maildir"), "the copy was taken for the cache's own Maildir: \(r.stderr)")
        }
        try h.expectMirror()
    }

    @Test func aCacheRestoredFromABackupUploadsNothingTwice() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        let (status, out) = try shell("cp -a '\(h.db)' '\(h.db).backup'")
        #expect(status == 0, "\(out)")
        // Since the backup: mail downloaded, a flag changed locally, your own message uploaded,
        // a message moved on the server.
        for n in 1...5 { try h.account.deliver(Self.message(n, "after-cache-backup"), to: work) }
        try h.sync()
        let m = try #require(h.account.messages(mailboxId: work).first { !$0.flagged && !$0.deleted })
        try TwoWayTests.rename(h, try #require(TwoWayTests.file(h, work, m.uid)), flags: (Harness.letters(m) + "F").sortedLetters)
        try Self.writeMine(h, folder: "Work", messageId: "sent-1@example.org")
        try h.sync()
        let projects = try TwoWayTests.mailbox(h, "Work/Projects")
        let moved = try #require(h.account.messages(mailboxId: work).first { $0.messageId == "<after-cache-backup-1@example.org>" })
        _ = try h.account.move(mailboxId: work, uid: moved.uid, to: projects)
        try h.sync()

        for suffix in ["-wal", "-shm"] { unlink(h.db + suffix) }
        #expect(rename(h.db + ".backup", h.db) == 0)
        let total = h.totalServerMessages
        let files = Self.mailFiles(h)
        h.server.resetStats()
        let r = try h.run()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(h.totalServerMessages == total, "a restored cache uploaded mail again: \(r.stderr)")
        #expect(h.server.stats()["message.eml"] == 0, "a restored cache downloaded what is on disk")
        #expect(Self.mailFiles(h).count == files.count, "a second file appeared")
        // The file flagged in cur/ stays there, read or not (where the reader put it).
        try h.expectMirror(old: ["\(work) \(m.uid)"])
        let again = try h.run()
        #expect(again.status == 0, "\(again.stderr)")
        try TwoWayTests.expectQuiet(h)
    }

    /// mutt saves a message into another folder by writing the copy first and removing the
    /// original later. An older cache that adopts the Maildir in between must keep the copy as
    /// the person's mail (a copy of a message of another mailbox is not a second copy), or the
    /// removal that follows deletes the message on the server and leaves it nowhere.
    @Test func aMuttSaveHalfDoneWhenAnOlderCacheComesBackLosesNothing() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        let (status, out) = try shell("cp -a '\(h.db)' '\(h.db).backup'")
        #expect(status == 0, "\(out)")
        try h.account.deliver(Self.message(1, "after-cache-backup"), to: work)
        try h.sync()
        let m = try #require(h.account.messages(mailboxId: work).first { !$0.deleted })
        let original = try #require(TwoWayTests.file(h, work, m.uid))
        let copy = "INBOX/cur/1750000000.M2P4242.testhost:2,S"
        try FileManager.default.copyItem(atPath: h.maildir + "/" + original, toPath: h.maildir + "/" + copy)
        var times = [timespec(tv_sec: 1_750_000_000, tv_nsec: 0), timespec(tv_sec: 1_750_000_000, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, h.maildir + "/" + copy, &times, 0) == 0)

        for suffix in ["-wal", "-shm"] { unlink(h.db + suffix) }
        #expect(rename(h.db + ".backup", h.db) == 0)
        let r = try h.run()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/" + copy), "the copy was set aside: \(r.stderr)")
        // mutt finishes its save.
        #expect(unlink(h.maildir + "/" + original) == 0)
        let after = try h.run()
        #expect(after.status == 0, "\(after.stderr)")
        let everywhere = h.account.mailboxes().flatMap { h.account.messages(mailboxId: $0.id) }
        #expect(everywhere.contains { $0.messageId == m.messageId && !$0.deleted }, "the message is gone from the server: \(r.stderr)\n\(after.stderr)")
        try h.expectMirror()
        try TwoWayTests.expectQuiet(h)
    }

    @Test func aDeletedCacheMakesNoSecondFile() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        // Flags changed locally, then the cache is gone before they were sent.
        var renamed = Set<String>()
        for m in h.account.messages(mailboxId: work).filter({ !$0.flagged && !$0.deleted }).prefix(3) {
            try TwoWayTests.rename(h, try #require(TwoWayTests.file(h, work, m.uid)), flags: (Harness.letters(m) + "F").sortedLetters)
            renamed.insert("\(work) \(m.uid)")
        }
        for suffix in ["", "-wal", "-shm"] { unlink(h.db + suffix) }
        let total = h.totalServerMessages
        h.server.resetStats()
        let r = try h.run()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(h.server.stats()["message.eml"] == 0, "the files on disk were downloaded again")
        #expect(h.totalServerMessages == total, "\(r.stderr)")
        #expect(Self.mailFiles(h).count == total, "a second file appeared next to a message")
        // The files renamed into cur/ stay there, read or not (where the reader put them).
        try h.expectMirror(old: renamed)
        try TwoWayTests.expectQuiet(h)
    }

    /// Outside an adoption too: a file with wdsync's own name is never uploaded. One restored
    /// by hand for a message the server no longer has is left alone; one renamed to another
    /// host part is still its message.
    @Test func aFileWithWdsyncsNameIsNeverUploaded() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        let list = h.account.messages(mailboxId: work)
        let gone = try #require(list.first)
        let file = try #require(TwoWayTests.file(h, work, gone.uid))
        let saved = h.dir + "/saved-message"
        try FileManager.default.copyItem(atPath: h.maildir + "/" + file, toPath: saved)
        try h.account.expunge(mailboxId: work, uid: gone.uid)
        try h.sync()
        #expect(!FileManager.default.fileExists(atPath: h.maildir + "/" + file))
        try FileManager.default.copyItem(atPath: saved, toPath: h.maildir + "/" + file)
        let kept = try #require(list.dropFirst().first)
        let keptFile = try #require(TwoWayTests.file(h, work, kept.uid))
        let renamed = keptFile.replacingOccurrences(of: ".\(ProcessInfo.processInfo.hostName)", with: ".otherhost")
        #expect(renamed != keptFile && rename(h.maildir + "/" + keptFile, h.maildir + "/" + renamed) == 0)
        let total = h.totalServerMessages
        h.server.resetStats()
        let r = try h.sync()
        #expect(h.totalServerMessages == total, "a file with wdsync's name was uploaded or deleted: \(r.stderr)")
        #expect(h.account.messages(mailboxId: work).contains { $0.uid == kept.uid })
        #expect(r.stderr.contains("not uploaded"), "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/" + file), "the restored file was removed")
        #expect(h.server.stats()["message.eml"] == 0)
        try TwoWayTests.expectQuiet(h)
    }

    /// A marker whose generation is out of range (edited by hand, or damaged) is a marker that
    /// cannot be read: refused with a clear error, not a crash when the next step adds to it.
    @Test func aMarkerWithAnOutOfRangeGenerationIsRefused() throws {
        let h = try TwoWayTests.synced()
        let path = h.maildir + "/.wdsync-state"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let edited = text.split(separator: "\n").map { $0.hasPrefix("generation ") ? "generation 9223372036854775807" : String($0) }
        try (edited.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let r = try h.run()
        #expect(r.status == 74, "\(r.stderr)")
        #expect(r.stderr.contains("cannot be read"), "\(r.stderr)")
        #expect(try h.run(extra: ["--adopt-maildir"]).status == 0)
        try h.expectMirror()
    }

    /// The marker's generation moves only when the Maildir changes: a run that changes
    /// nothing leaves it alone, and wdsync killed between the marker and the cache goes on.
    @Test func aKillBetweenTheMarkerAndTheCacheDoesNotWedge() throws {
        let h = try TwoWayTests.synced()
        let marker = h.maildir + "/.wdsync-state"
        let text = try String(contentsOfFile: marker, encoding: .utf8)
        let store = try Store(path: h.db)
        let state = try #require(try store.maildirState())
        #expect(text.contains("generation \(state.generation)\n") && text.contains("id \(state.maildirId)\n"))
        // The marker has the next generation, the cache recorded it only as pending.
        try store.setMaildirState(MaildirStateRecord(maildirId: state.maildirId, generation: state.generation, pending: state.generation + 1))
        try text.replacingOccurrences(of: "generation \(state.generation)", with: "generation \(state.generation + 1)")
            .write(toFile: marker, atomically: true, encoding: .utf8)
        try h.sync()
        #expect(try store.maildirState() == MaildirStateRecord(maildirId: state.maildirId, generation: state.generation + 1))
        let before = try #require(Self.marker(h))
        try TwoWayTests.expectQuiet(h)
        let after = try #require(Self.marker(h))
        #expect(before == after, "a run that changed nothing wrote the marker")
    }
}
