#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Testing
import WildDuckSim

/// Two-way never destroys mail: uploads only whole files, exactly once whatever happens to the
/// answer; bad server data never empties the mirror; a file stays where the reader put it; a
/// stopped daemon leaves nothing in tmp/.
@Suite(.serialized) struct NeverDestroysTests {
    /// A value shared with a writer thread.
    final class Shared<T: Sendable>: @unchecked Sendable {
        private let lock = NSLock()
        private var value: T
        init(_ value: T) { self.value = value }
        func withLock<R>(_ body: (inout T) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&value) }
    }

    /// The flag letters of a Maildir file name.
    static func letters(_ rel: String) -> String {
        let name = (rel as NSString).lastPathComponent
        return name.range(of: ":2,").map { String(name[$0.upperBound...]) } ?? ""
    }

    /// The server's messages in `mailbox` whose Message-ID or subject is the given one.
    static func copies(_ h: Harness, _ mailbox: String, subject: String) -> [SimMessage] {
        h.account.messages(mailboxId: mailbox).filter { $0.subject == subject }
    }

    /// Runs wdsync, killing it if it has not ended after `deadline` seconds (a run that never
    /// ends must fail the test, not hang it). Nil when it had to be killed.
    static func run(_ h: Harness, deadline: Double) throws -> RunResult? {
        let (p, out, err) = h.process(h.baseArguments)
        try p.run()
        let group = DispatchGroup()
        nonisolated(unsafe) var outData = Data(), errData = Data()
        DispatchQueue.global().async(group: group) { outData = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { errData = err.fileHandleForReading.readDataToEndOfFile() }
        let ended = Harness.wait(timeout: deadline) { !p.isRunning }
        if !ended { kill(p.processIdentifier, SIGKILL) }
        group.wait()
        p.waitUntilExit()
        guard ended else { return nil }
        return RunResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData, as: UTF8.self))
    }

    // MARK: Item 4: a file is uploaded only when it is complete

    /// `cat > cur/file` (or `cp`) writing a 300 KB message slowly in place: a run while it is
    /// being written uploads nothing; once it has stopped changing it is uploaded whole, once.
    @Test func inPlaceSlowWriteIsUploadedWhole() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        var text = "From: Me <me@example.org>\r\nTo: You <you@example.org>\r\nSubject: slow copy\r\nMessage-ID: <slow-copy@example.org>\r\nDate: Mon, 16 Jun 2025 12:00:00 +0000\r\n\r\n"
        var line = 0
        while text.utf8.count < 300 * 1024 {
            line += 1
            text += "line \(line) of a long message that is being copied into the Maildir slowly.\r\n"
        }
        let bytes = Array(text.utf8)
        let path = h.maildir + "/Work/cur/1750000000.M1P1.testhost:2,S"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        #expect(fd >= 0)
        let written = Shared(0)
        @Sendable func write(upTo end: Int) {
            let start = written.withLock { $0 }
            guard end > start else { return }
            let n = bytes[start..<end].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            written.withLock { $0 += max(0, n) }
        }
        write(upTo: 15 * 1024)
        // A writer that goes on, 1 KB every 50 ms, while wdsync runs (and stops well short of the end).
        let running = Shared(true)
        let writer = Thread {
            while running.withLock({ $0 }) {
                let now = written.withLock { $0 }
                if now < 200 * 1024 { write(upTo: now + 1024) }
                usleep(50_000)
            }
        }
        writer.start()
        let first = try h.run()
        running.withLock { $0 = false }
        #expect(Harness.wait(timeout: 10) { writer.isFinished })
        #expect(first.status == 0, "\(first.stderr)")
        #expect(Self.copies(h, work, subject: "slow copy").count == 0, "a file still being written was uploaded")

        // The rest, then the file is closed and left alone: uploaded whole.
        write(upTo: bytes.count)
        close(fd)
        #expect(written.withLock { $0 } == bytes.count)
        var st = stat()
        #expect(Harness.wait(timeout: 30) {
            stat(path, &st) == 0 && Date().timeIntervalSince1970 - (Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9) > 2.5
        })
        let second = try h.sync(extra: ["-v"])
        let copies = Self.copies(h, work, subject: "slow copy")
        #expect(copies.count == 1, "\(second.stderr)")
        #expect(copies.first.map { $0.raw == bytes } == true, "the server has \(copies.first?.raw.count ?? 0) bytes of \(bytes.count)")
        try TwoWayTests.expectQuiet(h)
    }

    /// The daemon sees a file appear in cur/ and grow (`cat > cur/file`): it uploads it once it
    /// has stopped changing, whole, once.
    @Test func daemonUploadsAFileWrittenInPlaceOnceItIsWhole() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected ("), "\(daemon.log.suffix(1500))")
        var text = "From: Me <me@example.org>\r\nSubject: grown in place\r\nMessage-ID: <grown@example.org>\r\n\r\n"
        while text.utf8.count < 300 * 1024 { text += "a line of a message written into cur/ a piece at a time\r\n" }
        let bytes = Array(text.utf8)
        let fd = open(h.maildir + "/Work/cur/1750000789.M3P3.testhost:2,S", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        #expect(fd >= 0)
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + 16 * 1024)
            let n = bytes[offset..<end].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            #expect(n == end - offset)
            offset = end
            usleep(100_000)
        }
        close(fd)
        #expect(Harness.wait(timeout: 60) { !Self.copies(h, work, subject: "grown in place").isEmpty }, "\(daemon.log.suffix(2000))")
        // Past the time a second upload would take, there is still one copy, and it is whole.
        usleep(3_000_000)
        let copies = Self.copies(h, work, subject: "grown in place")
        #expect(copies.count == 1)
        #expect(copies.first.map { $0.raw == bytes } == true, "the server has \(copies.first?.raw.count ?? 0) bytes of \(bytes.count)")
        #expect(daemon.terminate() == 0)
    }

    /// The server reports a stored size that does not fit what was sent (a body cut short on
    /// the way): reported, both copies kept, not uploaded again.
    @Test func aStoredSizeThatDoesNotFitKeepsBothCopies() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        let text = "From: Me <me@example.org>\r\nSubject: cut short\r\nMessage-ID: <cut-short@example.org>\r\n\r\n"
            + String(repeating: "a line of the body that the server did not get whole\r\n", count: 200)
        let rel = "Work/cur/1750000456.M9P9.testhost:2,S"
        try Data(text.utf8).write(to: URL(fileURLWithPath: h.maildir + "/" + rel))
        var times = [timespec(tv_sec: 1_750_000_456, tv_nsec: 0), timespec(tv_sec: 1_750_000_456, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, h.maildir + "/" + rel, &times, 0) == 0)
        h.server.injectFault(.rewrite(["\"size\":\(text.utf8.count)": "\"size\":900"]), on: "messages")
        let first = try h.run()
        #expect(first.stderr.contains("both are kept"), "\(first.stderr)")
        try h.sync()
        #expect(Self.copies(h, work, subject: "cut short").count == 1, "uploaded again")
        #expect(FileManager.default.contents(atPath: h.maildir + "/" + rel) == Data(text.utf8), "the local file changed")
        let files = h.snapshot().keys.filter { $0.hasPrefix("Work/") }
        let copies = files.filter { (try? String(contentsOfFile: h.maildir + "/" + $0, encoding: .utf8))?.contains("cut-short@example.org") == true }
        #expect(copies.count == 2, "\(copies)")
        #expect(try Store(path: h.db).outboxCount() == 1)
    }

    // MARK: Item 5: exactly once, whatever happens to the answer

    /// nginx in front of WildDuck answers 502 or 504 (an HTML page) after WildDuck stored the
    /// upload: the upload is found on the server, not sent again.
    @Test(arguments: [502, 504]) func gatewayAnswerAfterStoreMakesNoDuplicate(status: Int) throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        try TwoWayTests.writeNew(h, folder: "Work", flags: "S", messageId: "gateway-\(status)@example.org", subject: "behind nginx")
        h.server.injectFault(.gatewayAfterWrite(status: status), on: "messages")
        let first = try h.run()
        #expect(first.status == 0, "\(first.stderr)")
        try h.sync()
        try h.sync()
        #expect(Self.copies(h, work, subject: "behind nginx").count == 1, "the upload was stored twice")
        try TwoWayTests.expectQuiet(h)
    }

    /// The reply to an upload is lost (the connection closes after the server stored it), for
    /// messages WildDuck can only be searched for by their subject: without a Message-ID (a
    /// subject with runs of whitespace, which WildDuck folds), with an RFC 2047 subject, and
    /// without any subject.
    @Test(arguments: [
        ("Subject: Meeting\tnotes  for   Monday\r\n", "Meeting notes for Monday"),
        ("Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus?= =?ISO-8859-1?Q?M=FCnchen?=\r\n", "Grüße ausMünchen"),
        ("", ""),
    ])
    func lostReplyMakesNoDuplicate(subjectLine: String, stored: String) throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        let text = "From: Me <me@example.org>\r\nTo: You <you@example.org>\r\n\(subjectLine)Date: Mon, 16 Jun 2025 12:00:00 +0000\r\n\r\nno Message-ID here\r\n"
        let rel = "Work/cur/1750000123.M7P7.testhost:2,S"
        try Data(text.utf8).write(to: URL(fileURLWithPath: h.maildir + "/" + rel))
        var times = [timespec(tv_sec: 1_750_000_123, tv_nsec: 0), timespec(tv_sec: 1_750_000_123, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, h.maildir + "/" + rel, &times, 0) == 0)
        let before = Self.copies(h, work, subject: stored).count
        h.server.injectFault(.lostReplyAfterWrite, on: "messages")
        _ = try h.run()
        try h.sync()
        try h.sync()
        #expect(Self.copies(h, work, subject: stored).count == before + 1, "the upload was stored \(Self.copies(h, work, subject: stored).count - before) times")
        try TwoWayTests.expectQuiet(h)
    }

    // MARK: Item 6: bad server data never empties the mirror

    /// A mailbox list without INBOX (a broken proxy's empty success), or one that drops most
    /// mailboxes at once: refused with a clear error, nothing removed, the outbox kept.
    @Test(arguments: [false, true]) func badMailboxListIsRefused(inboxOnly: Bool) throws {
        let h = try TwoWayTests.synced()
        let inbox = try TwoWayTests.mailbox(h, "INBOX")
        // A pending local change that cannot be sent now (the server answers 503 to it).
        let file = try #require(h.snapshot().keys.sorted().first { ($0.hasPrefix("Work/cur/") || $0.hasPrefix("Work/new/")) && !Self.letters($0).contains("F") })
        try TwoWayTests.rename(h, file, flags: (Self.letters(file) + "F").sortedLetters)
        h.server.injectFault(.status(503, body: #"{"error":"busy"}"#), on: "messages", count: 5)
        var results = "[]"
        if inboxOnly {
            let box = try #require(h.account.mailboxes().first { $0.id == inbox })
            results = #"[{"id":"\#(inbox)","name":"INBOX","path":"INBOX","specialUse":null,"modifyIndex":\#(box.modifyIndex),"subscribed":true,"hidden":false,"total":\#(h.account.messages(mailboxId: inbox).count),"unseen":0}]"#
        }
        h.server.injectFault(.status(200, body: #"{"success":true,"results":\#(results)}"#), on: "mailboxes", count: 5)
        let files = Set(h.snapshot().keys)
        let result = try h.run()
        #expect(result.status != 0)
        #expect(result.stderr.contains(inboxOnly ? "no longer lists" : "no INBOX"), "\(result.stderr)")
        #expect(result.stderr.contains("nothing was removed locally"), "\(result.stderr)")
        #expect(Set(h.snapshot().keys) == files, "files were removed or added")
        let store = try Store(path: h.db)
        #expect(try store.outboxCount() == 1, "the pending change was discarded")
        #expect(try store.mailboxes().count == h.account.mailboxes().count)
        // Once the server answers properly, the change goes out and nothing was lost.
        h.server.clearFaults()
        try h.sync()
        let work = try TwoWayTests.mailbox(h, "Work")
        #expect(h.account.messages(mailboxId: work).contains { $0.flagged && file.contains(".wd\(work)_\($0.uid).") })
        try TwoWayTests.expectQuiet(h)
    }

    /// A listing whose cursor never advances ends the run with an error instead of paging forever.
    @Test func loopingCursorEndsTheRun() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        h.server.injectFault(.loopingCursor, on: "messages", count: 1_000_000)
        let run = try Self.run(h, deadline: 120)
        let result = try #require(run, "wdsync was still paging after two minutes")
        #expect(result.status != 0)
        #expect(result.stderr.contains("does not end"), "\(result.stderr)")
        h.server.clearFaults()
        try h.sync()
        try h.expectMirror()
    }

    // MARK: Item 7: a file stays where the reader put it

    /// mutt marks a message old (`cur/` without S); a server flag change renames it in cur/.
    @Test func oldMessageStaysInCurAfterServerFlagChange() throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work")
        let message = try #require(h.account.messages(mailboxId: work).first { !$0.seen && !$0.flagged && !$0.deleted })
        let file = try #require(TwoWayTests.file(h, work, message.uid))
        #expect(file.contains("/new/"))
        let old = try TwoWayTests.rename(h, file, flags: Self.letters(file))
        #expect(old.contains("/cur/"))
        try h.sync()
        try h.account.setFlags(mailboxId: work, uid: message.uid, flagged: true)
        try h.sync()
        let now = try #require(TwoWayTests.file(h, work, message.uid))
        #expect(now.contains("/cur/") && now.hasSuffix("F"), "\(now)")
    }

    /// SIGTERM while an expunged message's file is held back in tmp/ for a possible move: the
    /// daemon settles it before it exits.
    @Test func sigtermLeavesTmpEmpty() throws {
        let h = try TwoWayTests.synced()
        let inbox = try TwoWayTests.mailbox(h, "INBOX")
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected ("), "\(daemon.log.suffix(1500))")
        // Following live events (not in the middle of its first reconcile).
        try h.account.deliver(Array("From: a@x\r\nSubject: probe\r\nMessage-ID: <probe@x>\r\n\r\nx\r\n".utf8), to: inbox)
        try h.expectMirrorEventually()
        let victim = try #require(h.account.messages(mailboxId: inbox).first)
        let file = try #require(TwoWayTests.file(h, inbox, victim.uid))
        try h.account.expunge(mailboxId: inbox, uid: victim.uid)
        let hidden = h.maildir + "/INBOX/tmp/" + (file as NSString).lastPathComponent
        #expect(Harness.wait(timeout: 30) { FileManager.default.fileExists(atPath: hidden) }, "\(daemon.log.suffix(1500))")
        #expect(daemon.terminate(timeout: 30) == 0)
        for mailbox in h.account.mailboxes() {
            let tmp = h.maildir + "/" + mailbox.path + "/tmp"
            let left = (try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []
            #expect(left.isEmpty, "\(tmp) holds \(left)")
        }
        try h.sync()
        try h.expectMirror()
    }
}
