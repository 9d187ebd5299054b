import Testing
@testable import Sync
import WildDuck

@Suite struct InboxTests {
    let m = "5f1e0b9a2c3d4e5f60718293"

    @Test func aFloodOfEventsBecomesOneReconcile() {
        let inbox = Inbox(maxEvents: 100)
        for uid in 1...60 { inbox.push([.messageAdded(mailbox: m, uid: uid)]) }
        #expect(inbox.take().events.count == 60)
        for uid in 1...1000 { inbox.push([.messageAdded(mailbox: m, uid: uid)], lastEventId: "id\(uid)") }
        let taken = inbox.take()
        #expect(taken.events == [.resync])
        #expect(taken.lastEventId == "id1000")
        // After the reconcile is taken, events are kept again.
        inbox.push([.messageRemoved(mailbox: m, uid: 3)])
        #expect(inbox.take().events == [.messageRemoved(mailbox: m, uid: 3)])
    }
}
