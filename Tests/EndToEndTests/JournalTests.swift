import Foundation
import Store
import Testing
import WildDuck
import WildDuckSim

/// `wdsync --once` catching up from the server's journal (the SSE replay) instead of listing
/// whole mailboxes, and listing them whenever the replay cannot prove it saw every change.
/// Request counts come from the simulator's request log, never from timing.
@Suite(.serialized) struct JournalTests {
    /// A synced account with 300 messages in INBOX; returns INBOX's id.
    func synced(_ h: Harness) throws -> String {
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        let work = try h.account.createMailbox(path: "Work")
        try h.account.generate(count: 300, mailboxIds: [inbox], seed: 3, sizeMix: .small)
        try h.account.generate(count: 40, mailboxIds: [work], seed: 4, sizeMix: .small)
        try h.sync()
        try h.expectMirror()
        // The pass that confirms the first one's listings from the journal (see `settles`).
        try h.sync()
        return inbox
    }

    /// The server's journal times run 2 s ahead from here on, so the changes that follow are
    /// journaled after the second in which the previous pass started. A pass that read no
    /// journal starts the next one's position at the second after its own start: changes made
    /// within that same second are found by listing instead (correct, but not what these tests
    /// measure, and whether a test hits that second would depend on the wall clock).
    func journalLater(_ h: Harness) {
        h.account.setClock { Date().addingTimeInterval(2) }
    }

    /// 100 deliveries and 100 flag changes (as IMAP clients make them) in INBOX.
    func change(_ h: Harness, inbox: String, offset: Int = 0) throws {
        journalLater(h)
        for (i, m) in h.account.messages(mailboxId: inbox).dropFirst(offset).prefix(100).enumerated() {
            try h.account.setFlags(mailboxId: inbox, uid: m.uid, seen: !m.seen, flagged: i % 3 == 0 ? !m.flagged : nil)
        }
        for i in 0..<100 {
            try h.account.deliver(Array("From: a@b\r\nSubject: new \(offset) \(i)\r\nMessage-ID: <j\(offset).\(i)@x>\r\n\r\nbody \(i)\r\n".utf8), to: inbox)
        }
    }

    @Test func changesComeFromTheReplayInAFewRequests() throws {
        let h = try Harness()
        let inbox = try synced(h)
        try change(h, inbox: inbox)
        h.server.resetStats()
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        let stats = h.server.stats()
        #expect(stats["message.eml"] == 100)
        #expect(stats["messages"] == 0, "INBOX was listed again: \(run.stderr)")
        #expect(stats["updates"] == 1)
        // authenticate, user, autoreply, filters, mailboxes, updates, one search for the new uids
        #expect(stats.totalRequests - stats["message.eml"] <= 8, "\(stats.perRoute)")

        // Nothing changed since: the next pass reads the journal once more, to confirm that no
        // change was under way while this one read it; then no stream, the same 5 requests as ever.
        h.server.resetStats()
        try h.sync()
        #expect(h.server.stats().totalRequests == 6, "\(h.server.stats().perRoute)")
        #expect(h.server.stats()["updates"] == 1)
        h.server.resetStats()
        try h.sync()
        #expect(h.server.stats().totalRequests == 5, "\(h.server.stats().perRoute)")
    }

    @Test func aRepeatedReplayIsAppliedOnce() throws {
        let h = try Harness()
        let inbox = try synced(h)
        try change(h, inbox: inbox)
        try h.sync()
        // The next pass reads the same entries again (it starts before them) plus new ones:
        // those already applied are neither applied nor counted again.
        try change(h, inbox: inbox, offset: 100)
        h.server.resetStats()
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        let stats = h.server.stats()
        #expect(stats["messages"] == 0, "INBOX was listed again: \(run.stderr)")
        #expect(stats["message.eml"] == 100)
        let store = try Store(path: h.db)
        #expect(try store.messages().count == h.account.messages(mailboxId: inbox).count
                + h.account.messages(mailboxId: try #require(h.account.mailboxId(path: "Work"))).count)
    }

    /// A pass that listed (the first sync here) keeps its journal position at the second of its
    /// listing: a flag change journaled later in that same second, then another change of the
    /// same mailbox, must both reach the Maildir. (Started at the second after, the next replay
    /// skipped the first change, and one flag entry counted as a REST update's two steps made
    /// the two steps of the two changes look accounted for; found by wdsync-torture.)
    @Test func aChangeInTheSecondOfTheListingIsNotSkipped() throws {
        let h = try Harness()
        let frozen = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down) + 5)
        h.account.setClock { frozen }
        let inbox = try synced(h)
        let list = h.account.messages(mailboxId: inbox)
        let first = try #require(list.first { !$0.flagged }), second = try #require(list.last { !$0.flagged })
        try h.account.setFlags(mailboxId: inbox, uid: first.uid, flagged: true)
        h.account.setClock { frozen.addingTimeInterval(3) }
        try h.account.setFlags(mailboxId: inbox, uid: second.uid, flagged: true)
        try h.sync()
        try h.expectMirror()
    }

    @Test func aChangeTheJournalDoesNotCarryIsStillPickedUp() throws {
        let h = try Harness()
        let inbox = try synced(h)
        let work = try #require(h.account.mailboxId(path: "Work"))
        try change(h, inbox: inbox)
        // One silent change next to journaled ones, one in a mailbox with no entry at all.
        let quiet = try #require(h.account.messages(mailboxId: inbox).last { !$0.flagged })
        try h.account.setFlagsUnjournaled(mailboxId: inbox, uid: quiet.uid, flagged: true)
        let other = try #require(h.account.messages(mailboxId: work).first)
        try h.account.setFlagsUnjournaled(mailboxId: work, uid: other.uid, seen: !other.seen)
        h.server.resetStats()
        try h.sync()
        try h.expectMirror()
        #expect(h.server.stats()["messages"] >= 2, "both mailboxes are listed again")
    }

    @Test func anExpiredJournalMeansAFullListingAndNothingMissed() throws {
        let h = try Harness()
        let inbox = try synced(h)
        try change(h, inbox: inbox)
        // Four hours later the server's journal has forgotten these changes.
        let later = Date().addingTimeInterval(4 * 3600)
        h.account.setClock { later }
        h.server.resetStats()
        try h.sync()
        try h.expectMirror()
        #expect(h.server.stats()["messages"] > 0)
        #expect(h.server.stats()["message.eml"] == 100)
    }

    @Test func aPositionOlderThanTheJournalIsNotUsed() throws {
        let h = try Harness()
        let inbox = try synced(h)
        let old = ObjectIdTime.id(atSeconds: Int(Date().timeIntervalSince1970) - 3 * 3600)
        try Store(path: h.db).setJournalPosition(old, seen: [])
        try change(h, inbox: inbox)
        h.server.resetStats()
        try h.sync()
        try h.expectMirror()
        #expect(h.server.stats()["updates"] == 0)
        #expect(h.server.stats()["messages"] > 0)
    }

    @Test func withoutAnUpdateStreamMailboxesAreListed() throws {
        let h = try Harness()
        let inbox = try synced(h)
        try change(h, inbox: inbox)
        h.server.injectFault(.status(404, body: #"{"error":"Not found","code":"ResourceNotFound"}"#), on: "updates", count: 1)
        h.server.resetStats()
        try h.sync()
        try h.expectMirror()
        #expect(h.server.stats()["updates"] == 1)
        #expect(h.server.stats()["messages"] > 0)
    }

    @Test func aPendingLocalChangeIsMergedWithTheReplaysFlags() throws {
        let h = try Harness()
        let inbox = try synced(h)
        // The user flags a message in the Maildir while the server marks it seen; the local
        // change stays pending (--pull-only) and the replay's flags are merged into it.
        let target = try #require(h.account.messages(mailboxId: inbox).first { !$0.seen && !$0.flagged })
        let row = try #require(try Store(path: h.db).message(mailboxId: inbox, uid: target.uid))
        let path = h.maildir + "/" + (try #require(row.file))
        #expect(path.hasSuffix(":2,"))
        #expect(rename(path, path + "F") == 0)
        journalLater(h)
        try h.account.setFlags(mailboxId: inbox, uid: target.uid, seen: true)
        h.server.resetStats()
        try h.sync(extra: ["--pull-only"])
        #expect(h.server.stats()["messages"] == 0, "INBOX was listed again")
        let merged = try #require(try Store(path: h.db).message(mailboxId: inbox, uid: target.uid))
        #expect(merged.file?.hasSuffix(":2,FS") == true, "\(merged.file ?? "no file")")
    }

    // MARK: - What used to make a pass list instead of reading the journal

    @Test func aChangeRightAfterANoOpPassComesFromTheJournal() throws {
        let h = try Harness()
        let inbox = try synced(h)
        // The no-op pass below must start in a later second than the first sync's position.
        let position = try #require(try Store(path: h.db).lastEventId())
        let first = try #require(ObjectIdTime.seconds(of: position))
        _ = Harness.wait(timeout: 3) { Int(Date().timeIntervalSince1970) >= first }
        let noop = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        h.server.resetStats()
        try h.sync()
        #expect(h.server.stats().totalRequests == 5)
        // The server writes the changes within the second the no-op pass started: a pass that
        // found nothing changed keeps the journal position it had, so they are still read.
        h.account.setClock { noop }
        try smallChangeComesFromTheJournal(h, inbox: inbox)
    }

    /// 20 flag changes and a delivery in INBOX, then a pass that reads them from the journal
    /// without listing INBOX.
    func smallChangeComesFromTheJournal(_ h: Harness, inbox: String) throws {
        for (i, m) in h.account.messages(mailboxId: inbox).prefix(20).enumerated() {
            try h.account.setFlags(mailboxId: inbox, uid: m.uid, seen: !m.seen, flagged: i % 2 == 0 ? !m.flagged : nil)
        }
        try h.account.deliver(Array("From: a@b\r\nSubject: small change\r\n\r\nbody\r\n".utf8), to: inbox)
        h.server.resetStats()
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        #expect(h.server.stats()["messages"] == 0, "INBOX was listed again: \(run.stderr)")
        #expect(h.server.stats()["message.eml"] == 1)
    }

    /// The position is on the server's clock (its Date header), not the client's: a client
    /// ahead of the server used to put it after the server's next changes, and one behind
    /// before the listing, where entries already applied were counted again; either way the
    /// changed mailbox was listed.
    @Test(arguments: [-600.0, 600.0]) func aClientClockOffTheServersStillReadsTheJournal(skew: Double) throws {
        let h = try Harness(clock: { Date().addingTimeInterval(skew) })
        let inbox = try synced(h)
        h.account.setClock { Date().addingTimeInterval(skew + 2) }
        try smallChangeComesFromTheJournal(h, inbox: inbox)
    }

    @Test func newMessagesInSeveralMailboxesAreReadWithOneSearch() throws {
        let h = try Harness()
        let inbox = try synced(h)
        let work = try #require(h.account.mailboxId(path: "Work"))
        journalLater(h)
        for i in 0..<30 {
            try h.account.deliver(Array("From: a@b\r\nSubject: n\(i)\r\n\r\nbody\r\n".utf8), to: i % 2 == 0 ? inbox : work)
        }
        h.server.resetStats()
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        let stats = h.server.stats()
        #expect(stats["messages"] == 0, "a mailbox was listed again: \(run.stderr)")
        #expect(stats["search"] == 1, "\(stats.perRoute)")
        #expect(stats["message.eml"] == 30)
    }

    @Test func theCountsOfOurOwnFlagChangesAreKnown() throws {
        let h = try Harness()
        let inbox = try synced(h)
        // One message read and another flagged in the Maildir: two flag requests in a row to
        // INBOX, whose FETCH entries form one run that neither general reading counts right.
        let store = try Store(path: h.db)
        let plain = h.account.messages(mailboxId: inbox).filter { !$0.seen && !$0.flagged }.prefix(2)
        #expect(plain.count == 2)
        for (m, flag) in zip(plain, ["S", "F"]) {
            let row = try store.message(mailboxId: inbox, uid: m.uid)
            let path = h.maildir + "/" + (try #require(row?.file))
            #expect(rename(path, (flag == "S" ? path.replacingOccurrences(of: "/new/", with: "/cur/") : path) + flag) == 0)
        }
        journalLater(h)
        h.server.resetStats()
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        let stats = h.server.stats()
        // The simulator counts the two flag requests (PUT …/messages) under the listing's route.
        #expect(stats["messages"] == 2, "INBOX was listed again: \(run.stderr) \(stats.perRoute)")
        #expect(run.stderr.contains("1 mailboxes brought up to date from the journal"), "\(run.stderr)")
        #expect(stats["updates"] == 1)
        let now = h.account.messages(mailboxId: inbox)
        #expect(now.first { $0.uid == plain.first?.uid }?.seen == true)
        #expect(now.first { $0.uid == plain.last?.uid }?.flagged == true)
    }

    @Test func ourOwnMovesAndDeletesAreCountedToo() throws {
        let h = try Harness()
        let inbox = try synced(h)
        let work = try #require(h.account.mailboxId(path: "Work"))
        // Two files moved from INBOX into Work's folder and one deleted, as mutt does it: a move
        // request (EXPUNGE in INBOX, EXISTS in Work) and a delete (EXPUNGE) in the journal.
        let store = try Store(path: h.db)
        let picked = Array(h.account.messages(mailboxId: inbox).prefix(3))
        var moved: [String] = []
        for (i, m) in picked.enumerated() {
            let file = try #require(try store.message(mailboxId: inbox, uid: m.uid)?.file)
            let path = h.maildir + "/" + file
            if i < 2 {
                let name = (file as NSString).lastPathComponent
                let sub = (file as NSString).deletingLastPathComponent.hasSuffix("new") ? "new" : "cur"
                #expect(rename(path, h.maildir + "/Work/\(sub)/" + name) == 0)
                moved.append(name)
            } else {
                #expect(unlink(path) == 0)
            }
        }
        journalLater(h)
        h.server.resetStats()
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        #expect(h.account.messages(mailboxId: work).count == 42)
        #expect(run.stderr.contains("2 mailboxes brought up to date from the journal"), "\(run.stderr)")
        // The move and the delete go through …/messages routes, but nothing is listed or downloaded.
        #expect(h.server.stats()["message.eml"] == 0)
        #expect(!run.stderr.contains("listing "), "\(run.stderr)")
    }

    @Test func aOnceAfterTheDaemonReadsTheJournalFromTheDaemonsLastPass() throws {
        let h = try Harness()
        let inbox = try synced(h)
        let before = try Store(path: h.db).lastEventId()
        // The position is a minute before a pass's listing: the daemon's passes must list in a
        // later second than the first sync for the position to move.
        let first = try #require(before.flatMap(ObjectIdTime.seconds(of:)))
        _ = Harness.wait(timeout: 3) { Int(Date().timeIntervalSince1970) > first + 60 }
        let d = try h.startDaemon()
        #expect(d.waitForLog("connected ("), "\(d.log.suffix(1500))")
        // Changed while the daemon runs; its reconcile lists INBOX and records a position.
        let m = try #require(h.account.messages(mailboxId: inbox).first)
        try h.account.setFlags(mailboxId: inbox, uid: m.uid, flagged: !m.flagged)
        try h.expectMirrorEventually()
        // Done when the cache records INBOX at the server's index and a new position: the
        // position alone can have moved at the daemon's first pass, before the change, and the
        // change applied from the live event leaves INBOX one step short, which the next run
        // rightly lists.
        let index = try #require(h.account.mailboxes().first { $0.id == inbox }).modifyIndex
        d.signal(SIGUSR1)
        #expect(Harness.wait(timeout: 20) {
            guard let store = try? Store(path: h.db), (try? store.lastEventId()) != before else { return false }
            return (try? store.mailboxes())?.first { $0.id == inbox }?.syncedIndex == index
        }, "\(d.log.suffix(1500))")
        #expect(d.terminate() == 0)
        try change(h, inbox: inbox)
        h.server.resetStats()
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        #expect(h.server.stats()["messages"] == 0, "INBOX was listed again: \(run.stderr)")
        #expect(h.server.stats()["message.eml"] == 100)
    }

    // MARK: - Each case the proof rule falls back to a listing

    @Test func anErrorEventFromTheUpdateStreamMeansAListing() throws {
        let h = try Harness()
        let inbox = try synced(h)
        try change(h, inbox: inbox)
        h.server.injectFault(.sseError, on: "updates", count: 1)
        h.server.resetStats()
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        #expect(h.server.stats()["updates"] == 1)
        #expect(h.server.stats()["messages"] > 0)
        #expect(run.stderr.contains("reported an error"), "\(run.stderr)")
    }

    @Test func aReplayThatDoesNotEndInTimeMeansAListing() throws {
        let h = try Harness()
        let inbox = try synced(h)
        try change(h, inbox: inbox)
        // The stream keeps sending entries and never the COUNTERS that end a replay.
        h.server.injectFault(.sseEndlessReplay, on: "updates", count: 1)
        h.server.resetStats()
        try h.sync(extra: ["-v"], environment: ["WDSYNC_JOURNAL_TIMEOUT": "2"])
        try h.expectMirror()
        #expect(h.server.stats()["updates"] == 1)
        #expect(h.server.stats()["messages"] > 0)
        #expect(h.server.stats()["message.eml"] == 100)
    }

    @Test func entriesTheJournalNoLongerHoldsAreNotAssumed() throws {
        let h = try Harness()
        let inbox = try synced(h)
        // The first changes are written, then time passes on the server until its journal has
        // dropped them (a short life here) — but not the later ones, nor the position.
        try change(h, inbox: inbox)
        h.account.setJournalTTL(seconds: 60)
        h.account.setClock { Date().addingTimeInterval(120) }
        let later = try #require(h.account.messages(mailboxId: inbox).last)
        try h.account.setFlags(mailboxId: inbox, uid: later.uid, flagged: !later.flagged)
        h.server.resetStats()
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        #expect(h.server.stats()["updates"] == 1)
        #expect(h.server.stats()["messages"] > 0)
        #expect(run.stderr.contains("does not account for every change"), "\(run.stderr)")
    }
}
