import Testing
@testable import WildDuck

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

    @Test func journalCommands() {
        func ev(_ json: String) -> [RemoteEvent] { JournalEvents.decode(.init(id: "1", event: nil, data: json)) }
        #expect(ev(#"{"command":"EXISTS","mailbox":"m","uid":5}"#) == [.messageAdded(mailbox: "m", uid: 5)])
        #expect(ev(#"{"command":"EXPUNGE","mailbox":"m","uid":5}"#) == [.messageRemoved(mailbox: "m", uid: 5)])
        #expect(ev(#"{"command":"FETCH","mailbox":"m","uid":5,"flags":["\\Seen"]}"#) == [.messageFlags(mailbox: "m", uid: 5, flags: ["\\Seen"])])
        #expect(ev(#"{"command":"RENAME","mailbox":"m","path":"x"}"#) == [.mailboxesChanged])
        #expect(ev(#"{"command":"COUNTERS","mailbox":"m","total":1}"#) == [])
        #expect(ev(#"{"command":"SOMETHINGNEW","mailbox":"m"}"#) == [.mailboxDirty("m")])
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
        let created = #"{"type":"update","channel":"messages","data":{"code":200,"response":{"success":true,"event":"created","message":{"id":7,"mailbox":"m"}}}}"#
        #expect(WSProtocol.decode(created) == .update(channel: "messages", events: [.messageAdded(mailbox: "m", uid: 7)]))
        let updated = #"{"type":"update","channel":"messages","data":{"code":200,"response":{"success":true,"mailboxId":"m","event":"updated","message":{"id":7,"seen":true}}}}"#
        #expect(WSProtocol.decode(updated) == .update(channel: "messages", events: [.messageChanged(mailbox: "m", uid: 7)]))
        let deleted = #"{"type":"update","channel":"messages","data":{"code":200,"response":{"success":true,"event":"deleted","message":{"id":7,"mailbox":"m"}}}}"#
        #expect(WSProtocol.decode(deleted) == .update(channel: "messages", events: [.messageRemoved(mailbox: "m", uid: 7)]))
        let mailbox = #"{"type":"update","channel":"mailboxes","data":{"code":200,"response":{"success":true,"event":"created","mailbox":{"id":"x"}}}}"#
        #expect(WSProtocol.decode(mailbox) == .update(channel: "mailboxes", events: [.mailboxesChanged]))
        let touched = #"{"type":"update","channel":"mailboxes","data":{"code":200,"response":{"success":true,"event":"updated","mailbox":{"id":"x"}}}}"#
        #expect(WSProtocol.decode(touched) == .update(channel: "mailboxes", events: [.mailboxesChanged, .mailboxDirty("x")]))
    }

    @Test func batchedUpdateShape() {
        let batch = #"{"type":"update","channel":"messages","data":{"code":200,"response":{"success":true,"updates":[{"type":"message.added","mailbox":"m","message":3,"time":1},{"type":"message.flags.changed","mailbox":"m","uid":3,"flags":["\\Seen"]},{"type":"message.deleted","mailbox":"m","message":2},{"type":"message.moved","mailbox":"m"},{"type":"filter.created"},{"type":"whatever"}]}}}"#
        #expect(WSProtocol.decode(batch) == .update(channel: "messages", events: [
            .messageAdded(mailbox: "m", uid: 3), .messageFlags(mailbox: "m", uid: 3, flags: ["\\Seen"]),
            .messageRemoved(mailbox: "m", uid: 2), .mailboxDirty("m"), .filtersChanged, .resync,
        ]))
    }

    @Test func anythingUnreadableMarksTheChannelDirty() {
        #expect(WSProtocol.decode(#"{"type":"update","channel":"settings","data":{"code":200,"response":{"success":true,"weird":1}}}"#)
                == .update(channel: "settings", events: [.settingsChanged]))
        #expect(WSProtocol.decode(#"{"type":"update","channel":"messages","data":{"code":200,"response":{"success":true,"mailboxId":"m","event":"created"}}}"#)
                == .update(channel: "messages", events: [.mailboxDirty("m")]))
        #expect(WSProtocol.decode("garbage") == .invalid("not JSON"))
        #expect(WSProtocol.decode(#"{"type":"surprise"}"#) == .invalid("unknown type surprise"))
    }
}
