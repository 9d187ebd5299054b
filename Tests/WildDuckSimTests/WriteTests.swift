import Foundation
import Testing
import WebSocket
@testable import WildDuckSim

/// The write routes behave as WildDuck's code does (lib/api/messages.js, lib/message-handler.js), so a
/// two-way client cannot pass against a friendlier server than the real one.
@Suite struct WriteTests {
    func upload(_ h: Harness, _ raw: [UInt8], query: String = "", mailbox: String? = nil) throws -> Reply {
        try h.client.sendRaw(RawClient.request("POST", "/users/me/mailboxes/\(mailbox ?? h.inbox)/messages\(query)", token: h.token,
                                               body: raw, contentType: "message/rfc822"))
        return try h.client.readReply()
    }

    func listed(_ h: Harness, _ mailbox: String) throws -> [JSONValue] {
        try #require(try h.get("/users/me/mailboxes/\(mailbox)/messages?order=asc&limit=250").json?["results"]?.arrayValue)
    }

    func modifyIndex(_ h: Harness, _ id: String) -> Int { h.account.mailboxes().first { $0.id == id }?.modifyIndex ?? -1 }

    /// The ids in the journal now.
    func written(_ h: Harness) -> Set<String> { Set(h.account.journal(after: nil).map(\.id)) }

    /// Entries written since `before`, in id order. Not `journal(after:)` the last id: the API's
    /// entries sort before another client's written in the same second (SimProcess).
    func entries(_ h: Harness, since before: Set<String>) -> [JournalEntry] {
        h.account.journal(after: nil).filter { !before.contains($0.id) }
    }

    func commands(_ h: Harness, since before: Set<String>) -> [String] { entries(h, since: before).map(\.command) }

    // MARK: upload

    @Test func uploadStoresARebuiltCRLFCopyWithQueryFlags() throws {
        let h = try Harness()
        let lf = Array("From: A <a@example.com>\nSubject: LF only\nMessage-ID: <lf@test>\n\nline one\nline two\n".utf8)
        let crlf = Array("From: A <a@example.com>\r\nSubject: LF only\r\nMessage-ID: <lf@test>\r\n\r\nline one\r\nline two\r\n".utf8)
        let r = try upload(h, lf)
        #expect(r.status == 200)
        #expect(r.json == .object([("success", .bool(true)),
                                   ("message", .object([("id", .int(1)), ("mailbox", .string(h.inbox)), ("size", .int(crlf.count))]))]))
        #expect(try h.get("/users/me/mailboxes/\(h.inbox)/messages/1/message.eml").body == crlf)
        let first = try #require(try listed(h, h.inbox).first)
        #expect(first["size"] == .int(crlf.count) && first["messageId"] == .string("<lf@test>"))
        // no query flags: \Seen (unseen defaults to false), nothing else
        #expect(first["seen"] == .bool(true) && first["flagged"] == .bool(false) && first["draft"] == .bool(false))

        let flagged = try upload(h, crlf, query: "?unseen=true&flagged=true&draft=true&date=2020-01-02T03:04:05.000Z")
        #expect(flagged.json?["message"]?["id"] == .int(2))
        let second = try #require(try listed(h, h.inbox).first { $0["id"] == .int(2) })
        #expect(second["seen"] == .bool(false) && second["flagged"] == .bool(true) && second["draft"] == .bool(true))
        #expect(second["idate"] == .string("2020-01-02T03:04:05.000Z"))
        #expect(h.account.messages(mailboxId: h.inbox).last?.flags == ["\\Draft", "\\Flagged"])

        // uploading the same bytes again makes a third message: nothing de-duplicates
        #expect(try upload(h, crlf).json?["message"]?["id"] == .int(3))
        #expect(h.account.messages(mailboxId: h.inbox).filter { $0.messageId == "<lf@test>" }.count == 3)
    }

    @Test func uploadJSONRawIsTextAndOtherFieldsCompose() throws {
        let h = try Harness()
        let message = "Subject: b64\r\n\r\nhello\r\n"
        let b64 = Data(message.utf8).base64EncodedString()
        let r = try h.call("POST", "/users/me/mailboxes/\(h.inbox)/messages", json: #"{"raw":"\#(b64)"}"#)
        #expect(r.status == 200)
        let eml = try h.get("/users/me/mailboxes/\(h.inbox)/messages/1/message.eml").text
        // stored as the base64 text itself, not decoded
        #expect(eml.hasPrefix(b64) && !eml.contains("hello"))
        // no Message-ID header: the server makes one up
        #expect(h.account.messages(mailboxId: h.inbox).first?.messageId.hasSuffix("@wildduck.email>") == true)
        // without raw, WildDuck composes a message from the fields (From: the user)
        let composed = try h.call("POST", "/users/me/mailboxes/\(h.inbox)/messages", json: #"{"subject":"Built","text":"Body text"}"#)
        #expect(composed.json?["message"]?["id"] == .int(2))
        let built = try h.get("/users/me/mailboxes/\(h.inbox)/messages/2/message.eml").text
        #expect(built.contains("From: Demo <demo@example.com>\r\n") && built.contains("Subject: Built\r\n") && built.contains("Body text"))
        #expect(try h.get("/users/me/mailboxes/\(h.inbox)/messages/2").json?["subject"] == .string("Built"))
    }

    @Test func uploadErrors() throws {
        let h = try Harness()
        let raw = mail(1)
        let empty = try upload(h, [])
        #expect(empty.status == 400 && empty.json == .object([("error", .string("Empty message provided")), ("code", .string("EmptyMessage"))]))
        let missing = try upload(h, raw, mailbox: "0123456789abcdef01234567")
        #expect(missing.status == 404 && missing.json?["code"] == .string("NoSuchMailbox"))
        // no generic flags array, in the query or in JSON
        let queryFlags = try upload(h, raw, query: "?flags=%5CAnswered")
        #expect(queryFlags.status == 400 && queryFlags.json?["details"]?["flags"] != nil)
        let jsonFlags = try h.call("POST", "/users/me/mailboxes/\(h.inbox)/messages", json: #"{"raw":"Subject: x\r\n\r\ny","flags":["\\Seen"]}"#)
        #expect(jsonFlags.status == 400 && jsonFlags.json?["code"] == .string("InputValidationError"))
        #expect(try upload(h, raw, query: "?unseen=maybe").status == 400)
        #expect(try upload(h, raw, query: "?date=not-a-date").status == 400)
        // the size limit applies to the bytes sent
        h.account.maxMessageSize = raw.count
        #expect(try upload(h, raw).status == 200)
        let big = try upload(h, raw + [0x41])
        #expect(big.status == 400)
        #expect(big.json?["error"] == .string("\"raw\" must be less than or equal to \(raw.count) bytes"))
        #expect(big.json?["code"] == .string("InputValidationError") && big.json?["details"]?["raw"] != nil)
        #expect(h.account.messages(mailboxId: h.inbox).count == 1)
        // over quota: the upload that crosses it is stored, the next one refused
        h.account.maxMessageSize = 64 * 1024 * 1024
        h.account.quota = raw.count + 1
        #expect(try upload(h, raw).status == 200)
        #expect(try h.get("/users/me").json?["limits"]?["quota"]?["used"] == .int(2 * raw.count))
        let over = try upload(h, raw)
        #expect(over.status == 400 && over.json == .object([("error", .string("User is over quota")), ("code", .string("OverQuotaError"))]))
        _ = try h.call("DELETE", "/users/me/mailboxes/\(h.inbox)/messages/1")
        #expect(try upload(h, raw).status == 200)
    }

    // MARK: flag updates

    @Test func flagUpdateSelectorsAndKeys() throws {
        let h = try Harness()
        for i in 1...4 { try h.account.deliver(mail(i), to: h.inbox, seen: i == 1) }
        let bulk = "/users/me/mailboxes/\(h.inbox)/messages"
        // the selector is a JSON string: a list or one range
        #expect(try h.call("PUT", bulk, json: #"{"message":"1,2","flagged":true}"#).json?["updated"] == .int(2))
        #expect(try h.call("PUT", bulk, json: #"{"message":"4:2","flagged":true}"#).json?["updated"] == .int(3))
        #expect(try h.call("PUT", bulk, json: #"{"message":"3:*","flagged":false}"#).json?["updated"] == .int(2))
        for bad in [#"{"message":2,"seen":true}"#, #"{"message":"1,3:4","seen":true}"#, #"{"message":"1:2,4","seen":true}"#,
                    #"{"message":"*","seen":true}"#, #"{"seen":true}"#] {
            let r = try h.call("PUT", bulk, json: bad)
            #expect(r.status == 400 && r.json?["code"] == .string("InputValidationError") && r.json?["details"]?["message"] != nil, "\(bad)")
        }
        #expect(try h.call("PUT", "\(bulk)/1:x", json: #"{"seen":true}"#).status == 400)
        // unknown keys are rejected, answered included
        let unknown = try h.call("PUT", bulk, json: #"{"message":"1","seen":true,"answered":true}"#)
        #expect(unknown.status == 400 && unknown.json?["details"]?["answered"] != nil)
        #expect(try h.call("PUT", "\(bulk)/1", json: #"{"seen":true,"labels":[]}"#).status == 400)
        // `updated` counts every matched message, changed or not (message 1 is already seen)
        #expect(try h.call("PUT", "\(bulk)/1,2,3,9", json: #"{"seen":true}"#).json == .object([("success", .bool(true)), ("updated", .int(3))]))
        let none = try h.call("PUT", bulk, json: #"{"message":"7:9","seen":true}"#)
        #expect(none.status == 404 && none.json == .object([("error", .string("No message matched query")), ("code", .string("MessageNotFound"))]))
        // deleted:true sets \Deleted and expunges nothing
        #expect(try h.call("PUT", "\(bulk)/4", json: #"{"deleted":true}"#).json?["updated"] == .int(1))
        #expect(try listed(h, h.inbox).count == 4 && (try listed(h, h.inbox))[3]["deleted"] == .bool(true))
    }

    @Test func draftWritesTheFlaggedField() throws {
        let h = try Harness()
        try h.account.deliver(mail(1), to: h.inbox)
        let path = "/users/me/mailboxes/\(h.inbox)/messages/1"
        #expect(try h.call("PUT", path, json: #"{"draft":true}"#).json?["updated"] == .int(1))
        var item = try #require(try listed(h, h.inbox).first)
        #expect(item["flagged"] == .bool(true) && item["draft"] == .bool(false))
        #expect(try h.get(path).json?["flagged"] == .bool(true))
        #expect(h.account.messages(mailboxId: h.inbox)[0].flags == ["\\Draft"])
        #expect(try h.get("/users/me/search?mailbox=\(h.inbox)&flagged=true").json?["results"]?.arrayValue?.count == 1)
        #expect(try h.call("PUT", path, json: #"{"draft":false}"#).json?["updated"] == .int(1))
        item = try #require(try listed(h, h.inbox).first)
        #expect(item["flagged"] == .bool(false) && item["draft"] == .bool(false))
        #expect(h.account.messages(mailboxId: h.inbox)[0].flags == [])
    }

    @Test func nonTransientErrors() throws {
        let h = try Harness()
        try h.account.deliver(mail(1), to: h.inbox)
        let nothing = try h.call("PUT", "/users/me/mailboxes/\(h.inbox)/messages/1", json: #"{"sess":"abc"}"#)
        #expect(nothing.status == 500 && nothing.json == .object([("error", .string("Nothing was changed"))]))
        let gone = "0123456789abcdef01234567"
        let expected = JSONValue.object([("error", .string("Mailbox is missing"))])
        let flag = try h.call("PUT", "/users/me/mailboxes/\(gone)/messages/1", json: #"{"seen":true}"#)
        #expect(flag.status == 500 && flag.json == expected)
        let source = try h.call("PUT", "/users/me/mailboxes/\(gone)/messages/1", json: #"{"moveTo":"\#(h.inbox)"}"#)
        #expect(source.status == 500 && source.json == expected)
        let target = try h.call("PUT", "/users/me/mailboxes/\(h.inbox)/messages/1", json: #"{"moveTo":"\#(gone)"}"#)
        #expect(target.status == 500 && target.json == expected)
        #expect(h.account.messages(mailboxId: h.inbox).count == 1)
    }

    // MARK: moves

    @Test func moveGivesNewUidsAndAppliesFlagsWithoutFetch() throws {
        let h = try Harness()
        let work = try h.account.createMailbox(path: "Work")
        for i in 1...3 { try h.account.deliver(mail(i), to: h.inbox) }
        let before = written(h)
        let mv = try h.call("PUT", "/users/me/mailboxes/\(h.inbox)/messages", json: #"{"message":"1,3","moveTo":"\#(work)","seen":true,"flagged":true}"#)
        #expect(mv.json == .object([("success", .bool(true)), ("mailbox", .string(work)),
                                    ("id", .array([.array([.int(1), .int(1)]), .array([.int(3), .int(2)])]))]))
        #expect(h.account.messages(mailboxId: work).map(\.flags) == [["\\Flagged", "\\Seen"], ["\\Flagged", "\\Seen"]])
        #expect(h.account.messages(mailboxId: h.inbox).map(\.uid) == [2])
        // every EXPUNGE before every EXISTS, no FETCH; the copies get new `message` ids
        let journaled = entries(h, since: before)
        #expect(journaled.map(\.command) == ["EXPUNGE", "EXPUNGE", "EXISTS", "EXISTS"])
        let ids = journaled.compactMap { e in e.fields.first { $0.0 == "message" }?.1.stringValue }
        #expect(Set(ids).count == 4)
        // a move into the same mailbox gives new uids
        let same = try h.call("PUT", "/users/me/mailboxes/\(work)/messages/1:*", json: #"{"moveTo":"\#(work)"}"#)
        #expect(same.json?["id"] == .array([.array([.int(1), .int(3)]), .array([.int(2), .int(4)])]))
        #expect(h.account.messages(mailboxId: work).map(\.uid) == [3, 4])
        let missing = try h.call("PUT", "/users/me/mailboxes/\(h.inbox)/messages/9", json: #"{"moveTo":"\#(work)"}"#)
        #expect(missing.status == 404)
        #expect(missing.json == .object([("error", .string("Could not move message, check if message exists")), ("code", .string("MessageNotFound"))]))
    }

    @Test func junkMarkerOnlyOnMovesAcrossJunk() throws {
        let h = try Harness()
        let junk = try #require(h.account.mailboxId(path: "Junk"))
        try h.account.deliver(mail(1), to: h.inbox)
        let before = written(h)
        _ = try h.call("PUT", "/users/me/mailboxes/\(h.inbox)/messages/1", json: #"{"moveTo":"\#(junk)"}"#)
        _ = try h.call("PUT", "/users/me/mailboxes/\(junk)/messages/1", json: #"{"moveTo":"\#(h.inbox)"}"#)
        let junkValues = entries(h, since: before).filter { $0.command == "EXISTS" }.map { e in e.fields.first { $0.0 == "junk" }?.1 }
        #expect(junkValues == [.int(1), .int(-1)])
    }

    // MARK: delete

    @Test func deleteAnswers() throws {
        let h = try Harness()
        try h.account.deliver(mail(1), to: h.inbox)
        let path = "/users/me/mailboxes/\(h.inbox)/messages/1"
        #expect(try h.call("DELETE", path).json == .object([("success", .bool(true))]))
        let again = try h.call("DELETE", path)
        #expect(again.status == 404 && again.json == .object([("error", .string("Message was not found"))]))
        let noBox = try h.call("DELETE", "/users/me/mailboxes/0123456789abcdef01234567/messages/1")
        #expect(noBox.status == 404 && noBox.json == .object([("error", .string("Message was not found"))]))
        #expect(try h.call("DELETE", "/users/me/mailboxes/\(h.inbox)/messages/abc").status == 400)
    }

    // MARK: modifyIndex

    @Test func modifyIndexCountsRequestsAndBatches() throws {
        let h = try Harness()
        let work = try h.account.createMailbox(path: "Work")
        let inbox = h.inbox
        let raw = mail(1)
        _ = try upload(h, raw)
        _ = try upload(h, raw)
        #expect(modifyIndex(h, inbox) == 2)                        // +1 per upload
        let put = "/users/me/mailboxes/\(inbox)/messages"
        _ = try h.call("PUT", "\(put)/1", json: #"{"flagged":true}"#)
        #expect(modifyIndex(h, inbox) == 4)                        // +1 for the request, +1 for its FETCH batch
        _ = try h.call("PUT", "\(put)/1", json: #"{"flagged":true}"#)
        #expect(modifyIndex(h, inbox) == 6)                        // nothing changed: still +2
        _ = try h.call("PUT", "\(put)/77", json: #"{"flagged":true}"#)
        #expect(modifyIndex(h, inbox) == 7)                        // nothing matched: +1, no FETCH batch
        for i in 3...151 { try h.account.deliver(mail(i), to: inbox) }
        #expect(modifyIndex(h, inbox) == 156)
        let before = written(h)
        #expect(try h.call("PUT", put, json: #"{"message":"1:*","seen":false}"#).json?["updated"] == .int(151))
        #expect(modifyIndex(h, inbox) == 159)                      // +1, then two FETCH batches (150 + 1)
        #expect(commands(h, since: before) == Array(repeating: "FETCH", count: 151))
        let moveStart = written(h)
        _ = try h.call("PUT", put, json: #"{"message":"1:*","moveTo":"\#(work)"}"#)
        #expect(modifyIndex(h, inbox) == 160)                      // source: +1 per request
        #expect(modifyIndex(h, work) == 2)                         // target: +1 per 150 messages
        #expect(commands(h, since: moveStart) == Array(repeating: "EXPUNGE", count: 150) + Array(repeating: "EXISTS", count: 150) + ["EXPUNGE", "EXISTS"])
        _ = try h.call("DELETE", "/users/me/mailboxes/\(work)/messages/1")
        _ = try h.call("DELETE", "/users/me/mailboxes/\(work)/messages/2")
        #expect(modifyIndex(h, work) == 4)                         // +1 per deleted message
    }
}

/// `/ws` is fed by the same journal: a write produces the same updates, in the same order.
@Suite struct WriteWebSocketTests {
    @Test func moveUpdatesComeExpungeFirst() async throws {
        let h = try Harness()
        let work = try h.account.createMailbox(path: "Work")
        for i in 1...3 { try h.account.deliver(mail(i), to: h.inbox) }
        let ws = try await WebSocketClient.connect(url: "ws://127.0.0.1:\(h.server.port)/ws")
        var messages = ws.messages.makeAsyncIterator()
        func next() async throws -> JSONValue? {
            guard case let .text(t)? = try await messages.next() else { return nil }
            return JSONValue.parse(t)
        }
        for box in [h.inbox, work] {
            try await ws.send(text: #"{"type":"subscribe","channel":"messages","data":{"userId":"\#(h.account.userId)","token":"\#(h.token)","mailboxId":"\#(box)"}}"#)
            #expect(try await next()?["data"]?["response"]?["success"] == .bool(true))
        }
        _ = try h.call("PUT", "/users/me/mailboxes/\(h.inbox)/messages", json: #"{"message":"1:3","moveTo":"\#(work)"}"#)
        var events: [String] = []
        while events.count < 6, let m = try await next() {
            if let e = m["data"]?["response"]?["event"]?.stringValue { events.append(e) }
        }
        #expect(events == ["deleted", "deleted", "deleted", "created", "created", "created"])
        await ws.close()
    }
}

/// `GET /users/:user/search` as WildDuck's prepareSearchFilter: what a two-way client uses to find a
/// message again (by Message-ID, date and subject) after an upload whose reply was lost.
@Suite struct SearchTests {
    func results(_ h: Harness, _ query: String) throws -> [JSONValue] {
        try #require(try h.get("/users/me/search?" + query).json?["results"]?.arrayValue)
    }

    func ids(_ h: Harness, _ query: String) throws -> [Int] { try results(h, query).compactMap { $0["id"]?.intValue } }

    @Test func findsALostUploadByMessageIdDateAndSubject() throws {
        let h = try Harness()
        for i in 1...5 { try h.account.deliver(mail(i, subject: "Report \(i)"), to: h.inbox) }
        let raw = Array("From: Me <me@example.com>\nTo: You <you@example.com>\nCc: Boss <boss@example.com>\nSubject: Report 6\nMessage-ID: <lost@example.com>\n\nhi\n".utf8)
        try h.client.sendRaw(RawClient.request("POST", "/users/me/mailboxes/\(h.inbox)/messages?date=2021-06-01T12:00:00.000Z",
                                               token: h.token, body: raw, contentType: "message/rfc822"))
        let uid = try #require(try h.client.readReply().json?["message"]?["id"]?.intValue)
        // the reply was "lost": look for it by date window and subject, then compare Message-IDs
        let window = "mailbox=\(h.inbox)&datestart=2021-06-01T11:59:00.000Z&dateend=2021-06-01T12:01:00.000Z&subject=report%206"
        let found = try results(h, window)
        #expect(found.count == 1)
        #expect(found.first?["messageId"] == .string("<lost@example.com>") && found.first?["id"] == .int(uid))
        // partial, case-insensitive header matches; `to` also matches Cc
        #expect(try ids(h, "mailbox=\(h.inbox)&from=ME%20%3Cme%40") == [uid])
        #expect(try ids(h, "mailbox=\(h.inbox)&to=boss") == [uid])
        #expect(try ids(h, "mailbox=\(h.inbox)&subject=REPORT&limit=250").count == 6)
        // the date filters are on the internal date, not the Date header (2024 for the others)
        #expect(try ids(h, "mailbox=\(h.inbox)&dateend=2022-01-01").count == 1)
        #expect(try ids(h, "mailbox=\(h.inbox)&datestart=2023-01-01").count == 5)
        #expect(try h.get("/users/me/search?datestart=yesterday-ish").status == 400)
    }

    @Test func filtersPagingAndUnknownMailbox() throws {
        let h = try Harness()
        let base = Date(timeIntervalSince1970: 1_700_000_000)
        for i in 1...30 { try h.account.deliver(mail(i), to: h.inbox, seen: i > 2, flagged: i == 3, idate: base.addingTimeInterval(Double(31 - i) * 60)) }
        let unknown = try #require(try h.get("/users/me/search?mailbox=0123456789abcdef01234567").json)
        #expect(unknown["success"] == .bool(true) && unknown["total"] == .int(0) && unknown["results"] == .array([]))
        #expect(unknown["query"] == nil)
        #expect(try h.get("/users/me/search?query=Body").json?["query"] == .string("Body"))
        // `flagged`, `unseen`: true filters, false does not
        #expect(try ids(h, "flagged=true") == [3])
        #expect(try ids(h, "flagged=false&limit=250").count == 30)
        #expect(Set(try ids(h, "unseen=true")) == [1, 2])
        #expect(try ids(h, "unseen=false&limit=250").count == 30)
        // limit: 20 by default, at most 250; the next cursor walks the rest
        let first = try #require(try h.get("/users/me/search?mailbox=\(h.inbox)").json)
        #expect(first["results"]?.arrayValue?.count == 20)
        let next = try #require(first["nextCursor"]?.stringValue)
        #expect(try h.get("/users/me/search?mailbox=\(h.inbox)&next=\(next)").json?["results"]?.arrayValue?.count == 10)
        #expect(try h.get("/users/me/search?limit=251").status == 400)
        // no order: newest stored first; with an order: by internal date (any value but asc is descending)
        #expect(try ids(h, "mailbox=\(h.inbox)&limit=3") == [30, 29, 28])
        #expect(try ids(h, "mailbox=\(h.inbox)&limit=3&order=asc") == [30, 29, 28])
        #expect(try ids(h, "mailbox=\(h.inbox)&limit=3&order=desc") == [1, 2, 3])
        #expect(try ids(h, "mailbox=\(h.inbox)&limit=3&order=sideways") == [1, 2, 3])
    }
}
