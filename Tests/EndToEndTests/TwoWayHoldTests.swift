#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Testing
import WildDuckSim

/// The pending-mutation rule in the daemon: a server update for a message whose move or upload
/// has not been confirmed is held back until the push settles it, so the moved or uploaded
/// file is never downloaded a second time and never left behind untracked.
@Suite(.serialized) struct TwoWayHoldTests {
    /// How the push fails: the server answers 500 (nothing was done), or it does the move and
    /// the answer is lost (the connection breaks halfway through it).
    enum Failure: String, CaseIterable, Sendable { case error500, lostAnswer }

    /// Files in a folder's cur/ and new/ holding a message with this Message-ID or subject.
    static func copies(_ h: Harness, folder: String, containing marker: String) -> [String] {
        var found: [String] = []
        for sub in ["cur", "new"] {
            let dir = h.maildir + "/" + folder + "/" + sub
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
                if let data = FileManager.default.contents(atPath: dir + "/" + name),
                   String(decoding: data, as: UTF8.self).contains(marker) { found.append(sub + "/" + name) }
            }
        }
        return found
    }

    @Test(arguments: Failure.allCases)
    func aMoveWhosePushFailedIsNotDownloadedAgain(_ failure: Failure) throws {
        let h = try TwoWayTests.synced()
        let work = try TwoWayTests.mailbox(h, "Work"), projects = try TwoWayTests.mailbox(h, "Work/Projects")
        let m = try #require(h.account.messages(mailboxId: work).first { $0.seen && !$0.flagged && !$0.deleted })
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log.suffix(2000))")
        switch failure {
        case .error500: h.server.injectFault(.status(500, body: "{\"error\":\"Internal error\"}"), on: "messages", count: 100)
        case .lostAnswer:
            // Every try of the request (the HTTP layer tries a PUT five times in the tests) loses
            // its answer, so the server's events about the move arrive while it is pending.
            h.server.injectFault(.truncateBody, on: "messages", count: 5)
        }
        h.server.resetStats()
        try TwoWayTests.rename(h, try #require(TwoWayTests.file(h, work, m.uid)), flags: Harness.letters(m), folder: "Work/Projects")
        #expect(Harness.wait(timeout: 20) { h.server.stats()["messages"] >= 1 }, "the move was not sent: \(daemon.log.suffix(2000))")
        if failure == .error500 {
            // Another client flags the message meanwhile; that event reaches the daemon first.
            try h.account.setFlags(mailboxId: work, uid: m.uid, flagged: true)
            #expect(Harness.wait(timeout: 20) {
                (try? Store(path: h.db).message(mailboxId: work, uid: m.uid))??.baseFlags.contains(.flagged) == true
            }, "the server's change was not applied: \(daemon.log.suffix(2000))")
            #expect(Self.copies(h, folder: "Work/Projects", containing: m.messageId).count == 1)
            h.server.clearFaults()
        }
        // The push is tried again on its own and the move goes through once.
        #expect(Harness.wait(timeout: 30) {
            !h.account.messages(mailboxId: work).contains { $0.messageId == m.messageId }
                && h.account.messages(mailboxId: projects).filter { $0.messageId == m.messageId }.count == 1
                && (try? Store(path: h.db).outboxCount()) == 0
        }, "the move did not reach the server: \(daemon.log.suffix(3000))")
        try h.expectMirrorEventually()
        #expect(Self.copies(h, folder: "Work/Projects", containing: m.messageId).count == 1, "the moved message is on disk twice")
        #expect(h.server.stats()["message.eml"] == 0, "the moved message was downloaded")
        #expect(daemon.terminate() == 0, "\(daemon.log.suffix(2000))")
        #expect(h.account.messages(mailboxId: projects).filter { $0.messageId == m.messageId }.count == 1)
        try TwoWayTests.expectQuiet(h)
    }

    @Test(arguments: Failure.allCases)
    func anUploadWhosePushFailedIsNotDownloadedAgain(_ failure: Failure) throws {
        let h = try TwoWayTests.synced()
        let sent = try TwoWayTests.mailbox(h, "Sent Mail")
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log.suffix(2000))")
        switch failure {
        case .error500: h.server.injectFault(.status(503, body: "{\"error\":\"Service Unavailable\"}"), on: "messages", count: 100)
        case .lostAnswer: h.server.injectFault(.truncateBody, on: "messages")
        }
        h.server.resetStats()
        // Written by mutt's `record`, without a Message-ID: only its date and subject identify it.
        let subject = "Held back \(failure.rawValue)"
        let text = "From: Me <me@example.org>\nTo: You <you@example.org>\nSubject: \(subject)\nDate: Mon, 16 Jun 2025 12:00:00 +0000\n\nNo Message-ID here.\n"
        let rel = "Sent Mail/cur/1750000000.M7P4242.testhost,S=\(text.utf8.count):2,S"
        try Data(text.utf8).write(to: URL(fileURLWithPath: h.maildir + "/" + rel))
        var times = [timespec(tv_sec: 1_750_000_000, tv_nsec: 0), timespec(tv_sec: 1_750_000_000, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, h.maildir + "/" + rel, &times, 0) == 0)
        #expect(Harness.wait(timeout: 20) { h.server.stats()["messages"] >= 1 }, "the upload was not sent: \(daemon.log.suffix(2000))")
        if failure == .error500 {
            // A message arrives in the same mailbox meanwhile.
            try h.account.deliver(Array("From: a@example.org\r\nSubject: other\r\nMessage-ID: <other@example.org>\r\n\r\nx\r\n".utf8), to: sent)
            #expect(Harness.wait(timeout: 20) { !Self.copies(h, folder: "Sent Mail", containing: "<other@example.org>").isEmpty },
                    "\(daemon.log.suffix(3000))")
            h.server.clearFaults()
        }
        #expect(Harness.wait(timeout: 30) {
            h.account.messages(mailboxId: sent).filter { $0.subject == subject }.count == 1
                && (try? Store(path: h.db).outboxCount()) == 0
        }, "the upload did not reach the server: \(daemon.log.suffix(3000))")
        #expect(daemon.terminate() == 0, "\(daemon.log.suffix(2000))")
        // (The server's copy of an upload is rebuilt with CRLF, so it is compared by count.)
        #expect(Self.copies(h, folder: "Sent Mail", containing: subject).count == 1, "the uploaded message is on disk twice")
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/" + rel))
        #expect(h.server.stats()["message.eml"] == (failure == .error500 ? 1 : 0), "the uploaded message was downloaded")
        #expect(h.account.messages(mailboxId: sent).filter { $0.subject == subject }.count == 1, "uploaded twice")
        try TwoWayTests.expectQuiet(h)
    }

    /// Two pushes fail in a row (a second new file wakes the daemon while the first retry waits
    /// out its backoff); the scan that falls due before the second retry must not forget it: the
    /// uploads go out within seconds of the server answering again, not at the next periodic
    /// scan a minute later.
    @Test func aRetryWaitingOutItsBackoffIsNotForgottenByAScan() throws {
        let h = try TwoWayTests.synced()
        let sent = try TwoWayTests.mailbox(h, "Sent Mail")
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log.suffix(2000))")
        h.server.injectFault(.status(503, body: "{\"error\":\"Service Unavailable\"}"), on: "messages", count: 1000)
        h.server.resetStats()
        func write(_ n: Int) throws {
            let text = "From: Me <me@example.org>\nSubject: Backoff \(n)\nMessage-ID: <backoff\(n)@example.org>\nDate: Mon, 16 Jun 2025 12:00:00 +0000\n\nx\n"
            let path = h.maildir + "/Sent Mail/cur/175000000\(n).M1P1.testhost:2,S"
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            var times = [timespec(tv_sec: 1_750_000_000, tv_nsec: 0), timespec(tv_sec: 1_750_000_000, tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
        }
        try write(1)
        #expect(Harness.wait(timeout: 20) { h.server.stats()["messages"] >= 1 }, "the upload was not sent: \(daemon.log.suffix(2000))")
        try write(2)
        #expect(Harness.wait(timeout: 20) { h.server.stats()["messages"] >= 3 }, "the second push was not tried: \(daemon.log.suffix(2000))")
        h.server.clearFaults()
        #expect(Harness.wait(timeout: 15) {
            h.account.messages(mailboxId: sent).filter { $0.subject.hasPrefix("Backoff ") }.count == 2
        }, "the uploads waited for the next periodic scan: \(daemon.log.suffix(3000))")
        #expect(daemon.terminate() == 0, "\(daemon.log.suffix(2000))")
    }
}
