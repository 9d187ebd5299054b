import Foundation
import Testing
@testable import Sync
import Maildir
import Store

/// The engine's decisions about the local folders, without a server or sockets: what the
/// export's plan does for a message (`Export.plan`) and what the scan makes of what a
/// reader did to the files (`LocalScan`), both through `LocalFolders`.
///
/// Each test runs against the real `Maildir` in a temporary directory and against
/// `InMemoryFolders`. These decisions hinge on the Maildir's own rules (a file found again by
/// its unique part after a reader renamed it, `cur/` with S and `new/` without, the name's
/// flags); the double does not copy them but calls the Maildir's helpers for them, and
/// `InMemoryFoldersTests` checks it against the real one step by step. The tests read as what
/// a user does (`mv`, `rm`), through `UserFiles`.
@Suite struct LocalFoldersTests {
    static let inbox = "aaaaaaaaaaaaaaaaaaaaaa01"
    static let archive = "bbbbbbbbbbbbbbbbbbbbbb02"
    static let date = 1_700_000_000

    /// A cache in a temporary directory and the folders INBOX and Archive on `backend`.
    final class Fixture {
        let dir: String
        let store: Store
        let local: TestFolders
        var folders: any LocalFolders { local.folders }

        init(_ backend: Backend) throws {
            local = try TestFolders(backend)
            for folder in ["INBOX", "Archive"] { try local.folders.ensureFolder(folder) }
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("local-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            store = try Store(path: dir + "/cache.db")
            for (id, path) in [(LocalFoldersTests.inbox, "INBOX"), (LocalFoldersTests.archive, "Archive")] {
                try store.upsertMailbox(MailboxRecord(id: id, path: path, specialUse: nil, modifyIndex: 0, json: "{}"))
                try store.setMailboxFolder(id: id, folder: path)
            }
        }

        deinit { try? FileManager.default.removeItem(atPath: dir) }

        static func raw(_ messageId: String) -> [UInt8] {
            Array("Message-ID: <\(messageId)>\r\nSubject: about \(messageId)\r\n\r\nbody\r\n".utf8)
        }

        /// A message as the pull lists it (`flags` the server's), with its file `file`, as an
        /// export leaves it (with its SHA-256 when `hashed`, as a download records it).
        func synced(_ messageId: String, uid: Int = 1, in mailbox: String = LocalFoldersTests.inbox,
                    flags: MessageFlags = [], file: String, hashed: Bool = false) throws {
            let raw = Self.raw(messageId)
            try local.user.write(file, bytes: raw)
            let unique = Maildir.uniquePart(ofFileName: String(file.split(separator: "/").last ?? ""))
            try store.insertMessage(MessageRecord(mailboxId: mailbox, uid: uid, messageId: "<\(messageId)>", size: raw.count,
                                                  idate: LocalFoldersTests.date, flags: flags, json: "{}", uniq: unique))
            try store.markExported(mailboxId: mailbox, uid: uid, file: file, sha256: hashed ? folders.sha256(file) : nil)
            try store.setMailboxSynced(id: mailbox, index: 0, highestUid: uid)
        }

        func message(_ mailbox: String, _ uid: Int) throws -> MessageRecord {
            guard let row = try store.message(mailboxId: mailbox, uid: uid) else { throw NoRow() }
            return row
        }

        func plan(_ mailbox: String, _ uid: Int, folder: String, excluding taken: Set<String> = []) throws -> ExportStep {
            try Export.plan(message(mailbox, uid), folder: folder, store: store, folders: folders, excluding: taken)
        }

        /// What a user's `mv` does.
        func rename(_ from: String, to: String) throws { try local.user.rename(from, to: to) }

        func remove(_ file: String) throws { try local.user.remove(file) }

        func scan() throws -> LocalScan.Result {
            try LocalScan(store: store, maildir: folders, log: PushTests.NoLog()).run(force: true)
        }
    }

    struct NoRow: Error {}

    // MARK: The export's plan

    /// The server marked the message seen and flagged: its file leaves new/ for cur/ with F and S.
    @Test(arguments: Backend.allCases) func aFileIsRenamedToTheServersFlags(_ backend: Backend) throws {
        let f = try Fixture(backend)
        try f.synced("a@x", file: "INBOX/new/1.a:2,")
        try f.store.updateFlags(mailboxId: Self.inbox, uid: 1, flags: [.seen, .flagged], json: nil)
        #expect(try f.plan(Self.inbox, 1, folder: "INBOX") == .place("INBOX/new/1.a:2,", to: "INBOX/cur/1.a:2,FS"))
    }

    /// A file recorded in another folder than its mailbox's goes into its mailbox's folder.
    @Test(arguments: Backend.allCases) func aFileIsPlacedInItsMailboxsFolder(_ backend: Backend) throws {
        let f = try Fixture(backend)
        try f.synced("a@x", in: Self.archive, flags: [.seen], file: "INBOX/cur/1.a:2,S")
        #expect(try f.plan(Self.archive, 1, folder: "Archive") == .place("INBOX/cur/1.a:2,S", to: "Archive/cur/1.a:2,S"))
    }

    /// A reader moved the file to cur/ and marked it seen since the export: it is found by its
    /// unique part, not downloaded again.
    @Test(arguments: Backend.allCases) func aFileAReaderRenamedIsFoundByItsUniquePart(_ backend: Backend) throws {
        let f = try Fixture(backend)
        try f.synced("a@x", file: "INBOX/new/1.a:2,")
        try f.rename("INBOX/new/1.a:2,", to: "INBOX/cur/1.a:2,S")
        try f.store.updateFlags(mailboxId: Self.inbox, uid: 1, flags: [.seen, .flagged], json: nil)
        #expect(try f.plan(Self.inbox, 1, folder: "INBOX") == .place("INBOX/cur/1.a:2,S", to: "INBOX/cur/1.a:2,FS"))
    }

    /// Moved on the server: the pull lists the message in Archive (without a file) and no longer
    /// in INBOX, whose file becomes an orphan; the plan re-uses that file, unless an earlier
    /// step of the same plan took it.
    @Test(arguments: Backend.allCases) func anOrphansFileIsReusedForAMessageMovedOnTheServer(_ backend: Backend) throws {
        let f = try Fixture(backend)
        try f.synced("a@x", flags: [.seen], file: "INBOX/cur/1.a:2,S")
        let raw = Fixture.raw("a@x")
        try f.store.insertMessage(MessageRecord(mailboxId: Self.archive, uid: 7, messageId: "<a@x>", size: raw.count,
                                                idate: Self.date, flags: [.seen], json: "{}", uniq: "2.b"))
        try f.store.removeMessage(mailboxId: Self.inbox, uid: 1)
        let orphan = try #require(try f.store.orphans().first)
        #expect(orphan.file == "INBOX/cur/1.a:2,S" && orphan.uniq == "1.a")
        #expect(try f.plan(Self.archive, 7, folder: "Archive")
                == .reuse(orphan, "INBOX/cur/1.a:2,S", to: "Archive/cur/1.a:2,S"))
        #expect(try f.plan(Self.archive, 7, folder: "Archive", excluding: [orphan.file]) == .download(missing: nil))
    }

    /// The file was deleted by hand and is nowhere: downloaded again, and said so.
    @Test(arguments: Backend.allCases) func aMessageWhoseFileIsGoneIsDownloaded(_ backend: Backend) throws {
        let f = try Fixture(backend)
        try f.synced("a@x", flags: [.seen], file: "INBOX/cur/1.a:2,S")
        try f.remove("INBOX/cur/1.a:2,S")
        #expect(try f.plan(Self.inbox, 1, folder: "INBOX") == .download(missing: "INBOX/cur/1.a:2,S"))
    }

    // MARK: The scan

    @Test(arguments: Backend.allCases) func aFileRenamedByTheUserIsAFlagChange(_ backend: Backend) throws {
        let f = try Fixture(backend)
        try f.synced("a@x", file: "INBOX/cur/1.a:2,")
        try f.rename("INBOX/cur/1.a:2,", to: "INBOX/cur/1.a:2,S")
        let result = try f.scan()
        #expect(result.flagChanges == 1 && result.moves == 0 && result.deletes == 0 && result.uploads == 0)
        let entries = try f.store.outbox()
        #expect(entries.map(\.kind) == [.flags] && entries.first?.uid == 1 && entries.first?.mailboxId == Self.inbox)
        let row = try f.store.fileRow(mailboxId: Self.inbox, uid: 1)
        #expect(row?.file == "INBOX/cur/1.a:2,S" && row?.flags == [.seen] && row?.baseFlags == [])
    }

    @Test(arguments: Backend.allCases) func aRemovedFileIsADelete(_ backend: Backend) throws {
        let f = try Fixture(backend)
        try f.synced("keep@x", uid: 1, file: "INBOX/cur/1.a:2,")
        try f.synced("a@x", uid: 2, file: "INBOX/cur/2.a:2,")
        try f.remove("INBOX/cur/2.a:2,")
        let result = try f.scan()
        #expect(result.deletes == 1 && result.flagChanges == 0 && result.moves == 0 && result.uploads == 0)
        let entries = try f.store.outbox()
        #expect(entries.map(\.kind) == [.delete] && entries.first?.uid == 2 && entries.first?.mailboxId == Self.inbox)
    }

    @Test(arguments: Backend.allCases) func aFileMovedToAnotherFolderIsAMove(_ backend: Backend) throws {
        let f = try Fixture(backend)
        try f.synced("a@x", flags: [.seen], file: "INBOX/cur/1.a:2,S")
        try f.rename("INBOX/cur/1.a:2,S", to: "Archive/cur/1.a:2,S")
        let result = try f.scan()
        #expect(result.moves == 1 && result.deletes == 0 && result.uploads == 0)
        let entries = try f.store.outbox()
        #expect(entries.map(\.kind) == [.move] && entries.first?.uid == 1 && entries.first?.mailboxId == Self.inbox
                && entries.first?.target == Self.archive)
        #expect(try f.store.fileRow(mailboxId: Self.inbox, uid: 1)?.file == "Archive/cur/1.a:2,S")
    }

    /// mutt's save within a folder: a copy under a new name, then an unlink of the original.
    /// The copy has the original's bytes (its SHA-256, which the scan reads through
    /// `LocalFolders`): the same message, not a delete and an upload.
    @Test(arguments: Backend.allCases) func aCopyWithTheBytesOfARemovedFileIsTheSameMessage(_ backend: Backend) throws {
        let f = try Fixture(backend)
        try f.synced("a@x", flags: [.seen], file: "INBOX/cur/1.a:2,S", hashed: true)
        try f.local.user.write("INBOX/cur/2.b:2,S", bytes: Fixture.raw("a@x"))
        try f.remove("INBOX/cur/1.a:2,S")
        let result = try f.scan()
        #expect(result.moves == 1 && result.deletes == 0 && result.uploads == 0 && result.unstable == 0)
        #expect(try f.store.outbox().isEmpty)
        #expect(try f.store.fileRow(mailboxId: Self.inbox, uid: 1)?.file == "INBOX/cur/2.b:2,S")
    }
}
