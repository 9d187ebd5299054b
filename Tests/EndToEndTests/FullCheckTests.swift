import Foundation
import Store
import Testing
import WildDuckSim

/// The safety net: a full listing of every mailbox, compared with the cache, once per
/// `full-check-interval` and with `--full-check`, whatever the journal and `modifyIndex` say.
@Suite(.serialized) struct FullCheckTests {
    /// A synced account whose cache then loses one message and has another's flags wrong,
    /// without any change on the server: what a defect in the incremental sync would leave.
    func damaged(_ h: Harness) throws -> String {
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        try h.account.generate(count: 60, mailboxIds: [inbox], seed: 21, sizeMix: .small)
        try h.sync()
        try h.sync()
        let store = try Store(path: h.db)
        let messages = h.account.messages(mailboxId: inbox)
        let lost = try #require(messages.first)
        let wrong = try #require(messages.last)
        try store.transaction {
            try store.removeMessage(mailboxId: inbox, uid: lost.uid)
            try store.updateFlags(mailboxId: inbox, uid: wrong.uid, flags: wrong.flagged ? [] : [.flagged], json: nil)
        }
        // The next pass writes the damage to the Maildir and, with nothing changed, sees nothing.
        try h.sync()
        #expect(!h.mirrorDifferences().isEmpty)
        return inbox
    }

    @Test func onDemandItRepairsAndReportsWhatTheCacheGotWrong() throws {
        let h = try Harness()
        _ = try damaged(h)
        h.server.resetStats()
        let run = try h.sync(extra: ["--full-check"])
        try h.expectMirror()
        #expect(run.stderr.contains("full check: INBOX differed from the server"), "\(run.stderr)")
        #expect(run.stderr.contains("1 messages missing, 1 with stale flags, 0 no longer on the server"), "\(run.stderr)")
        #expect(h.server.stats()["messages"] == h.account.mailboxes().count, "every mailbox listed: \(h.server.stats().perRoute)")
        #expect(try Store(path: h.db).lastFullCheck() != nil)
    }

    @Test func itRunsOnItsOwnOncePerInterval() throws {
        let h = try Harness()
        _ = try damaged(h)
        let last = try #require(try Store(path: h.db).lastFullCheck())
        // Not yet due: nothing is listed.
        h.server.resetStats()
        try h.sync()
        #expect(h.server.stats()["messages"] == 0)
        // A day later it is.
        try Store(path: h.db).setLastFullCheck(last - 24 * 3600)
        let run = try h.sync()
        try h.expectMirror()
        #expect(run.stderr.contains("full check: INBOX differed"), "\(run.stderr)")
        #expect(try #require(try Store(path: h.db).lastFullCheck()) >= last)
        // full-check-interval = 0: only on demand.
        try Store(path: h.db).setLastFullCheck(last - 48 * 3600)
        h.server.resetStats()
        try h.sync(extra: ["--full-check-interval", "0"])
        #expect(h.server.stats()["messages"] == 0)
    }

    @Test func aCleanCacheIsReportedAsMatching() throws {
        let h = try Harness()
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        try h.account.generate(count: 30, mailboxIds: [inbox], seed: 22, sizeMix: .small)
        try h.sync()
        let run = try h.sync(extra: ["--full-check", "-v"])
        #expect(!run.stderr.contains("differed"), "\(run.stderr)")
        #expect(run.stderr.contains("the cache matched the server"), "\(run.stderr)")
    }

    /// A daemon started with `--full-check` does it once, not at every reconcile (here a poll
    /// every second, the server having no update stream).
    @Test func aDaemonDoesTheAskedForCheckOnce() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        try h.sync()
        let refuse = #"{"code":"ResourceNotFound","message":"no"}"#
        h.server.injectFault(.status(404, body: refuse), on: "ws", count: 1_000)
        h.server.injectFault(.status(404, body: refuse), on: "updates", count: 1_000)
        let d = try h.startDaemon(extra: ["--full-check", "--poll-interval", "1"])
        #expect(d.waitForLog("full check of"), "\(d.log.suffix(2000))")
        let polls = { d.log.components(separatedBy: "reconciling (poll)").count - 1 }
        let before = polls()
        #expect(Harness.wait(timeout: 30) { polls() >= before + 3 }, "\(d.log.suffix(2000))")
        #expect(d.log.components(separatedBy: "full check of").count - 1 == 1, "\(d.log.suffix(3000))")
        #expect(d.terminate() == 0)
    }
}
