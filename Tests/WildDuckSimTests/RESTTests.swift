import Foundation
import Testing
import Lock
@testable import WildDuckSim

@Suite struct AuthTests {
    @Test func authenticateSuccessShape() throws {
        let h = try Harness()
        let r = try h.client.call("POST", "/authenticate", json: #"{"username":"demo","password":"demo","scope":"master","token":true}"#)
        #expect(r.status == 200)
        let j = try #require(r.json)
        #expect(j["success"] == .bool(true))
        #expect(j["id"]?.stringValue == h.account.userId)
        #expect(j["username"] == .string("demo"))
        #expect(j["address"] == .string("demo@example.com"))
        #expect(j["scope"] == .string("master"))
        #expect(j["require2fa"] == .array([]))
        #expect(j["requirePasswordChange"] == .bool(false))
        let tok = try #require(j["token"]?.stringValue)
        #expect(tok.count == 40 && tok.allSatisfy { $0.isHexDigit })
        // without token:true there is no token
        let r2 = try h.client.call("POST", "/authenticate", json: #"{"username":"demo","password":"demo"}"#)
        #expect(r2.json?["token"] == nil)
    }

    @Test func authenticateFailures() throws {
        let h = try Harness()
        let bad = try h.client.call("POST", "/authenticate", json: #"{"username":"demo","password":"nope","token":true}"#)
        #expect(bad.status == 403)
        #expect(bad.json == .object([("error", .string("Authentication failed")), ("code", .string("AuthFailed"))]))
        let unknown = try h.client.call("POST", "/authenticate", json: #"{"username":"demo","password":"demo","isDev":true}"#)
        #expect(unknown.status == 400)
        #expect(unknown.json?["code"] == .string("InputValidationError"))
        #expect(unknown.json?["details"]?["isDev"] != nil)
        let scope = try h.client.call("POST", "/authenticate", json: #"{"username":"demo","password":"demo","scope":"imap","token":true}"#)
        #expect(scope.status == 400)
    }

    /// WildDuck's rate limit: 12 failures within 2 minutes of the first lock the user out, the
    /// right password included, with the same 403 and another `code`; a success clears the count.
    @Test func authenticationIsRateLimited() throws {
        let h = try Harness()
        let clock = Mutex(Date())
        h.account.setClock { clock.withLock { $0 } }
        func login(_ password: String) throws -> Reply {
            try h.client.call("POST", "/authenticate", json: #"{"username":"demo","password":"\#(password)","token":true}"#)
        }
        for _ in 0..<11 { #expect(try login("nope").json?["code"] == .string("AuthFailed")) }
        #expect(try login("demo").status == 200)
        for _ in 0..<12 { #expect(try login("nope").json?["code"] == .string("AuthFailed")) }
        let limited = try login("demo")
        #expect(limited.status == 403)
        #expect(limited.json == .object([("error", .string("Authentication was rate limited")), ("code", .string("RateLimitedError"))]))
        clock.withLock { $0 += 119 }
        #expect(try login("demo").json?["code"] == .string("RateLimitedError"))
        clock.withLock { $0 += 2 }
        #expect(try login("demo").status == 200)
    }

    @Test func tokenErrorsAndPlaces() throws {
        let h = try Harness()
        let expected = JSONValue.object([("code", .string("InvalidToken")), ("message", .string("Invalid accessToken value"))])
        let missing = try h.client.call("GET", "/users/me")
        #expect(missing.status == 403 && missing.json == expected)
        let invalid = try h.client.call("GET", "/users/me", token: String(repeating: "a", count: 40))
        #expect(invalid.status == 403 && invalid.json == expected)
        let short = try h.client.call("GET", "/users/me", token: "abc")
        #expect(short.status == 403 && short.json == expected)
        #expect(try h.client.call("GET", "/users/me?accessToken=\(h.token)").status == 200)
        #expect(try h.client.call("GET", "/users/me", headers: [("Authorization", "Bearer \(h.token)")]).status == 200)
        #expect(try h.client.call("GET", "/users/\(h.account.userId)", token: h.token).status == 200)
        let other = try h.client.call("GET", "/users/0123456789abcdef01234567", token: h.token)
        #expect(other.status == 403 && other.json?["code"] == .string("MissingPrivileges"))
        h.account.revokeTokens()
        let revoked = try h.client.call("GET", "/users/me", token: h.token)
        #expect(revoked.status == 403 && revoked.json == expected)
    }

    @Test func logoutInvalidatesToken() throws {
        let h = try Harness()
        #expect(try h.call("DELETE", "/authenticate").json?["success"] == .bool(true))
        #expect(try h.get("/users/me").status == 403)
    }

    @Test func userObject() throws {
        let h = try Harness()
        h.account.updateUser(["name": "Demo User", "language": "et"])
        try h.account.deliver(mail(1), to: h.inbox)
        let j = try #require(try h.get("/users/me").json)
        #expect(j["success"] == .bool(true))
        #expect(j["name"] == .string("Demo User"))
        #expect(j["language"] == .string("et"))
        #expect(j["limits"]?["quota"]?["allowed"] == .int(1_073_741_824))
        #expect(j["limits"]?["quota"]?["used"] == .int(mail(1).count))
        #expect(j["autoreply"] == .bool(false))
    }

    @Test func unknownRouteAndMethod() throws {
        let h = try Harness()
        let r = try h.get("/users/me/nothing-here")
        #expect(r.status == 404)
        #expect(r.json?["code"] == .string("ResourceNotFound"))
        #expect(r.json?["error"] == nil)
        #expect(try h.get("/").status == 404)
        #expect(try h.call("PATCH", "/users/me/mailboxes").status == 405)
    }
}

@Suite struct MailboxTests {
    @Test func defaultFoldersAndOrder() throws {
        let h = try Harness()
        try h.account.createMailbox(path: "Work")
        try h.account.createMailbox(path: "Work/Projects")
        try h.account.createMailbox(path: "INBOX/Sub")
        let unsub = try h.account.createMailbox(path: "AAA unsubscribed")
        try h.account.updateMailbox(id: unsub, subscribed: false)
        try h.account.createMailbox(path: "archive")
        try h.account.deliver(mail(1), to: h.inbox)
        try h.account.deliver(mail(2), to: h.inbox, seen: true)
        let r = try h.get("/users/me/mailboxes?counters=true")
        let results = try #require(r.json?["results"]?.arrayValue)
        let paths = results.compactMap { $0["path"]?.stringValue }
        #expect(paths == ["INBOX", "INBOX/Sub", "archive", "Drafts", "Junk", "Sent Mail", "Trash", "Work", "Work/Projects", "AAA unsubscribed"])
        let inbox = results[0]
        #expect(inbox["specialUse"] == nil)
        #expect(inbox["name"] == .string("INBOX"))
        #expect(inbox["total"] == .int(2) && inbox["unseen"] == .int(1))
        #expect(inbox["modifyIndex"] == .int(2))
        #expect(inbox["subscribed"] == .bool(true) && inbox["hidden"] == .bool(false) && inbox["encryptMessages"] == .bool(false))
        #expect(inbox["id"]?.stringValue?.count == 24)
        let sent = try #require(results.first { $0["path"] == .string("Sent Mail") })
        #expect(sent["specialUse"] == .string("\\Sent"))
        let projects = try #require(results.first { $0["path"] == .string("Work/Projects") })
        #expect(projects["name"] == .string("Projects"))
        // without counters there is no total
        let plain = try h.get("/users/me/mailboxes")
        #expect(plain.json?["results"]?[0]?["total"] == nil)
        // special-use filter
        let su = try h.get("/users/me/mailboxes?specialUse=true").json?["results"]?.arrayValue?.count
        #expect(su == 5)
    }

    @Test func createRenameDeleteRules() throws {
        let h = try Harness()
        let c = try h.call("POST", "/users/me/mailboxes", json: #"{"path":"Lists/Swift"}"#)
        let id = try #require(c.json?["id"]?.stringValue)
        #expect(c.json?["success"] == .bool(true))
        #expect(try h.call("POST", "/users/me/mailboxes", json: #"{"path":"Lists/Swift"}"#).json?["code"] == .string("ALREADYEXISTS"))
        #expect(try h.call("POST", "/users/me/mailboxes", json: #"{"path":"bad//path"}"#).status == 400)
        // rename keeps the id
        #expect(try h.call("PUT", "/users/me/mailboxes/\(id)", json: #"{"path":"Lists/SwiftLang"}"#).status == 200)
        #expect(h.account.mailboxId(path: "Lists/SwiftLang") == id)
        #expect(try h.get("/users/me/mailboxes/\(id)").json?["path"] == .string("Lists/SwiftLang"))
        #expect(try h.get("/users/me/mailboxes/resolve?path=Lists%2FSwiftLang").json?["id"] == .string(id))
        #expect(try h.call("PUT", "/users/me/mailboxes/\(id)", json: "{}").json == .object([("error", .string("Nothing was changed"))]))
        // INBOX can not be renamed or deleted; special use can not be deleted
        let inboxRename = try h.call("PUT", "/users/me/mailboxes/\(h.inbox)", json: #"{"path":"Other"}"#)
        #expect(inboxRename.status == 400 && inboxRename.json?["code"] == .string("DisallowedMailboxMethod"))
        #expect(try h.call("DELETE", "/users/me/mailboxes/\(h.inbox)").json?["code"] == .string("DisallowedMailboxMethod"))
        let trash = try #require(h.account.mailboxId(path: "Trash"))
        #expect(try h.call("DELETE", "/users/me/mailboxes/\(trash)").json?["code"] == .string("DisallowedMailboxMethod"))
        // delete, then re-create the same path: new id
        #expect(try h.call("DELETE", "/users/me/mailboxes/\(id)").json?["success"] == .bool(true))
        #expect(try h.get("/users/me/mailboxes/\(id)").json?["code"] == .string("NoSuchMailbox"))
        let again = try h.account.createMailbox(path: "Lists/SwiftLang")
        #expect(again != id)
        #expect(try h.get("/users/me/mailboxes/nothex").status == 400)
    }

    @Test func renameMovesChildren() throws {
        let a = SimAccount()
        let work = try a.createMailbox(path: "Work")
        let child = try a.createMailbox(path: "Work/Projects")
        try a.renameMailbox(id: work, to: "Job")
        #expect(a.mailboxId(path: "Job/Projects") == child)
        #expect(a.mailboxId(path: "Work/Projects") == nil)
    }
}

@Suite struct MessageTests {
    func seeded(_ n: Int) throws -> Harness {
        let h = try Harness()
        let base = Date(timeIntervalSince1970: 1_700_000_000)
        for i in 1...n {
            // some idates collide to exercise the uid tie-break
            try h.account.deliver(mail(i), to: h.inbox, seen: i % 3 == 0, idate: base.addingTimeInterval(Double(i / 2) * 60))
        }
        return h
    }

    func collect(_ h: Harness, _ path: String, order: String?, limit: Int) throws -> (ids: [Int], pages: [Int], cursors: [String]) {
        var ids: [Int] = [], pages: [Int] = [], cursors: [String] = []
        var next: String?
        repeat {
            var q = "\(path)\(path.contains("?") ? "&" : "?")limit=\(limit)"
            if let o = order { q += "&order=\(o)" }
            if let n = next { q += "&next=\(n)" }
            let j = try #require(try h.get(q).json)
            #expect(j["success"] == .bool(true))
            ids += (j["results"]?.arrayValue ?? []).compactMap { $0["id"]?.intValue }
            pages.append(j["page"]?.intValue ?? -1)
            next = j["nextCursor"]?.stringValue
            if let n = next { cursors.append(n) }
            if next == nil { #expect(j["nextCursor"] == .bool(false)) }
        } while next != nil
        return (ids, pages, cursors)
    }

    @Test func pagingBothOrders() throws {
        let h = try seeded(53)
        let path = "/users/me/mailboxes/\(h.inbox)/messages"
        let desc = try collect(h, path, order: nil, limit: 10)
        #expect(desc.ids == Array((1...53).reversed()))
        #expect(desc.pages == [1, 2, 3, 4, 5, 6])
        let asc = try collect(h, path, order: "asc", limit: 10)
        #expect(asc.ids == Array(1...53))
        let first = try #require(try h.get("\(path)?limit=10").json)
        #expect(first["total"] == .int(53))
        #expect(first["previousCursor"] == .bool(false))
        #expect(first["specialUse"] == nil)
        // go forward twice and back once with previousCursor
        let n1 = try #require(first["nextCursor"]?.stringValue)
        let p2 = try #require(try h.get("\(path)?limit=10&next=\(n1)").json)
        let n2 = try #require(p2["nextCursor"]?.stringValue)
        let p3 = try #require(try h.get("\(path)?limit=10&next=\(n2)").json)
        #expect(p3["page"] == .int(3))
        let prev = try #require(p3["previousCursor"]?.stringValue)
        let back = try #require(try h.get("\(path)?limit=10&previous=\(prev)").json)
        #expect(back["results"]?.arrayValue?.compactMap { $0["id"]?.intValue } == Array((34...43).reversed()))
        #expect(back["page"] == .int(2))
        // item shape
        let item = try #require(first["results"]?[0])
        for key in ["id", "mailbox", "thread", "from", "to", "cc", "bcc", "messageId", "subject", "date", "idate", "intro",
                    "attachments", "size", "seen", "deleted", "flagged", "draft", "answered", "forwarded", "references"] {
            #expect(item[key] != nil, "missing \(key)")
        }
        #expect(item["messageId"] == .string("<m53@test>"))
        #expect(item["from"] == .object([("name", .string("Sender 53")), ("address", .string("s53@example.com"))]))
        #expect(item["date"] == .string("2024-01-01T10:00:00.000Z"))
        #expect(item["intro"] == .string("Body of message 53"))
        // garbage cursor and limits
        let garbage = try h.get("\(path)?next=%21%21notacursor")
        #expect(garbage.status == 400 && garbage.json?["code"] == .string("InputValidationError"))
        #expect(try h.get("\(path)?next=Zm9vYmFy").status == 400)
        #expect(try h.get("\(path)?limit=251").status == 400)
        #expect(try h.get("\(path)?limit=250").json?["results"]?.arrayValue?.count == 53)
        #expect(try h.get("/users/me/mailboxes/0123456789abcdef01234567/messages").json?["code"] == .string("NoSuchMailbox"))
        // special use is reported for special folders
        let trash = try #require(h.account.mailboxId(path: "Trash"))
        #expect(try h.get("/users/me/mailboxes/\(trash)/messages").json?["specialUse"] == .string("\\Trash"))
    }

    @Test func pagingStableUnderInsertions() throws {
        let h = try seeded(30)
        let path = "/users/me/mailboxes/\(h.inbox)/messages"
        let first = try #require(try h.get("\(path)?limit=10&order=asc").json)
        let n1 = try #require(first["nextCursor"]?.stringValue)
        // a new message (newest idate) does not disturb the next page
        try h.account.deliver(mail(100), to: h.inbox)
        let second = try #require(try h.get("\(path)?limit=10&order=asc&next=\(n1)").json)
        #expect(second["results"]?.arrayValue?.compactMap { $0["id"]?.intValue } == Array(11...20))
    }

    @Test func searchByUidRanges() throws {
        let h = try seeded(40)
        let s = "/users/me/search?mailbox=\(h.inbox)"
        func ids(_ q: String) throws -> [Int] {
            try #require(try h.get(s + q).json?["results"]?.arrayValue).compactMap { $0["id"]?.intValue }
        }
        #expect(try ids("&id=35:*&order=asc") == [35, 36, 37, 38, 39, 40])
        #expect(try ids("&id=3,5,7&order=asc") == [3, 5, 7])
        #expect(try ids("&id=10:12&order=desc") == [12, 11, 10])
        #expect(try ids("&id=41:*") == [])
        #expect(try ids("&id=38:*") == [40, 39, 38])  // no order: newest first
        let j = try #require(try h.get(s + "&id=1:*&limit=15&order=asc").json)
        #expect(j["total"] == .int(40))
        #expect(j["query"] == nil)  // only a text query (`q`, `query`) is echoed
        #expect(j["nextCursor"]?.stringValue != nil)
        let all = try collect(h, s + "&id=1:*", order: "asc", limit: 15)
        #expect(all.ids == Array(1...40))
        #expect(try ids("&flagged=true") == [])
        try h.account.setFlags(mailboxId: h.inbox, uid: 7, flagged: true)
        #expect(try ids("&flagged=true") == [7])
        #expect(try ids("&unseen=true&id=1:6&order=asc") == [1, 2, 4, 5])
        // `id` only applies together with `mailbox`; without one it is ignored (but still validated)
        #expect(try h.get("/users/me/search?id=1:2&limit=250").json?["total"] == .int(40))
        #expect(try h.get("/users/me/search?id=1:2,5").status == 400)
        #expect(try h.get(s + "&id=abc").status == 400)
    }

    @Test func emlIsTheStoredCopyAndChunked() throws {
        let h = try Harness()
        // CRLF, bare LF, 8-bit and NUL bytes, no trailing newline
        var raw = Array("Subject: bytes\r\nFrom: a@b\n\r\nline1\r\nline2\nä\u{0}\u{1}".utf8)
        raw += (0..<300_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let uid = try h.account.deliver(raw, to: h.inbox)
        let r = try h.get("/users/me/mailboxes/\(h.inbox)/messages/\(uid)/message.eml")
        #expect(r.status == 200)
        #expect(r.headers["content-type"] == "message/rfc822")
        #expect(r.headers["transfer-encoding"] == "chunked")
        #expect(r.headers["content-length"] == nil)
        // served as stored, and stored as WildDuck rebuilds it: bare LFs become CRLF
        #expect(r.body == h.account.messages(mailboxId: h.inbox).first?.raw)
        #expect(r.body.filter { $0 != 0x0D } == raw.filter { $0 != 0x0D } && r.body.count > raw.count)
        #expect(r.wireBody.count > raw.count)
        let missing = try h.get("/users/me/mailboxes/\(h.inbox)/messages/999/message.eml")
        #expect(missing.status == 404)
        #expect(missing.json == .object([("error", .string("This message does not exist")), ("code", .string("MessageNotFound"))]))
        // the connection is still usable afterwards (keep-alive)
        #expect(try h.get("/users/me").status == 200)
    }

    @Test func singleMessage() throws {
        let h = try Harness()
        let uid = try h.account.deliver(mail(1, extra: "Cc: Carol <c@example.com>\r\nReferences: <a@x> <b@x>\r\n"), to: h.inbox)
        let j = try #require(try h.get("/users/me/mailboxes/\(h.inbox)/messages/\(uid)").json)
        #expect(j["id"] == .int(uid))
        #expect(j["subject"] == .string("Message 1"))
        #expect(j["cc"]?[0]?["address"] == .string("c@example.com"))
        #expect(j["references"] == .array([.string("<a@x>"), .string("<b@x>")]))
        #expect(j["text"]?.stringValue?.contains("Body of message 1") == true)
        #expect(j["seen"] == .bool(false))
        _ = try h.get("/users/me/mailboxes/\(h.inbox)/messages/\(uid)?markAsSeen=true")
        #expect(h.account.messages(mailboxId: h.inbox).first?.seen == true)
        #expect(try h.get("/users/me/mailboxes/\(h.inbox)/messages/77").json?["code"] == .string("MessageNotFound"))
    }

    @Test func flagsMoveExpungeAndModifyIndex() throws {
        let h = try Harness()
        let inbox = h.inbox
        let work = try h.account.createMailbox(path: "Work")
        for i in 1...3 { try h.account.deliver(mail(i), to: inbox) }
        func mi(_ id: String) -> Int { h.account.mailboxes().first { $0.id == id }?.modifyIndex ?? -1 }
        #expect(mi(inbox) == 3 && mi(work) == 0)
        // flags: +1 for the request and +1 for its batch of FETCH entries
        let put = try h.call("PUT", "/users/me/mailboxes/\(inbox)/messages/2", json: #"{"seen":true,"flagged":true}"#)
        #expect(put.json == .object([("success", .bool(true)), ("updated", .int(1))]))
        #expect(mi(inbox) == 5)
        let listed = try #require(try h.get("/users/me/mailboxes/\(inbox)/messages?order=asc").json?["results"]?[1])
        #expect(listed["seen"] == .bool(true) && listed["flagged"] == .bool(true))
        // deleted:true does not expunge
        _ = try h.call("PUT", "/users/me/mailboxes/\(inbox)/messages/3", json: #"{"deleted":true}"#)
        #expect(h.account.messages(mailboxId: inbox).count == 3)
        #expect(mi(inbox) == 7)
        #expect(try h.call("PUT", "/users/me/mailboxes/\(inbox)/messages/99", json: #"{"seen":true}"#).json?["code"] == .string("MessageNotFound"))
        #expect(mi(inbox) == 8)  // nothing matched: +1, no FETCH batch
        // move: new uid in the target, both sides bump
        let mv = try h.call("PUT", "/users/me/mailboxes/\(inbox)/messages/2", json: #"{"moveTo":"\#(work)"}"#)
        #expect(mv.json == .object([("success", .bool(true)), ("mailbox", .string(work)), ("id", .array([.array([.int(2), .int(1)])]))]))
        #expect(mi(inbox) == 9 && mi(work) == 1)
        #expect(h.account.messages(mailboxId: work).first?.flagged == true)
        // move back: uid 4 (uids never reused)
        let back = try h.account.move(mailboxId: work, uid: 1, to: inbox)
        #expect(back == 4)
        #expect(h.account.messages(mailboxId: inbox).map(\.uid) == [1, 3, 4])
        // expunge via DELETE
        #expect(try h.call("DELETE", "/users/me/mailboxes/\(inbox)/messages/1").json == .object([("success", .bool(true))]))
        #expect(try h.call("DELETE", "/users/me/mailboxes/\(inbox)/messages/1").json == .object([("error", .string("Message was not found"))]))
        #expect(mi(inbox) == 11)
        let next = try h.account.deliver(mail(9), to: inbox)
        #expect(next == 5)
        // bulk range update
        let bulk = try h.call("PUT", "/users/me/mailboxes/\(inbox)/messages/1:*", json: #"{"seen":true}"#)
        #expect(bulk.json?["updated"] == .int(3))
        #expect(h.account.mailboxes().first { $0.id == inbox }?.unseen == 0)
    }

    /// `POST /users/:user/filters` checks and stores as WildDuck does (lib/api/filters.js).
    @Test func filterCreationIsCheckedAsWildDuckDoes() throws {
        let h = try Harness()
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        func post(_ body: String) throws -> Reply { try h.call("POST", "/users/me/filters", json: body) }
        #expect(try post(#"{"query":{"from":"a"},"action":{"seen":true},"color":"red"}"#).status == 400)
        #expect(try post(#"{"query":{"header":"a"},"action":{"seen":true}}"#).json?["code"] == .string("InputValidationError"))
        #expect(try post(#"{"query":{"from":"a"}}"#).status == 400)
        #expect(try post(#"{"query":{"from":"a"},"action":{"mailbox":"0123456789abcdef01234567"}}"#).json?["code"] == .string("NoSuchMailbox"))
        #expect(try post(#"{"query":{"from":"a"},"action":{"targets":["not a target"]}}"#).status == 400)
        #expect(h.account.state.withLock { $0.filters.isEmpty })
        let made = try post(#"{"name":"  ","query":{"subject":"  two   words ","size":0,"to":""},"action":{"mailbox":"\#(inbox)","flag":false}}"#)
        let id = try #require(made.json?["id"]?.stringValue)
        let whole = try #require(try h.get("/users/me/filters/\(id)").json)
        #expect(whole["name"] == nil)
        #expect(whole["query"] == .object([("subject", .string("two words"))]))
        #expect(whole["action"] == .object([("flag", .bool(false)), ("mailbox", .string(inbox))]))
        #expect(whole["disabled"] == .bool(false))
        #expect(try h.get("/users/me/filters/0123456789abcdef01234567").json?["error"] == .string("This filter does not exist"))
    }

    @Test func filtersAndAutoreply() throws {
        let h = try Harness()
        let id = h.account.addFilter(name: "Alerts")
        let list = try #require(try h.get("/users/me/filters").json)
        #expect(list["limits"] == .object([("allowed", .int(400)), ("used", .int(1))]))
        let f = try #require(list["results"]?[0])
        #expect(f["id"] == .string(id) && f["name"] == .string("Alerts") && f["disabled"] == .bool(false))
        #expect(f["query"]?.arrayValue != nil && f["action"]?.arrayValue != nil && f["created"]?.stringValue != nil)
        #expect(try h.get("/users/me/filters/\(id)").json?["query"]?["from"] != nil)
        #expect(try h.get("/users/me/filters/0123456789abcdef01234567").json?["code"] == .string("FilterNotFound"))
        h.account.deleteFilter(id: id)
        #expect(try h.get("/users/me/filters").json?["results"] == .array([]))
        let empty = try #require(try h.get("/users/me/autoreply").json)
        #expect(empty == .object([("success", .bool(true)), ("status", .bool(false)), ("name", .string("")), ("subject", .string("")),
                                  ("text", .string("")), ("html", .string(""))]))
        h.account.setAutoreply(status: true, subject: "Away", text: "Back Monday")
        let ar = try #require(try h.get("/users/me/autoreply").json)
        #expect(ar["status"] == .bool(true) && ar["subject"] == .string("Away") && ar["text"] == .string("Back Monday"))
        #expect(try h.get("/users/me").json?["autoreply"] == .bool(true))
    }
}
