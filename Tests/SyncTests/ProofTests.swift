import Testing
@testable import Sync
import WildDuck

/// The journal proof's counting (`JournalReplay.explains`): steps as WildDuck's writes take them,
/// and never a count that one step without an entry explains as well.
@Suite struct ProofTests {
    static let mailbox = "0123456789abcdef01234567"

    func entries(_ command: String, _ uids: ClosedRange<Int>) -> [JournalEntry] {
        uids.map { uid in
            let flags = command == "FETCH" ? #","flags":["\\Seen"]"# : ""
            let data = #"{"command":"\#(command)","uid":\#(uid),"mailbox":"\#(Self.mailbox)"\#(flags)}"#
            return JournalEntry(SSEParser.Event(id: nil, event: nil, data: data))
        }
    }

    @Test func oneStoreCommandIsOneStep() {
        // An IMAP STORE on 120 messages: one step, 120 FETCH entries.
        #expect(JournalReplay.explains(entries("FETCH", 1...120), steps: 1))
        // 120 single-message STOREs.
        #expect(JournalReplay.explains(entries("FETCH", 1...120), steps: 120))
    }

    @Test func aCountOneUnexplainedStepAlsoExplainsIsNotAccepted() {
        // One FETCH and two steps: a REST update, or a STORE next to a change not written yet.
        #expect(!JournalReplay.explains(entries("FETCH", 1...1), steps: 2))
        // 100 FETCH and 100 EXISTS and one more step (201 = 200 + 1, and 200 is a reading).
        let mixed = entries("FETCH", 1...100) + entries("EXISTS", 101...200)
        #expect(JournalReplay.explains(mixed, steps: 200))
        #expect(!JournalReplay.explains(mixed, steps: 201))
    }

    @Test func movesAndDeliveries() {
        // A move of 200 into the mailbox (its EXISTS right after as many EXPUNGE of the
        // source): one step per 150; 200 deliveries: one each.
        #expect(JournalReplay.explains(entries("EXISTS", 1...200), steps: 2, movedIn: { _ in true }))
        #expect(!JournalReplay.explains(entries("EXISTS", 1...200), steps: 2))
        #expect(JournalReplay.explains(entries("EXISTS", 1...200), steps: 200))
        // Five single STOREs and seven deliveries: 12 steps; 11 is no reading (a delivery is never
        // read as part of a move).
        #expect(JournalReplay.explains(entries("FETCH", 1...5) + entries("EXISTS", 6...12), steps: 12))
        // A move of 200 out of it: one step.
        #expect(JournalReplay.explains(entries("EXPUNGE", 1...200), steps: 1))
        // A step with no entry at all proves nothing.
        #expect(!JournalReplay.explains([], steps: 1))
    }

    @Test func entriesTheCacheShowsAreNotCounted() {
        let list = entries("EXISTS", 1...10)
        #expect(!JournalReplay.explains(list, steps: 5))
        #expect(JournalReplay.explains(list, steps: 5, reflected: { ($0.uid ?? 0) <= 5 }))
    }

    /// A message's entries from the same second and two server processes have no known order
    /// (the replay brought the server's setting from before a listing after the user's pushed
    /// flags, which put them back in the Maildir): its flags are read from the server instead.
    @Test func entriesOfOneSecondFromTwoProcessesHaveNoOrder() {
        func fetch(_ id: String, uid: Int) -> JournalEntry {
            let data = #"{"command":"FETCH","uid":\#(uid),"mailbox":"\#(Self.mailbox)","flags":["\\Seen"]}"#
            return JournalEntry(SSEParser.Event(id: id, event: nil, data: data))
        }
        let list = [
            fetch("6b16aebb053ddd60fb00000b", uid: 1),   // process 053ddd60fb, second 6b16aebb
            fetch("6b16aebb853ddd60fb00001f", uid: 1),   // another process, the same second
            fetch("6b16aebb053ddd60fb00000c", uid: 2),   // one process: in order
            fetch("6b16aebb053ddd60fb00000d", uid: 2),
            fetch("6b16aebb053ddd60fb00000e", uid: 3),   // other seconds: in order
            fetch("6b16aebc853ddd60fb000001", uid: 3),
        ]
        #expect(JournalReplay.unorderedMessages(list) == ["\(Self.mailbox) 1"])
    }
}
