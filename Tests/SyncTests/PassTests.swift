import Foundation
import Testing
@testable import Sync
import Maildir
import WildDuck

/// Whole passes of the engine (`AccountSync.syncOnce`, what `wdsync --once` runs) against a
/// server in memory (`InMemoryServer`) and a Maildir in a temporary directory: the four steps
/// and their order, with no socket and no simulator. Each pass is a new `AccountSync` over the
/// same cache, as each `--once` run is. (The daemon's are `DaemonTests`.)
@Suite struct PassTests {
    static let inbox = "aaaaaaaaaaaaaaaaaaaaaa01"
    static let archive = "bbbbbbbbbbbbbbbbbbbbbb02"
    static let date = 1_700_000_000

    final class Fixture {
        let dir: String
        let server = InMemoryServer()
        let config: AccountConfig
        /// The account (the passes run on this thread, so the lock is not needed here).
        var account: InMemoryAccount { server.withAccount { $0 } }

        init() {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("pass-\(UUID().uuidString)").path
            config = InMemoryServer.config(in: dir)
            account.addMailbox(PassTests.inbox, path: "INBOX")
            account.addMailbox(PassTests.archive, path: "Archive", specialUse: "\\Archive")
        }

        deinit { try? FileManager.default.removeItem(atPath: dir) }

        @discardableResult
        func pass() throws -> SyncSummary {
            try AccountSync(config: config, log: PushTests.NoLog(), remote: server).syncOnce()
        }

        @discardableResult
        func deliver(_ messageId: String, to mailbox: String = PassTests.inbox, seen: Bool = false) -> Int {
            account.deliver(Array("Message-ID: <\(messageId)>\r\nSubject: \(messageId)\r\n\r\nbody of \(messageId)\r\n".utf8),
                            to: mailbox, date: PassTests.date, seen: seen)
        }

        /// The message files of a folder, relative to the root.
        func files(_ folder: String) -> [String] { InMemoryServer.files(in: dir + "/mail", folder: folder) }

        func contents(_ file: String) -> String {
            (try? String(contentsOfFile: "\(dir)/mail/\(file)", encoding: .utf8)) ?? ""
        }

        /// What a mail reader does: renames a file (another folder, other flags).
        func rename(_ file: String, to new: String) throws {
            try FileManager.default.moveItem(atPath: "\(dir)/mail/\(file)", toPath: "\(dir)/mail/\(new)")
        }

        var writes: [InMemoryAccount.Call] {
            account.calls.filter { if case .other = $0 { false } else { true } }
        }
    }

    @Test func aPassMirrorsEveryMailboxWithTheServersFlags() throws {
        let f = Fixture()
        f.deliver("one")
        f.deliver("two", seen: true)
        f.deliver("three", to: Self.archive)
        try f.pass()
        let inbox = f.files("INBOX")
        #expect(inbox.count == 2)
        #expect(inbox.contains { $0.hasPrefix("INBOX/new/") })
        #expect(inbox.contains { $0.hasPrefix("INBOX/cur/") && $0.hasSuffix(":2,S") })
        #expect(f.files("Archive").map(f.contents) == ["Message-ID: <three>\r\nSubject: three\r\n\r\nbody of three\r\n"])
        #expect(f.writes.isEmpty)
    }

    @Test func aFlagSetInTheMaildirIsSentOnceAndTheServersChangesArrive() throws {
        let f = Fixture()
        let uid = f.deliver("one")
        try f.pass()
        guard let file = f.files("INBOX").first else { Issue.record("no file"); return }
        // The reader reads it and flags it; meanwhile the server gets new mail.
        try f.rename(file, to: "INBOX/cur/\(Maildir.uniquePart(ofFileName: (file as NSString).lastPathComponent)):2,FS")
        f.deliver("two")
        try f.pass()
        #expect(f.writes == [.setFlags(mailbox: Self.inbox, uids: "\(uid)", FlagUpdate(seen: true, flagged: true))])
        #expect(f.account.boxes[Self.inbox]?.messages[uid]?.flagged == true)
        #expect(f.files("INBOX").count == 2)
        // Sent is forgotten: the next pass sends nothing again.
        try f.pass()
        #expect(f.writes.count == 1)
    }

    @Test func aMoveInTheMaildirIsAMoveOnTheServerNotACopy() throws {
        let f = Fixture()
        let uid = f.deliver("one", seen: true)
        try f.pass()
        guard let file = f.files("INBOX").first else { Issue.record("no file"); return }
        try f.rename(file, to: "Archive/cur/" + (file as NSString).lastPathComponent)
        try f.pass()
        #expect(f.writes == [.move(mailbox: Self.inbox, uids: "\(uid)", to: Self.archive, FlagUpdate())])
        #expect(f.account.boxes[Self.inbox]?.messages.isEmpty == true)
        #expect(f.account.boxes[Self.archive]?.messages.count == 1)
        #expect(f.files("INBOX").isEmpty)
        #expect(f.files("Archive").count == 1)
        #expect(f.account.uploads == 0)
    }

    @Test func aMessageExpungedOnTheServerLeavesTheMaildir() throws {
        let f = Fixture()
        let uid = f.deliver("one")
        f.deliver("two")
        try f.pass()
        f.account.boxes[Self.inbox]?.messages[uid] = nil
        try f.pass()
        #expect(f.files("INBOX").map(f.contents) == ["Message-ID: <two>\r\nSubject: two\r\n\r\nbody of two\r\n"])
        #expect(f.writes.isEmpty)
    }

    @Test func aChangeTheServerRefusedWithA502IsKeptAndSentByTheNextPass() throws {
        let f = Fixture()
        let uid = f.deliver("one")
        try f.pass()
        guard let file = f.files("INBOX").first else { Issue.record("no file"); return }
        try f.rename(file, to: "INBOX/cur/\(Maildir.uniquePart(ofFileName: (file as NSString).lastPathComponent)):2,S")
        f.account.fail("setFlags", with: InMemoryAccount.badGateway)
        // `--once` ends with the push's error (after pulling all the same)...
        #expect(throws: WildDuckError.self) { try f.pass() }
        #expect(f.account.boxes[Self.inbox]?.messages[uid]?.seen == false)
        // ...and the next run sends it.
        try f.pass()
        #expect(f.account.boxes[Self.inbox]?.messages[uid]?.seen == true)
        #expect(f.files("INBOX").count == 1)
    }
}
