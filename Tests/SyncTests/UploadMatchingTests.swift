import Testing
@testable import Sync
import WildDuck

/// What the push compares when it looks for an upload whose answer was lost, and when it checks
/// what the server stored.
@Suite struct UploadMatchingTests {
    /// The subject as WildDuck stores it: libmime's `decodeWords`, then whitespace folded.
    @Test(arguments: [
        ("Plain subject", "Plain subject"),
        ("  Meeting\tnotes  for   Monday ", "Meeting notes for Monday"),
        ("=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus?= =?ISO-8859-1?Q?M=FCnchen?=", "Grüße ausMünchen"),
        ("=?utf-8?B?w6TDtsO8?=", "äöü"),
        // A character split over two words of the same charset comes out whole.
        ("=?UTF-8?B?w6?= =?UTF-8?B?Q=?=", "ä"),
        ("=?UTF-8?Q?a?=  =?UTF-8?Q?b?= c =?UTF-8?Q?d?=", "ab c d"),
        ("=?windows-1252?Q?caf=E9?=", "café"),
        ("=?iso-8859-2?Q?=B1?=", "ą"),
        ("no =?broken word", "no =?broken word"),
        ("", ""),
    ])
    func storedSubject(raw: String, stored: String) {
        #expect(StoredSubject.of(raw) == stored)
    }

    @Test func noSubjectIsStoredEmpty() {
        #expect(StoredSubject.of(nil) == "")
        #expect(MessageHeaders(Array("From: a@b\r\n\r\nbody\r\n".utf8)).subject == nil)
    }

    /// WildDuck keeps the last Subject and Message-ID field.
    @Test func theLastFieldCounts() {
        let headers = MessageHeaders(Array("Subject: first\r\nMessage-ID: <a@x>\r\nSubject: second\r\nMessage-ID: <b@x>\r\n\r\n".utf8))
        #expect(headers.subject == "second")
        #expect(headers.messageId == "<b@x>")
    }

    /// The stored size fits the bytes sent with a CR for every bare LF; a cut body does not.
    @Test func storedSizeCheck() {
        let lf = Array(String(repeating: "a line of text\n", count: 1000).utf8)
        #expect(Push.storedSizeMatches(sent: lf, stored: lf.count + 1000))
        #expect(Push.storedSizeMatches(sent: lf, stored: lf.count))
        #expect(!Push.storedSizeMatches(sent: lf, stored: lf.count / 2))
        let big = [UInt8](repeating: 0x41, count: 300 * 1024)
        #expect(!Push.storedSizeMatches(sent: big, stored: 15 * 1024))
        #expect(!Push.storedSizeMatches(sent: Array(big.prefix(15 * 1024)), stored: 300 * 1024))
    }

    /// Only WildDuck's own refusal proves an upload was not stored.
    @Test func whatProvesARequestFailed() {
        #expect(WildDuckError.server(route: "r", status: 400, code: "InputValidationError", message: "m").provesNotDone)
        #expect(WildDuckError.server(route: "r", status: 404, code: "NoSuchMailbox", message: "m").provesNotDone)
        #expect(!WildDuckError.server(route: "r", status: 429, code: nil, message: "m").provesNotDone)
        #expect(!WildDuckError.server(route: "r", status: 502, code: nil, message: "non-JSON error body").provesNotDone)
        #expect(!WildDuckError.server(route: "r", status: 500, code: nil, message: "Mailbox is missing").provesNotDone)
        #expect(!WildDuckError.network(route: "r", detail: "reset").provesNotDone)
        #expect(!WildDuckError.malformed(route: "r", detail: "not JSON").provesNotDone)
    }
}
