import Foundation
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
        let inbox = h.inbox
        let uid = try h.account.deliver(mail(1), to: inbox)
        let exists = try sse.nextEntry()
        #expect(exists.command == "EXISTS")
        #expect(exists.json?["mailbox"] == .string(inbox) && exists.json?["uid"] == .int(uid))
        #expect(exists.json?["message"]?.stringValue?.count == 24 && exists.json?["thread"] != nil && exists.json?["idate"] != nil)
        #expect(exists.id?.count == 24)
        #expect(exists.json?["unseen"] == nil && exists.json?["modseq"] == nil && exists.json?["user"] == nil)

        try h.account.setFlags(mailboxId: inbox, uid: uid, seen: true, flagged: true)
        let fetch = try sse.nextEntry()
        #expect(fetch.command == "FETCH")
        #expect(fetch.json?["flags"] == .array([.string("\\Flagged"), .string("\\Seen")]))

        let work = try h.account.createMailbox(path: "Work")
        let create = try sse.nextEntry()
        #expect(create.command == "CREATE" && create.json?["mailbox"] == .string(work) && create.json?["path"] == .string("Work"))

        let newUid = try h.account.move(mailboxId: inbox, uid: uid, to: work)
        let e1 = try sse.nextEntry(), e2 = try sse.nextEntry()
        #expect(e1.command == "EXPUNGE" && e1.json?["mailbox"] == .string(inbox) && e1.json?["uid"] == .int(uid))
        #expect(e2.command == "EXISTS" && e2.json?["mailbox"] == .string(work) && e2.json?["uid"] == .int(newUid))
        // the moved copy is a new stored message with a new `message` id
        #expect(e1.json?["message"] != nil && e2.json?["message"] != nil && e1.json?["message"] != e2.json?["message"])

        try h.account.renameMailbox(id: work, to: "Job")
        let rename = try sse.nextEntry()
        #expect(rename.command == "RENAME" && rename.json?["path"] == .string("Job"))
        try h.account.expunge(mailboxId: work, uid: newUid)
        #expect(try sse.nextEntry().command == "EXPUNGE")
        try h.account.deleteMailbox(id: work)
        let del = try sse.nextEntry()
        #expect(del.command == "DELETE" && del.json == .object([("command", .string("DELETE")), ("mailbox", .string(work))]))
        // ids only go up
        #expect([exists, fetch, create, e1, e2, rename, del].compactMap(\.id) == [exists, fetch, create, e1, e2, rename, del].compactMap(\.id).sorted())
    }

    @Test func restMutationsArePublished() throws {
        let h = try Harness()
        let sse = try SSEReader(port: h.server.port, token: h.token)
        _ = try h.call("POST", "/users/me/mailboxes", json: #"{"path":"Viaрest"}"#)
        #expect(try sse.nextEntry().command == "CREATE")
        let raw = Array("Subject: x\r\n\r\ny".utf8)
        try h.client.sendRaw(RawClient.request("POST", "/users/me/mailboxes/\(h.inbox)/messages", token: h.token, body: raw, contentType: "message/rfc822"))
        _ = try h.client.readReply()
        #expect(try sse.nextEntry().command == "EXISTS")
        _ = try h.call("PUT", "/users/me/mailboxes/\(h.inbox)/messages/1", json: #"{"flagged":true}"#)
        #expect(try sse.nextEntry().command == "FETCH")
        _ = try h.call("DELETE", "/users/me/mailboxes/\(h.inbox)/messages/1")
        #expect(try sse.nextEntry().command == "EXPUNGE")
    }

    @Test func replayFromLastEventIdThenLive() throws {
        let h = try Harness()
        let inbox = h.inbox
        let junk = try #require(h.account.mailboxId(path: "Junk"))
        let first = try SSEReader(port: h.server.port, token: h.token)
        for i in 1...3 { try h.account.deliver(mail(i), to: inbox) }
        try h.account.deliver(mail(4), to: junk)
        var ids: [String] = []
        for _ in 0..<4 { ids.append(try #require(try first.nextEvent().id)) }
        // reconnect after the first event: header form
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
        // then live: the replay did not move the stream's position, so the first live read
        // sends it again before the new entry
        try h.account.deliver(mail(5), to: inbox)
        #expect(try (0..<3).map { _ in try again.nextEntry().id } == Array(ids[1...3]))
        #expect(try again.nextEntry().json?["uid"] == .int(4))
        // query form, and no backlog without an id
        let q = try SSEReader(port: h.server.port, token: h.token, lastEventId: ids[2], viaQuery: true)
        #expect(try q.nextEvent().id == ids[3])
        let fresh = try SSEReader(port: h.server.port, token: h.token)
        try h.account.deliver(mail(6), to: inbox)
        #expect(try fresh.nextEntry().json?["uid"] == .int(5))
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
        _ = try a.nextEntry(); _ = try b.nextEntry()
        #expect(h.server.openUpdateStreams == 2)
        h.server.dropUpdateStreams()
        #expect(a.endsWithoutEvents() && b.endsWithoutEvents())
        let c = try SSEReader(port: h.server.port, token: h.token)
        try h.account.deliver(mail(2), to: h.inbox)
        _ = try c.nextEntry()
        h.server.stop()
        #expect(c.endsWithoutEvents())
    }

    @Test func journalTTLExpiresEntries() throws {
        let account = SimAccount()
        let inbox = try #require(account.mailboxId(path: "INBOX"))
        account.setJournalTTL(seconds: 0.005)
        try account.deliver(mail(1), to: inbox)
        #expect(account.journalCount == 1)
        let t0 = Date()
        while Date().timeIntervalSince(t0) < 0.02 { usleep(1000) }  // let the first entry age past the TTL
        try account.deliver(mail(2), to: inbox)
        #expect(account.journalCount == 1)
        account.setJournalTTL(seconds: 3 * 3600)
        try account.deliver(mail(3), to: inbox)
        #expect(account.journalCount == 2)
    }
}
