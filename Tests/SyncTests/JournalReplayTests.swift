import Foundation
import Store
import Testing
@testable import Sync
import WildDuck

/// The journal replay read from the event stream (`JournalReplay.read`), against an in-memory
/// `JournalSource`: which changed mailboxes the replay brings up to date and which it leaves to
/// a listing, with no server and no socket (the counting itself is `ProofTests`).
@Suite struct JournalReplayTests {
    static let inbox = "0123456789abcdef01234567"
    static let position = "6b16aeba053ddd60fb000001"

    /// A stream that sends its script, then ends (or is refused), as the server's would.
    struct Scripted: JournalSource {
        var lines: [(id: String?, data: String)]
        var heartbeat = false
        var refused: Int?

        func readJournal(after lastEventId: String?, handle: CloseHandle, timeout: Double,
                         onOpen: () -> Void, onEntry: (JournalEntry) -> Void,
                         onComment: () -> Void) throws -> JournalStream.End {
            if let refused { return .refused(status: refused, code: nil) }
            onOpen()
            for line in lines { onEntry(JournalEntry(SSEParser.Event(id: line.id, event: nil, data: line.data))) }
            if heartbeat { onComment() }
            return .ended
        }
    }

    struct NoLog: SyncLog {
        func log(_ level: LogLevel, _ message: String) {}
    }

    static func id(_ n: Int) -> String { String(format: "6b16aebb053ddd60fb%06x", n) }

    /// `n` flag changes (one REST update each: two steps) then COUNTERS.
    static func flagChanges(_ n: Int) -> [(id: String?, data: String)] {
        (1...n).map { uid in
            (id(uid), #"{"command":"FETCH","uid":\#(uid),"mailbox":"\#(inbox)","flags":["\\Seen"]}"#)
        } + [(id(n + 1), #"{"command":"COUNTERS","mailbox":"\#(inbox)","total":10,"unseen":0}"#)]
    }

    static func inboxRecord(synced: Int, now: Int) -> MailboxRecord {
        MailboxRecord(id: inbox, path: "INBOX", specialUse: nil, modifyIndex: now, syncedIndex: synced, json: "{}")
    }

    func read(_ source: Scripted, synced: Int, now: Int) -> JournalReplay.Outcome {
        JournalReplay(quiet: 1, timeout: 10).read(session: source, resumeId: Self.position,
                                                  changed: [Self.inboxRecord(synced: synced, now: now)], seen: [], log: NoLog())
    }

    @Test func aCompleteReplayBringsTheMailboxUpToDate() {
        let outcome = read(Scripted(lines: Self.flagChanges(3)), synced: 10, now: 16)
        #expect(outcome.failure == nil)
        #expect(outcome.complete)
        #expect(outcome.proven[Self.inbox] == 16)
        #expect(outcome.events.count == 3)
        #expect(outcome.lastId == Self.id(4))
    }

    @Test func aStepTheEntriesDoNotAccountForMeansAListing() {
        // Three changes, and one step more than they can take: a change whose entries are not
        // written yet.
        let outcome = read(Scripted(lines: Self.flagChanges(3)), synced: 10, now: 17)
        #expect(outcome.failure == nil)
        #expect(outcome.proven[Self.inbox] == nil)
        #expect(outcome.events.isEmpty)
    }

    @Test func anErrorInTheStreamProvesNothing() {
        var lines = Self.flagChanges(3)
        lines.insert((nil, #"{"error":"database error"}"#), at: 1)
        let outcome = read(Scripted(lines: lines), synced: 10, now: 16)
        #expect(outcome.failure != nil)
        #expect(outcome.proven.isEmpty)
    }

    @Test func aServerWithoutTheStreamProvesNothing() {
        let outcome = read(Scripted(lines: [], refused: 404), synced: 10, now: 16)
        #expect(outcome.failure?.contains("no update stream") == true)
        #expect(outcome.proven.isEmpty)
    }
}
