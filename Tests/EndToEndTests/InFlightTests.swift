import Foundation
import Store
import Testing
import WildDuck
import WildDuckSim

/// WildDuck takes a change's `modifyIndex` step before it writes the change (the simulator does
/// the same, see Sources/WildDuckSim/WriteSteps.swift). A `--once` that runs while another
/// client's change is under way sees part of it under the final index; once the server is quiet,
/// the next run must make the mirror equal to the server. Each test holds the other client's
/// write at a step (deterministically, with `onWriteStep`), runs wdsync, lets the write finish,
/// and runs wdsync again.
@Suite(.serialized) struct InFlightTests {
    /// Holds the simulator's write at the `n`th step that `matches`, until `release`.
    final class HeldWrite: @unchecked Sendable {
        private let lock = NSLock()
        private var count = 0
        private let reached = DispatchSemaphore(value: 0)
        private let go = DispatchSemaphore(value: 0)
        private let finished = DispatchSemaphore(value: 0)

        /// Starts `write` on its own thread and returns once it is held.
        init(_ account: SimAccount, at n: Int = 1, matching: @escaping @Sendable (SimWriteStep) -> Bool,
             write: @escaping @Sendable () throws -> Void) {
            account.onWriteStep { [self] step in
                guard matching(step) else { return }
                let hit = lock.withLock { count += 1; return count == n }
                if hit { reached.signal(); go.wait() }
            }
            Thread { [self] in
                try? write()
                finished.signal()
            }.start()
            reached.wait()
        }

        /// Lets the write go on and waits until it is done.
        func release(_ account: SimAccount) {
            go.signal()
            finished.wait()
            account.onWriteStep(nil)
        }
    }

    /// INBOX with `count` messages and an empty Work, synced, and a second pass that confirms it.
    func synced(_ h: Harness, count: Int = 300) throws -> (inbox: String, work: String) {
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        let work = try h.account.createMailbox(path: "Work")
        try h.account.generate(count: count, mailboxIds: [inbox], seed: 11, sizeMix: .small)
        try h.sync()
        try h.sync()
        try h.expectMirror()
        // Changes from here on are journaled in a later second than the passes so far.
        h.account.setClock { Date().addingTimeInterval(2) }
        return (inbox, work)
    }

    @Test func aMoveUnderWayDuringARunIsCompleteAfterTheNext() throws {
        let h = try Harness()
        let (inbox, work) = try synced(h, count: 600)
        let uids = Array(h.account.messages(mailboxId: inbox).prefix(500).map(\.uid))
        // Another client moves 500 messages; wdsync runs when 200 have moved: INBOX took its
        // one step at the start, 150 EXPUNGE and EXISTS entries are written, 50 more messages
        // moved without entries yet.
        let held = HeldWrite(h.account, at: 200, matching: { $0 == .wrote(mailbox: inbox) }) { [account = h.account] in
            try account.move(mailboxId: inbox, uids: uids, to: work)
        }
        try h.sync()
        held.release(h.account)
        #expect(h.account.messages(mailboxId: work).count == 500)
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        #expect(run.stderr.contains("INBOX changed after it was last read"), "\(run.stderr)")
        // Quiet since: nothing left to confirm after one more pass, then no stream at all.
        try h.sync()
        h.server.resetStats()
        try h.sync()
        #expect(h.server.stats().totalRequests == 5, "\(h.server.stats().perRoute)")
    }

    @Test func aMoveHeldAtItsFirstStepIsCompleteAfterTheNextRun() throws {
        let h = try Harness()
        let (inbox, work) = try synced(h)
        let uids = Array(h.account.messages(mailboxId: inbox).prefix(200).map(\.uid))
        let held = HeldWrite(h.account, matching: { $0 == .bumped(mailbox: inbox) }) { [account = h.account] in
            try account.move(mailboxId: inbox, uids: uids, to: work)
        }
        // INBOX has moved on by one step and shows nothing of the move yet: it is listed as is.
        try h.sync()
        held.release(h.account)
        try h.sync()
        try h.expectMirror()
    }

    @Test func anIMAPStoreUnderWayDuringARunLeavesNoStaleFlags() throws {
        let h = try Harness()
        let (inbox, _) = try synced(h)
        let uids = Array(h.account.messages(mailboxId: inbox).filter { !$0.flagged }.prefix(120).map(\.uid))
        #expect(uids.count == 120)
        // One STORE command: one step, taken before any message is written.
        let held = HeldWrite(h.account, matching: { $0 == .bumped(mailbox: inbox) }) { [account = h.account] in
            try account.store(mailboxId: inbox, uids: uids, flagged: true)
        }
        try h.sync()
        held.release(h.account)
        try h.sync()
        try h.expectMirror()
    }

    @Test func aDeliveryUnderWayDuringARunIsNotMissed() throws {
        let h = try Harness()
        let (inbox, _) = try synced(h)
        let raw = Array("From: a@b\r\nSubject: late\r\nMessage-ID: <late@x>\r\n\r\nbody\r\n".utf8)
        let held = HeldWrite(h.account, matching: { $0 == .bumped(mailbox: inbox) }) { [account = h.account] in
            try account.deliver(raw, to: inbox)
        }
        try h.sync()
        held.release(h.account)
        try h.sync()
        try h.expectMirror()
    }

    /// A replay that stalls after a move's first batch: what was read proves nothing about the
    /// source, whose one step the partial count explains.
    @Test func aStalledReplayIsNotTakenForAWholeOne() throws {
        let h = try Harness()
        let (inbox, work) = try synced(h)
        let uids = Array(h.account.messages(mailboxId: inbox).prefix(200).map(\.uid))
        try h.account.move(mailboxId: inbox, uids: uids, to: work)
        // 150 EXPUNGE and 150 EXISTS, then nothing for 3 s (longer than the quiet second).
        h.server.injectFault(.sseStalledReplay(afterEntries: 300, seconds: 3), on: "updates")
        let run = try h.sync(extra: ["-v"])
        #expect(run.stderr.contains("stopped before its end"), "\(run.stderr)")
        try h.expectMirror()
        try h.sync()
        try h.expectMirror()
    }

    /// One STORE command on 120 messages is one step; one FETCH entry and two steps (a STORE
    /// under way next to a finished one) is not taken for a REST update.
    @Test func aStoreCommandCountsOneStepAndAnUnexplainedStepIsNotAccepted() throws {
        let h = try Harness()
        let (inbox, _) = try synced(h)
        let all = h.account.messages(mailboxId: inbox)
        try h.account.store(mailboxId: inbox, uids: all.prefix(120).map(\.uid), seen: true, flagged: true)
        h.server.resetStats()
        let first = try h.sync(extra: ["-v"])
        try h.expectMirror()
        #expect(h.server.stats()["messages"] == 0, "INBOX was listed: \(first.stderr)")

        try h.sync()
        let last = try #require(all.last)
        try h.account.setFlags(mailboxId: inbox, uid: last.uid, flagged: !last.flagged)
        let held = HeldWrite(h.account, matching: { $0 == .bumped(mailbox: inbox) }) { [account = h.account] in
            try account.store(mailboxId: inbox, uids: all.dropLast().suffix(30).map(\.uid), seen: false)
        }
        h.server.resetStats()
        let second = try h.sync(extra: ["-v"])
        #expect(second.stderr.contains("the journal does not account for every change in INBOX"), "\(second.stderr)")
        held.release(h.account)
        try h.sync()
        try h.expectMirror()
    }
}

extension InFlightTests {
    /// 3,500 new messages in one mailbox, read from the journal (their uids in one search's URL
    /// would be 17 KB, over the 16 KiB head WildDuck's server reads: the search is split).
    @Test func manyNewMessagesInOneMailbox() throws {
        let h = try Harness()
        let (inbox, _) = try synced(h, count: 20)
        try h.account.generate(count: 3500, mailboxIds: [inbox], seed: 12, sizeMix: .small)
        h.server.resetStats()
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        #expect(h.server.stats()["messages"] == 0, "INBOX was listed: \(run.stderr)")
    }
}

extension InFlightTests {
    /// The benchmark's small change: flag changes (one STORE each) and deliveries spread over 20
    /// mailboxes, read from the journal without listing any of them.
    @Test func aSmallChangeOverManyMailboxesComesFromTheJournal() throws {
        let h = try Harness()
        var ids: [String] = []
        for i in 0..<20 { ids.append(try h.account.createMailbox(path: "Box \(i)")) }
        try h.account.generate(count: 400, mailboxIds: ids, seed: 31, sizeMix: .small)
        try h.sync()
        try h.sync()
        h.account.setClock { Date().addingTimeInterval(2) }
        for id in ids {
            for m in h.account.messages(mailboxId: id).prefix(5) { try h.account.setFlags(mailboxId: id, uid: m.uid, seen: !m.seen) }
        }
        try h.account.generate(count: 100, mailboxIds: ids, seed: 32, sizeMix: .small)
        h.server.resetStats()
        let run = try h.sync(extra: ["-v"])
        try h.expectMirror()
        #expect(h.server.stats()["messages"] <= 4, "\(run.stderr)")
    }
}
