import Foundation
import Testing
import WildDuckSim

/// What WildDuck does that a kinder server would not, and wdsync must live with (the simulator
/// does each by default; docs/wildduck-api.md cites where WildDuck does it): requests whose head
/// reaches 16 KiB are refused with 431, hidden mailboxes are left out of a plain mailbox
/// listing, and `POST /authenticate` answers 403 for a rate limit or a database error too.
@Suite(.serialized) struct WildDuckLimitsTests {
    /// Thousands of new messages read from the journal: their uids as one search would make a
    /// URL over the limit (4 digits and an escaped comma each), so they go in several searches.
    @Test func manyNewUidsAreSearchedInRequestsTheServerAccepts() throws {
        let h = try Harness()
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        try h.account.generate(count: 20, mailboxIds: [inbox], seed: 1, sizeMix: .small)
        try h.sync()
        // Journaled after the second in which the last pass started (see JournalTests.journalLater).
        h.account.setClock { Date().addingTimeInterval(2) }
        try h.account.generate(count: 3000, mailboxIds: [inbox], seed: 2, sizeMix: .small)
        h.server.resetStats()
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        let stats = h.server.stats()
        #expect(stats["431"] == 0)
        #expect(stats["messages"] == 0, "INBOX was listed instead of read from the journal: \(run.stderr)")
        #expect(stats["search"] >= 2, "\(stats.perRoute)")
        #expect(stats["message.eml"] == 3000)
    }

    /// A hidden mailbox is backed up like any other, and hiding or showing one is not a
    /// deletion or a new mailbox: nothing is removed, moved or downloaded again.
    @Test func hiddenMailboxesAreMirroredAndHidingOneChangesNothing() throws {
        let h = try Harness()
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        let archive = try h.account.createMailbox(path: "Archive", specialUse: nil, hidden: true, retention: nil, encryptMessages: false)
        let work = try h.account.createMailbox(path: "Work")
        try h.account.generate(count: 60, mailboxIds: [inbox, archive, work], seed: 5, sizeMix: .small)
        try h.sync()
        try h.expectMirror()
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/Archive/cur")
                || FileManager.default.fileExists(atPath: h.maildir + "/Archive/new"))
        let before = h.snapshot()
        for hidden in [true, false] {
            try h.account.updateMailbox(id: work, hidden: hidden)
            h.server.resetStats()
            try h.sync()
            try h.expectMirror()
            #expect(h.snapshot() == before, "hidden: \(hidden)")
            #expect(h.server.stats()["message.eml"] == 0)
        }
    }

    /// Someone else's wrong guesses lock the user out for two minutes: the same 403 as a wrong
    /// password, with another code. wdsync tries again like after any passing failure, and exits
    /// with the server-error code instead of "authentication failed" when it still cannot.
    @Test func aRateLimitedLoginIsATemporaryFailure() throws {
        let h = try Harness()
        try h.seedStandard(generated: 10)
        for _ in 0..<12 { #expect(h.account.authenticate(password: "a guess") == .refused) }
        h.server.resetStats()
        let refused = try h.run()
        #expect(refused.status == 76, "\(refused.stderr)")
        #expect(refused.stderr.contains("RateLimitedError"), "\(refused.stderr)")
        #expect(h.server.stats()["authenticate"] == 5, "\(h.server.stats().perRoute)")
        h.account.setClock { Date().addingTimeInterval(121) }
        try h.sync()
        try h.expectMirror()
    }

    @Test func aDatabaseErrorWhileAuthenticatingIsTriedAgain() throws {
        let h = try Harness()
        try h.seedStandard(generated: 10)
        h.server.injectFault(.status(403, body: #"{"error":"MongoDB Error: connection pool closed","code":"InternalDatabaseError"}"#),
                             on: "authenticate", count: 2)
        try h.sync()
        try h.expectMirror()
        #expect(h.server.stats()["authenticate"] == 3)
    }

    @Test func theDaemonWaitsOutARateLimit() throws {
        let h = try Harness()
        try h.seedStandard(generated: 10)
        for _ in 0..<12 { #expect(h.account.authenticate(password: "a guess") == .refused) }
        let daemon = try h.startDaemon(extra: ["--reconnect-delay", "100", "--max-reconnect-delay", "300"])
        #expect(daemon.waitForLog("RateLimitedError"), "\(daemon.log.suffix(2000))")
        #expect(daemon.process.isRunning, "\(daemon.log.suffix(2000))")
        h.account.setClock { Date().addingTimeInterval(121) }
        try h.expectMirrorEventually()
        #expect(daemon.terminate() == 0, "\(daemon.log.suffix(2000))")
    }
}
