import Testing
@testable import WildDuck

@Suite struct JSONTests {
    @Test func parsesAndKeepsBooleansAndOrder() throws {
        let json = try JSON.parse(#"{"b":true,"a":1,"n":null,"s":"x\"y\u00e9\ud83d\ude00","arr":[1.5,false,{}]}"#)
        #expect(json["b"]?.bool == true)
        #expect(json["b"]?.int == nil)          // a boolean never reads as a number
        #expect(json["a"]?.int == 1)
        #expect(json["a"]?.bool == nil)
        #expect(json["n"]?.isNull == true)
        #expect(json["s"]?.string == "x\"yé😀")
        #expect(json["arr"]?.array?.count == 3)
        #expect(json.object?.map(\.0) == ["b", "a", "n", "s", "arr"])
        #expect(try JSON.parse(json.text) == json)
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\":}", "tru", "\"\u{01}\"", "{\"a\":1} x", "[" + String(repeating: "[", count: 300),
                      "[1e999]", "-1e400" /* infinity: found by fuzzing, it could not be written back */])
    func rejectsMalformedInput(_ text: String) {
        #expect(throws: JSON.ParseError.self) { try JSON.parse(text) }
    }

    @Test func escapesControlCharactersWhenSerialising() throws {
        let value = JSON.object([("k", .string("a\nb\u{01}c\"\\"))])
        #expect(value.text == #"{"k":"a\nb\u0001c\"\\"}"#)
        #expect(try JSON.parse(value.text) == value)
    }

    @Test func isoDates() {
        #expect(parseISODate("1970-01-01T00:00:00.000Z") == 0)
        #expect(parseISODate("2025-10-16T12:34:56.789Z") == 1_760_618_096)
        #expect(parseISODate("2025-10-16T14:34:56+02:00") == 1_760_618_096)
        #expect(parseISODate("2000-02-29T00:00:00Z") == 951_782_400)
        #expect(parseISODate("garbage") == nil)
        #expect(parseISODate("2025-13-01T00:00:00Z") == nil)
    }

    @Test func messageItemFlagsAndIdentity() throws {
        let item = MessageItem(try JSON.parse(#"{"id":42,"mailbox":"m","messageId":"<a@b>","size":10,"idate":"1970-01-01T00:01:00Z","seen":true,"flagged":false,"answered":true,"forwarded":true,"deleted":true,"draft":false}"#))
        #expect(item?.uid == 42)
        #expect(item?.idate == 60)
        #expect(item?.seen == true && item?.answered == true && item?.deleted == true && item?.forwarded == true)
        #expect(MessageItem(try JSON.parse(#"{"id":"42"}"#)) == nil)   // a uid must be a number
        #expect(Mailbox(try JSON.parse(#"{"path":"INBOX"}"#)) == nil)  // and a mailbox needs an id
    }
}
