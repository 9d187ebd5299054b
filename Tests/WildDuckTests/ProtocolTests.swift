import Testing
import Net
@testable import WildDuck

private let M = "5f1e0b9a2c3d4e5f60718293"
private let X = "5f1e0b9a2c3d4e5f607182ff"

@Suite struct SSEParserTests {
    func parse(_ chunks: [String]) throws -> [SSEParser.Event] {
        var parser = SSEParser()
        var out: [SSEParser.Event] = []
        for chunk in chunks {
            out += try Array(chunk.utf8).withUnsafeBytes { try parser.feed($0) }
        }
        return out
    }

    @Test func multiLineDataIdsCommentsAndSplitChunks() throws {
        let stream = ": wildduck [u]\n\ndata: {\ndata:  \"command\": \"EXISTS\"\ndata: }\nid: 0123456789abcdef01234567\n\n: idling 1\n\n"
        // Feed whole, then byte by byte: same result.
        let whole = try parse([stream])
        let pieces = try parse(stream.map { String($0) })
        #expect(whole == pieces)
        #expect(whole.count == 1)
        #expect(whole.first?.id == "0123456789abcdef01234567")
        #expect(whole.first?.data == "{\n \"command\": \"EXISTS\"\n}")
    }

    @Test func crlfAndEventNames() throws {
        let events = try parse(["event: error\r\ndata: boom\r\n\r\n"])
        #expect(events == [SSEParser.Event(id: nil, event: "error", data: "boom")])
        #expect(JournalEvents.decode(events[0]) == [.resync])
    }

    @Test func oversizedEventIsAnError() {
        var parser = SSEParser()
        parser.maxEventSize = 10
        #expect(throws: SSEError.self) {
            _ = try Array("data: 0123456789abcdef\n\n".utf8).withUnsafeBytes { try parser.feed($0) }
        }
    }

    /// The limit bounds what is kept (one line, one event), not the length of the stream.
    @Test func heartbeatsBetweenEventsNeverReachTheLimit() throws {
        var parser = SSEParser()
        parser.maxEventSize = 20
        let beats = String(repeating: ": idling\n", count: 1000) + "retry: 5\n" + String(repeating: "x: y\n", count: 100)
        let events = try Array((beats + "data: 123\n\n").utf8).withUnsafeBytes { try parser.feed($0) }
        #expect(events == [SSEParser.Event(id: nil, event: nil, data: "123")])
        // A single endless line (a comment too) is still cut off at the limit.
        #expect(throws: SSEError.self) {
            _ = try Array((": " + String(repeating: "z", count: 30)).utf8).withUnsafeBytes { try parser.feed($0) }
        }
    }

    @Test func journalCommands() {
        func ev(_ json: String) -> [RemoteEvent] { JournalEvents.decode(.init(id: "1", event: nil, data: json)) }
        #expect(ev(#"{"command":"EXISTS","mailbox":"5f1e0b9a2c3d4e5f60718293","uid":5}"#) == [.messageAdded(mailbox: M, uid: 5)])
        #expect(ev(#"{"command":"EXPUNGE","mailbox":"5f1e0b9a2c3d4e5f60718293","uid":5}"#) == [.messageRemoved(mailbox: M, uid: 5)])
        #expect(ev(#"{"command":"FETCH","mailbox":"5f1e0b9a2c3d4e5f60718293","uid":5,"flags":["\\Seen"]}"#) == [.messageFlags(mailbox: M, uid: 5, flags: ["\\Seen"])])
        #expect(ev(#"{"command":"RENAME","mailbox":"5f1e0b9a2c3d4e5f60718293","path":"x"}"#) == [.mailboxesChanged])
        #expect(ev(#"{"command":"COUNTERS","mailbox":"5f1e0b9a2c3d4e5f60718293","total":1}"#) == [])
        #expect(ev(#"{"command":"SOMETHINGNEW","mailbox":"5f1e0b9a2c3d4e5f60718293"}"#) == [.mailboxDirty(M)])
        #expect(ev("not json") == [.resync])
    }
}

@Suite struct WSProtocolTests {
    @Test func subscribeCarriesTheTokenButTheLogDoesNot() throws {
        let text = WSProtocol.subscribe(.messages, userId: "u1", token: "0123456789abcdef0123456789abcdef01234567", mailboxId: "m1")
        let json = try JSON.parse(text)
        #expect(json["type"]?.string == "subscribe")
        #expect(json["data"]?["mailboxId"]?.string == "m1")
        #expect(json["data"]?["token"]?.string?.count == 40)
        #expect(!WSProtocol.redacted(text).contains("0123456789abcdef"))
    }

    @Test func dataRepliesAndErrors() {
        #expect(WSProtocol.decode(#"{"type":"data","channel":"mailboxes","data":{"code":200,"response":{"success":true,"mailboxes":[]}}}"#)
                == .data(channel: "mailboxes", mailboxId: nil, code: 200, error: nil))
        #expect(WSProtocol.decode(#"{"type":"data","channel":"messages","data":{"code":401,"response":{"success":false,"error":"Unauthorized","message":"Invalid token"}}}"#)
                == .data(channel: "messages", mailboxId: nil, code: 401, error: "Invalid token"))
    }

    @Test func bothDisconnectShapes() {
        #expect(WSProtocol.decode(#"{"type":"disconnect","channel":"system","data":{"code":200,"response":{"success":true,"reason":"token_expired"}}}"#)
                == .disconnect(reason: "token_expired"))
        #expect(WSProtocol.decode(#"{"type":"disconnect","data":{"reason":"server_shutdown"}}"#) == .disconnect(reason: "server_shutdown"))
    }

    @Test func perEventUpdateShape() {
        let created = #"{"type":"update","channel":"messages","data":{"code":200,"response":{"success":true,"event":"created","message":{"id":7,"mailbox":"5f1e0b9a2c3d4e5f60718293"}}}}"#
        #expect(WSProtocol.decode(created) == .update(channel: "messages", events: [.messageAdded(mailbox: M, uid: 7)]))
        let updated = #"{"type":"update","channel":"messages","data":{"code":200,"response":{"success":true,"mailboxId":"5f1e0b9a2c3d4e5f60718293","event":"updated","message":{"id":7,"seen":true}}}}"#
        #expect(WSProtocol.decode(updated) == .update(channel: "messages", events: [.messageChanged(mailbox: M, uid: 7)]))
        let deleted = #"{"type":"update","channel":"messages","data":{"code":200,"response":{"success":true,"event":"deleted","message":{"id":7,"mailbox":"5f1e0b9a2c3d4e5f60718293"}}}}"#
        #expect(WSProtocol.decode(deleted) == .update(channel: "messages", events: [.messageRemoved(mailbox: M, uid: 7)]))
        let mailbox = #"{"type":"update","channel":"mailboxes","data":{"code":200,"response":{"success":true,"event":"created","mailbox":{"id":"5f1e0b9a2c3d4e5f607182ff"}}}}"#
        #expect(WSProtocol.decode(mailbox) == .update(channel: "mailboxes", events: [.mailboxesChanged]))
        let touched = #"{"type":"update","channel":"mailboxes","data":{"code":200,"response":{"success":true,"event":"updated","mailbox":{"id":"5f1e0b9a2c3d4e5f607182ff"}}}}"#
        #expect(WSProtocol.decode(touched) == .update(channel: "mailboxes", events: [.mailboxesChanged, .mailboxDirty(X)]))
    }

    @Test func batchedUpdateShape() {
        let batch = #"{"type":"update","channel":"messages","data":{"code":200,"response":{"success":true,"updates":[{"type":"message.added","mailbox":"5f1e0b9a2c3d4e5f60718293","message":3,"time":1},{"type":"message.flags.changed","mailbox":"5f1e0b9a2c3d4e5f60718293","uid":3,"flags":["\\Seen"]},{"type":"message.deleted","mailbox":"5f1e0b9a2c3d4e5f60718293","message":2},{"type":"message.moved","mailbox":"5f1e0b9a2c3d4e5f60718293"},{"type":"filter.created"},{"type":"whatever"}]}}}"#
        #expect(WSProtocol.decode(batch) == .update(channel: "messages", events: [
            .messageAdded(mailbox: M, uid: 3), .messageFlags(mailbox: M, uid: 3, flags: ["\\Seen"]),
            .messageRemoved(mailbox: M, uid: 2), .mailboxDirty(M), .filtersChanged, .resync,
        ]))
    }

    @Test func anythingUnreadableMarksTheChannelDirty() {
        #expect(WSProtocol.decode(#"{"type":"update","channel":"settings","data":{"code":200,"response":{"success":true,"weird":1}}}"#)
                == .update(channel: "settings", events: [.settingsChanged]))
        #expect(WSProtocol.decode(#"{"type":"update","channel":"messages","data":{"code":200,"response":{"success":true,"mailboxId":"5f1e0b9a2c3d4e5f60718293","event":"created"}}}"#)
                == .update(channel: "messages", events: [.mailboxDirty(M)]))
        #expect(WSProtocol.decode("garbage") == .invalid("not JSON"))
        #expect(WSProtocol.decode(#"{"type":"surprise"}"#) == .invalid("unknown type surprise"))
    }

    @Test func invalidIdsNeverBecomeEvents() {
        // Mailbox ids that are not ObjectIds and uids that are not IMAP uids count as absent:
        // the update then only makes REST re-read the channel, or everything.
        for bad in [#""../../etc""#, #""5f1e0b9a2c3d4e5f6071829""#, #""5f1e0b9a2c3d4e5f607182930""#,
                    #""zf1e0b9a2c3d4e5f60718293""#, "\"" + String(repeating: "a", count: 300) + "\"", "17"] {
            let text = #"{"type":"update","channel":"messages","data":{"response":{"event":"created","message":{"id":7,"mailbox":"# + bad + "}}}}"
            #expect(WSProtocol.decode(text) == .update(channel: "messages", events: [.resync]))
            let batch = #"{"type":"update","channel":"messages","data":{"response":{"updates":[{"type":"message.added","mailbox":"# + bad + #","uid":3}]}}}"#
            #expect(WSProtocol.decode(batch) == .update(channel: "messages", events: [.resync]))
        }
        for uid in ["0", "-1", "4294967296", "1.5", "1e300", "\"7\""] {
            let text = #"{"type":"update","channel":"messages","data":{"response":{"event":"created","message":{"id":"# + uid + #","mailbox":""# + M + #""}}}}"#
            #expect(WSProtocol.decode(text) == .update(channel: "messages", events: [.resync]))
            let journal = JournalEvents.decode(.init(id: nil, event: nil, data: #"{"command":"EXISTS","mailbox":""# + M + #"","uid":"# + uid + "}"))
            #expect(journal == [.mailboxDirty(M)])
        }
        #expect(JournalEvents.decode(.init(id: nil, event: nil, data: #"{"command":"EXISTS","mailbox":"../x","uid":5}"#)) == [.resync])
        let largest = #"{"type":"update","channel":"messages","data":{"response":{"event":"created","message":{"id":4294967295,"mailbox":""# + M + #""}}}}"#
        #expect(WSProtocol.decode(largest) == .update(channel: "messages", events: [.messageAdded(mailbox: M, uid: 4294967295)]))
    }
}

@Suite struct ServerIDTests {
    @Test func shapes() {
        #expect(ServerID.isObjectId("5f1e0b9a2c3d4e5f60718293"))
        #expect(ServerID.isObjectId("5F1E0B9A2C3D4E5F60718293"))
        #expect(!ServerID.isObjectId(""))
        #expect(!ServerID.isObjectId("../5f1e0b9a2c3d4e5f60718"))
        #expect(!ServerID.isObjectId("5f1e0b9a2c3d4e5f6071829g"))
        #expect(!ServerID.isObjectId("5f1e0b9a2c3d4e5f6071829\u{0}"))
        #expect(ServerID.isUid(1) && ServerID.isUid(Int(UInt32.max)))
        #expect(!ServerID.isUid(0) && !ServerID.isUid(-1) && !ServerID.isUid(Int(UInt32.max) + 1))
        #expect(ServerID.describe(.string("a\u{1b}[31mb\u{9b}")) == "\"a\\u001b[31mb\\u{9b}\"")
    }

    @Test func modelsRefuseInvalidIds() throws {
        #expect(Mailbox(try JSON.parse(#"{"id":"5f1e0b9a2c3d4e5f60718293","path":"INBOX"}"#)) != nil)
        #expect(Mailbox(try JSON.parse(#"{"id":"../../x","path":"INBOX"}"#)) == nil)
        #expect(Mailbox(try JSON.parse(#"{"id":"5f1e0b9a2c3d4e5f60718293","path":"IN\u0000BOX"}"#)) == nil)
        #expect(MessageItem(try JSON.parse(#"{"id":0}"#)) == nil)
        #expect(MessageItem(try JSON.parse(#"{"id":-3}"#)) == nil)
        #expect(MessageItem(try JSON.parse(#"{"id":4294967296}"#)) == nil)
        #expect(MessageItem(try JSON.parse(#"{"id":12,"mailbox":"../x"}"#))?.mailbox == nil)
    }
}

/// Where the WebSocket stream connects: the REST endpoint's host, port and prefix, so a
/// WildDuck under a path behind nginx gets its `/ws` there, and the Host header is the one the
/// REST requests send.
@Suite struct WebSocketURLTests {
    func url(_ server: String) throws -> String {
        let endpoint = try #require(HTTPEndpoint(url: server))
        return WebSocketUpdateStream.url(for: endpoint)
    }

    @Test func theRESTEndpointBecomesItsWebSocket() throws {
        #expect(try url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/ws")
        #expect(try url("https://mail.example.org/api/") == "wss://mail.example.org/api/ws")
        #expect(try url("https://mail.example.org:443/api") == "wss://mail.example.org/api/ws")
        #expect(try url("http://mail.example.org:443/api") == "ws://mail.example.org:443/api/ws")
        #expect(try url("http://[::1]:8080/wd?x=1") == "ws://[::1]:8080/wd/ws")
    }
}
