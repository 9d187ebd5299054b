import Foundation
import Lock
import Testing
@testable import WildDuckSim

@Suite struct SSETests {
    @Test func liveEventsForEveryMutation() throws {
        let h = try Harness()
        let sse = try SSEReader(port: h.server.port, token: h.token)
        #expect(sse.status == 200)
        #expect(sse.headers["content-type"] == "text/event-stream")
        #expect(sse.headers["cache-control"] == "no-cache")
        #expect(sse.headers["x-accel-buffering"] == "no")
        // no Last-Event-ID, nothing replayed: the first idle comment comes at once
        #expect(try sse.next().comment == "idling 1")
        let inbox = h.inbox
        let uid = try h.account.deliver(mail(1), to: inbox)
        let exists = try sse.nextEvent()
        #expect(exists.command == "EXISTS")
        #expect(exists.json?["mailbox"] == .string(inbox) && exists.json?["uid"] == .int(uid))
        #expect(exists.json?["message"]?.stringValue?.count == 24 && exists.json?["thread"] != nil && exists.json?["idate"] != nil)
        #expect(exists.id?.count == 24)
        #expect(exists.json?["unseen"] == nil && exists.json?["modseq"] == nil && exists.json?["user"] == nil)
        // every read that touched a mailbox's counts ends with COUNTERS, carrying the read's last id
        let counters = try sse.nextEvent()
        #expect(counters.json == .object([("command", .string("COUNTERS")), ("mailbox", .string(inbox)), ("total", .int(1)), ("unseen", .int(1))]))
        #expect(counters.id == exists.id)

        try h.account.setFlags(mailboxId: inbox, uid: uid, seen: true, flagged: true)
        let fetch = try sse.nextEvent()
        #expect(fetch.command == "FETCH")
        #expect(fetch.json?["flags"] == .array([.string("\\Flagged"), .string("\\Seen")]))
        #expect(try sse.nextEvent().json?["unseen"] == .int(0))

        let work = try h.account.createMailbox(path: "Work")
        let create = try sse.nextEvent()
        #expect(create.command == "CREATE" && create.json?["mailbox"] == .string(work) && create.json?["path"] == .string("Work"))

        let newUid = try h.account.move(mailboxId: inbox, uid: uid, to: work)
        let e1 = try sse.nextEvent(), e2 = try sse.nextEvent()
        #expect(e1.command == "EXPUNGE" && e1.json?["mailbox"] == .string(inbox) && e1.json?["uid"] == .int(uid))
        #expect(e2.command == "EXISTS" && e2.json?["mailbox"] == .string(work) && e2.json?["uid"] == .int(newUid))
        // the moved copy is a new stored message with a new `message` id
        #expect(e1.json?["message"] != nil && e2.json?["message"] != nil && e1.json?["message"] != e2.json?["message"])
        #expect(try sse.nextEvent().json?["mailbox"] == .string(inbox) && (try sse.nextEvent()).json?["mailbox"] == .string(work))

        try h.account.renameMailbox(id: work, to: "Job")
        let rename = try sse.nextEvent()
        #expect(rename.command == "RENAME" && rename.json?["path"] == .string("Job"))
        try h.account.expunge(mailboxId: work, uid: newUid)
        #expect(try sse.nextEvent().command == "EXPUNGE")
        #expect(try sse.nextEvent().json == .object([("command", .string("COUNTERS")), ("mailbox", .string(work)), ("total", .int(0)), ("unseen", .int(0))]))
        try h.account.deleteMailbox(id: work)
        let del = try sse.nextEvent()
        #expect(del.command == "DELETE" && del.json == .object([("command", .string("DELETE")), ("mailbox", .string(work))]))
        // ids of one process only go up, and start with the time in seconds, like ObjectIds
        let ids = [exists, fetch, create, e1, e2, rename, del].compactMap(\.id)
        #expect(ids == ids.sorted())
        let secs = Int(ids[0].prefix(8), radix: 16) ?? 0
        #expect(abs(secs - Int(Date().timeIntervalSince1970)) < 3600)
    }

    /// Journal ids come from the process that writes (WildDuck's API, IMAP and LMTP servers):
    /// ordered by second, and within a second by process. An entry the API writes after another
    /// client's in the same second sorts before it: a live read that has passed the other
    /// client's entry does not send it; a replay from before both sends both, in id order.
    @Test func journalIdsOfTwoProcesses() throws {
        let h = try Harness()
        let fixed = Date()
        h.account.setClock { fixed }
        _ = try h.account.deliver(mail(1), to: h.inbox)                                  // another client
        _ = try h.call("POST", "/users/me/mailboxes", json: #"{"path":"Later"}"#)        // the API
        let entries = h.account.journal(after: nil)
        let exists = try #require(entries.first { $0.command == "EXISTS" })
        let create = try #require(entries.first { $0.command == "CREATE" })
        #expect(create.id < exists.id)
        #expect(h.account.journal(after: exists.id).allSatisfy { $0.command != "CREATE" })
        #expect(entries.map(\.id) == entries.map(\.id).sorted())
    }

    /// WildDuck takes a change's modifyIndex step before it writes the change: a write held
    /// between the two shows the new index with the old messages, and no journal entry.
    @Test func writesTakeTheirStepBeforeTheirData() throws {
        let h = try Harness()
        let inbox = h.inbox
        for i in 0..<3 { _ = try h.account.deliver(mail(i), to: inbox) }
        let before = try #require(h.account.mailboxes().first { $0.id == inbox })
        let seen = Mutex<[SimMailbox]>([])
        let account = h.account
        account.onWriteStep { step in
            guard step == .bumped(mailbox: inbox) else { return }
            let m = account.mailboxes().first { $0.id == inbox }
            seen.withLock { if let m { $0.append(m) } }
            let flagged = account.messages(mailboxId: inbox).filter(\.flagged)
            #expect(flagged.isEmpty)
        }
        let journal = h.account.journalCount
        // One STORE command on three messages: one step, taken before any of them is written.
        try h.account.store(mailboxId: inbox, uids: [1, 2, 3], flagged: true)
        account.onWriteStep(nil)
        let during = seen.withLock { $0 }
        #expect(during.map(\.modifyIndex) == [before.modifyIndex + 1])
        #expect(h.account.mailboxes().first { $0.id == inbox }?.modifyIndex == before.modifyIndex + 1)
        #expect(h.account.journalCount == journal + 3)
        #expect(h.account.messages(mailboxId: inbox).filter { !$0.flagged }.isEmpty)
    }

    /// The replay pauses after a database cursor's first batch; `.sseStalledReplay` for longer.
    @Test func aReplayCanStall() throws {
        let h = try Harness()
        for i in 0..<10 { _ = try h.account.deliver(mail(i), to: h.inbox) }
        h.server.injectFault(.sseStalledReplay(afterEntries: 4, seconds: 1.5), on: "updates")
        let first = try #require(h.account.journal(after: nil).first)
        let sse = try SSEReader(port: h.server.port, token: h.token, lastEventId: first.id)
        for _ in 0..<4 { #expect(try sse.nextEvent().command == "EXISTS") }
        let start = Date()
        #expect(try sse.nextEvent().command == "EXISTS")
        #expect(Date().timeIntervalSince(start) >= 1)
    }

    @Test func restMutationsArePublished() throws {
        let h = try Harness()
        let sse = try SSEReader(port: h.server.port, token: h.token)
        _ = try h.call("POST", "/users/me/mailboxes", json: #"{"path":"Viaрest"}"#)
        #expect(try sse.nextEvent().command == "CREATE")
        let raw = Array("Subject: x\r\n\r\ny".utf8)
        try h.client.sendRaw(RawClient.request("POST", "/users/me/mailboxes/\(h.inbox)/messages", token: h.token, body: raw, contentType: "message/rfc822"))
        _ = try h.client.readReply()
        #expect(try sse.nextEvent().command == "EXISTS")
        #expect(try sse.nextEvent().command == "COUNTERS")
        // a flag update journals a FETCH with the full flag list; without `seen` it brings no COUNTERS
        _ = try h.call("PUT", "/users/me/mailboxes/\(h.inbox)/messages/1", json: #"{"flagged":true}"#)
        let fetch = try sse.nextEvent()
        #expect(fetch.command == "FETCH" && fetch.json?["flags"] == .array([.string("\\Flagged"), .string("\\Seen")]))
        // unchanged messages get a FETCH too
        _ = try h.call("PUT", "/users/me/mailboxes/\(h.inbox)/messages/1", json: #"{"flagged":true}"#)
        #expect(try sse.nextEvent().command == "FETCH")
        _ = try h.call("DELETE", "/users/me/mailboxes/\(h.inbox)/messages/1")
        #expect(try sse.nextEvent().command == "EXPUNGE")
        #expect(try sse.nextEvent().command == "COUNTERS")
    }

    @Test func replayFromLastEventIdThenLive() throws {
        let h = try Harness()
        let inbox = h.inbox
        let junk = try #require(h.account.mailboxId(path: "Junk"))
        for i in 1...3 { try h.account.deliver(mail(i), to: inbox) }
        try h.account.deliver(mail(4), to: junk)
        let ids = h.account.journal(after: nil).map(\.id)
        #expect(ids.count == 4)
        // reconnect after the first event: header form; the replay spans all mailboxes
        let again = try SSEReader(port: h.server.port, token: h.token, lastEventId: ids[0])
        var replay: [SSEEvent] = []
        for _ in 0..<5 { replay.append(try again.nextEvent()) }
        #expect(replay.prefix(3).map(\.id) == Array(ids[1...3]))
        // a delivery to Junk carries no `junk` key (only a move across Junk does)
        #expect(replay[2].json?["mailbox"] == .string(junk) && replay[2].json?["junk"] == nil)
        let counters = replay[3...].map { $0.json }
        #expect(counters.allSatisfy { $0?["command"] == .string("COUNTERS") })
        #expect(replay[3].json?["mailbox"] == .string(inbox) && replay[3].json?["total"] == .int(3) && replay[3].json?["unseen"] == .int(3))
        #expect(replay[4].json?["mailbox"] == .string(junk))
        #expect(replay[3].id == ids[3] && replay[4].id == ids[3])
        // the replay does not move the stream's position: the first live read sends the replayed entries again
        try h.account.deliver(mail(5), to: inbox)
        var live: [SSEEvent] = []
        for _ in 0..<4 { live.append(try again.nextEvent()) }
        #expect(live.map(\.id) == Array(ids[1...3]) + [h.account.latestJournalId])
        #expect(live[3].json?["uid"] == .int(4))
        #expect(try again.nextEvent().command == "COUNTERS" && (try again.nextEvent()).command == "COUNTERS")
        // from then on the position follows the reads
        try h.account.deliver(mail(6), to: inbox)
        #expect(try again.nextEvent().json?["uid"] == .int(5))
        // query form, and no backlog without an id
        let q = try SSEReader(port: h.server.port, token: h.token, lastEventId: ids[2], viaQuery: true)
        #expect(try q.nextEvent().id == ids[3])
        let fresh = try SSEReader(port: h.server.port, token: h.token)
        #expect(try fresh.next().comment == "idling 1")
        try h.account.deliver(mail(7), to: inbox)
        #expect(try fresh.nextEvent().json?["uid"] == .int(6))
    }

    @Test func bulkMoveStreamsEveryExpungeBeforeEveryExists() throws {
        let h = try Harness()
        let work = try h.account.createMailbox(path: "Work")
        for i in 1...3 { try h.account.deliver(mail(i), to: h.inbox) }
        let sse = try SSEReader(port: h.server.port, token: h.token)
        // A later second: the API's entries sort before another client's of the same second, and
        // the live read, which starts after the deliveries, would not send them.
        h.account.setClock { Date().addingTimeInterval(2) }
        _ = try h.call("PUT", "/users/me/mailboxes/\(h.inbox)/messages", json: #"{"message":"1:3","moveTo":"\#(work)","seen":true}"#)
        var got: [String] = []
        for _ in 0..<8 { got.append(try sse.nextEvent().command ?? "") }
        #expect(got == ["EXPUNGE", "EXPUNGE", "EXPUNGE", "EXISTS", "EXISTS", "EXISTS", "COUNTERS", "COUNTERS"])
    }

    @Test func heartbeats() throws {
        let h = try Harness()
        h.server.setSSEHeartbeat(seconds: 0.05)
        let sse = try SSEReader(port: h.server.port, token: h.token)
        let a = try sse.next(), b = try sse.next()
        #expect(a.comment == "idling 1" && b.comment == "idling 2")
    }

    @Test func errorsAndFaults() throws {
        let h = try Harness()
        #expect(try h.get("/users/me/updates?Last-Event-ID=xyz").status == 400)
        let noToken = try RawClient(port: h.server.port).call("GET", "/users/me/updates")
        #expect(noToken.status == 403 && noToken.json?["code"] == .string("InvalidToken"))
        // refuse with 404
        h.server.injectFault(.status(404, body: #"{"code":"ResourceNotFound","message":"/users/me/updates does not exist"}"#), on: "updates")
        #expect(try SSEReader(port: h.server.port, token: h.token).status == 404)
        // drop before answering
        h.server.injectFault(.dropConnection, on: "updates")
        #expect(throws: ClientError.self) { _ = try SSEReader(port: h.server.port, token: h.token) }
        // truncateBody: replay, then the stream ends
        let first = try SSEReader(port: h.server.port, token: h.token)
        try h.account.deliver(mail(1), to: h.inbox)
        try h.account.deliver(mail(2), to: h.inbox)
        let id1 = try #require(try first.nextEvent().id)
        h.server.injectFault(.truncateBody, on: "updates")
        let cut = try SSEReader(port: h.server.port, token: h.token, lastEventId: id1)
        #expect(try cut.nextEvent().json?["uid"] == .int(2))
        #expect(try cut.nextEvent().command == "COUNTERS")
        #expect(cut.endsWithoutEvents())
        #expect(h.server.stats()["updates"] == 6)
    }

    @Test func dropStreamsAndStop() throws {
        let h = try Harness()
        let a = try SSEReader(port: h.server.port, token: h.token)
        let b = try SSEReader(port: h.server.port, token: h.token)
        try h.account.deliver(mail(1), to: h.inbox)
        for r in [a, b] { _ = try r.nextEvent(); _ = try r.nextEvent() }  // EXISTS, COUNTERS
        #expect(h.server.openUpdateStreams == 2)
        h.server.dropUpdateStreams()
        #expect(a.endsWithoutEvents() && b.endsWithoutEvents())
        let c = try SSEReader(port: h.server.port, token: h.token)
        try h.account.deliver(mail(2), to: h.inbox)
        _ = try c.nextEvent(); _ = try c.nextEvent()
        h.server.stop()
        #expect(c.endsWithoutEvents())
    }

    @Test func journalTTLExpiresEntries() throws {
        let account = SimAccount()
        let inbox = try #require(account.mailboxId(path: "INBOX"))
        let clock = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
        account.setClock { clock.withLock { $0 } }
        func advance(_ seconds: Double) { clock.withLock { $0 = $0.addingTimeInterval(seconds) } }
        try account.deliver(mail(1), to: inbox)
        advance(2 * 3600)
        try account.deliver(mail(2), to: inbox)
        #expect(account.journalCount == 2)
        // the server's TTL is three hours: the first entry goes, also for a reader that writes nothing
        advance(3600 + 1)
        #expect(account.journal(after: nil).count == 1)
        #expect(account.journalCount == 1)
        advance(3 * 3600)
        #expect(account.journal(after: nil).isEmpty)
        // a shorter TTL (wdsync-sim --journal-ttl)
        account.setJournalTTL(seconds: 60)
        try account.deliver(mail(3), to: inbox)
        advance(61)
        try account.deliver(mail(4), to: inbox)
        #expect(account.journal(after: nil).count == 1)
        // ids carry the (injected) time in their first four bytes
        #expect(account.latestJournalId?.prefix(8) == Substring(String(Int(clock.withLock { $0 }.timeIntervalSince1970), radix: 16)))
    }
}
