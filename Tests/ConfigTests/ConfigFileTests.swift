import Testing
@testable import Config

@Suite struct ConfigFileTests {
    let keys: Set<String> = ["server", "user", "maildir", "pull-only"]

    func parse(_ text: String) throws -> ConfigFile {
        try ConfigFile(bytes: Array(text.utf8), path: "cfg", keys: keys)
    }

    func error(_ bytes: [UInt8]) -> String? {
        do { _ = try ConfigFile(bytes: bytes, path: "cfg", keys: keys); return nil } catch { return "\(error)" }
    }

    @Test func defaultsAndSections() throws {
        let file = try parse("# top\nserver = https://a/api\n\n[account  work ]\nuser = alice = x\n[account home]\nuser=bob\nuser = carol\n")
        #expect(file.defaults == ["server": "https://a/api"])
        #expect(file.accounts == [.init(name: "work", values: ["user": "alice = x"]),
                                  .init(name: "home", values: ["user": "carol"])])
    }

    @Test func crlfLineEndsAreLineEnds() throws {
        let file = try parse("server = https://a/api\r\n[account work]\r\nuser = alice\r\n")
        #expect(file.defaults == ["server": "https://a/api"])
        #expect(file.accounts == [.init(name: "work", values: ["user": "alice"])])
    }

    @Test func errorsSayWhereAndWhat() {
        #expect(error(Array("server = x\nfrobnicate = 1\n".utf8)) == "cfg:2: unknown setting frobnicate")
        #expect(error(Array("[account x\n".utf8)) == "cfg:1: unterminated section")
        #expect(error(Array("[server]\n".utf8)) == "cfg:1: expected [account NAME]")
        #expect(error(Array("[account]\n".utf8)) == "cfg:1: expected [account NAME]")
        #expect(error(Array("just words\n".utf8)) == "cfg:1: expected key = value")
        #expect(error(Array("[account a]\n[account a]\n".utf8)) == "cfg:2: account a is defined twice")
        #expect(error(Array("user = caf".utf8) + [0xe9, 0x0a]) == "cfg is not UTF-8 text")
    }

    /// The name becomes a folder of the default cache and Maildir paths.
    @Test func accountNamesMustBeFolderNames() {
        for name in ["../x", "a/b", ".hidden", "tab\u{1}x"] {
            #expect(error(Array("[account \(name)]\n".utf8))?.contains("cannot be a folder name") == true, "\(name)")
        }
    }

    /// A combining mark after '=' or '[' is part of the text, not a way to hide the syntax.
    @Test func combiningMarksDoNotHideSyntax() throws {
        let file = try parse("user =\u{301}x\n")
        #expect(file.defaults == ["user": "\u{301}x"])
        #expect(error(Array("[\u{301}account x]\n".utf8)) == "cfg:1: expected [account NAME]")
    }
}
