import Testing
@testable import WildDuck

@Suite struct LogTextTests {
    let token = "0123456789abcdef0123456789abcdef01234567"

    @Test func tokensAreRedactedInEveryShape() {
        let lines = [
            #"ws → {"type":"subscribe","data":{"userId":"u","token":"\#(token)"}}"#,
            #"ws ← {"type":"data","data":{"response":{"accessToken": "tok-\#(token.prefix(10))"}}}"#,
            #"{\"token\":\"secret-value\"}"#,
            "X-Access-Token: \(token)",
            "x-access-token=abc.def",
            "GET /users/me/updates?accessToken=abc.def&x=1",
            "GET /x?access_token=abc.def",
            #"{"password":"hunter2"}"#,
            "a bare \(token) token",
        ]
        for line in lines {
            let clean = LogText.clean(line)
            #expect(!clean.contains(token), "\(clean)")
            #expect(!clean.contains("abc.def") && !clean.contains("hunter2") && !clean.contains("secret-value")
                    && !clean.contains(token.prefix(10)), "\(clean)")
            #expect(clean.contains("<redacted>"), "\(clean)")
        }
        // What is not a secret stays.
        #expect(LogText.clean("mailbox 5f1e0b9a2c3d4e5f60718293 listed") == "mailbox 5f1e0b9a2c3d4e5f60718293 listed")
    }

    @Test func controlCharactersAreEscaped() {
        let clean = LogText.clean("listing Evil\u{1b}]0;pwned\u{07}\u{9b}31m\nforged line\u{202e}x")
        #expect(!clean.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) || $0 == "\u{202e}" })
        #expect(clean == "listing Evil\\u{1b}]0;pwned\\u{7}\\u{9b}31m\\u{a}forged line\\u{202e}x")
        #expect(LogText.clean("plain ünïcode ✓") == "plain ünïcode ✓")
    }
}
