import Testing
@testable import Sync
import Maildir
import Store

/// The scan's decisions (`ScanDiff`) from values alone: a snapshot of two folders, the cache's
/// rows and outbox, and the files' bytes — no disk, no database, no server.
@Suite struct ScanDiffTests {
    static let inbox = MailboxRecord(id: "aaaa01", path: "INBOX", specialUse: nil, modifyIndex: 0, highestUid: 40,
                                     json: "{}", folder: "INBOX")
    static let archive = MailboxRecord(id: "bbbb02", path: "Archive", specialUse: "\\Archive", modifyIndex: 0,
                                       highestUid: 7, json: "{}", folder: "Archive")
    static let now = 1_800_000_000.0
    /// Folder mtimes well before the scan started: recorded as scanned.
    static let quietTimes = FolderTimes(cur: 1_700_000_000_000_000_000, new: 1_700_000_000_000_000_000)

    /// A file as the scan lists it: `INBOX/cur/1.a:2,S`.
    static func local(_ path: String) -> LocalFile {
        let name = String(path.split(separator: "/").last ?? "")
        return LocalFile(unique: Maildir.uniquePart(ofFileName: name), file: path, flags: MessageFlags(fileName: name))
    }

    static func row(_ mailbox: MailboxRecord, _ uid: Int, _ file: String, flags: MessageFlags? = nil,
                    sha256: String? = nil, messageId: String? = nil, size: Int = 1000) -> FileRow {
        let name = String(file.split(separator: "/").last ?? "")
        let f = flags ?? MessageFlags(fileName: name)
        return FileRow(mailboxId: mailbox.id, uid: uid, uniq: Maildir.uniquePart(ofFileName: name), file: file, flags: f,
                       baseFlags: f, sha256: sha256, messageId: messageId, size: size)
    }

    /// A message's bytes, written long ago (quiet, and past the save grace).
    static func message(_ messageId: String, body: String = "hello", written: Double = now - 3600) -> LocalContent {
        let bytes = Array("Message-ID: <\(messageId)>\r\nSubject: s\r\n\r\n\(body)\r\n".utf8)
        return LocalContent(bytes: bytes, sha256: "sha-\(messageId)-\(body)", mtime: Int(written), ctime: Int(written),
                            mtimeNanoseconds: Int(written * 1e9), unchangedWhileRead: true)
    }

    /// The rest of the cache and the files' contents, as values.
    struct Lookup: ScanLookup {
        var rows: [FileRow] = []
        var orphans: Set<String> = []
        var contents: [String: LocalContent] = [:]
        func row(uniq: String) throws -> FileRow? { rows.first { $0.uniq == uniq } }
        func isOrphan(uniq: String) throws -> Bool { orphans.contains(uniq) }
        func rows(messageId: String, notIn mailboxId: String) throws -> [FileRow] {
            rows.filter { $0.mailboxId != mailboxId && $0.file != nil && MessageHeaders.normalized($0.messageId) == messageId }
        }
        func info(_ file: String) -> (size: Int, regular: Bool)? { contents[file].map { ($0.bytes.count, true) } }
        func sha256(_ file: String) -> String? { contents[file]?.sha256 }
        func content(_ file: String) throws -> LocalContent {
            guard let c = contents[file] else { throw MaildirError.invalidArgument("\(file) is gone") }
            return c
        }
        func now() -> Double { ScanDiffTests.now }
    }

    /// Both folders read: `inbox` and `archive` are their files; `rows` all the cache's messages
    /// (each folder's rows are those of its mailbox); every file on disk has content.
    static func diff(inbox: [String], archive: [String] = [], rows: [FileRow], outbox: [OutboxEntry] = [],
                     contents: [String: LocalContent] = [:], orphans: Set<String> = []) throws -> ScanChanges {
        let snapshot = ScanSnapshot(read: [
            .init(mailbox: Self.inbox, folder: "INBOX", times: quietTimes, files: inbox.map(local)),
            .init(mailbox: Self.archive, folder: "Archive", times: quietTimes, files: archive.map(local)),
        ], started: Int(now * 1e9))
        var disk = contents
        for file in inbox + archive where disk[file] == nil { disk[file] = message("\(file)@x") }
        let byMailbox = Dictionary(grouping: rows, by: \.mailboxId)
        let diff = ScanDiff(snapshot: snapshot, rows: byMailbox, outbox: outbox,
                            highestUid: [Self.inbox.id: Self.inbox.highestUid, Self.archive.id: Self.archive.highestUid])
        return try diff.changes(Lookup(rows: rows, orphans: orphans, contents: disk))
    }

    @Test func aFlagRenameIsAFlagChangeInPlace() throws {
        let r = Self.row(Self.inbox, 1, "INBOX/cur/1.a:2,")
        let changes = try Self.diff(inbox: ["INBOX/cur/1.a:2,FS"], rows: [r])
        #expect(changes.messages == [.relinked(.init(mailboxId: Self.inbox.id, uid: 1, file: Self.local("INBOX/cur/1.a:2,FS"),
                                                     flags: [.flagged, .seen], base: []))])
        #expect(changes.result.flagChanges == 1 && changes.result.moves == 0 && changes.uploads.isEmpty)
        #expect(changes.scanned.map(\.mailboxId) == [Self.inbox.id, Self.archive.id])
    }

    @Test func aFileRenamedFromNewToCurWithSIsSeen() throws {
        let r = Self.row(Self.inbox, 1, "INBOX/new/1.a")
        let changes = try Self.diff(inbox: ["INBOX/cur/1.a:2,S"], rows: [r])
        #expect(changes.messages == [.relinked(.init(mailboxId: Self.inbox.id, uid: 1, file: Self.local("INBOX/cur/1.a:2,S"),
                                                     flags: .seen, base: []))])
        #expect(changes.result.deletes == 0 && changes.uploads.isEmpty)
    }

    /// A server change not exported yet (F, in the row) is kept: only the letters the rename
    /// changed are the user's.
    @Test func aRenameChangesOnlyTheLettersThatDiffer() throws {
        var r = Self.row(Self.inbox, 1, "INBOX/cur/1.a:2,")
        r.flags = .flagged
        let changes = try Self.diff(inbox: ["INBOX/cur/1.a:2,S"], rows: [r])
        guard case .relinked(let relink) = changes.messages.first else { Issue.record("no relink"); return }
        #expect(relink.flags == [.flagged, .seen])
    }

    @Test func aFileRenamedIntoAnotherFolderIsAMove() throws {
        let r = Self.row(Self.inbox, 1, "INBOX/cur/1.a:2,S")
        let changes = try Self.diff(inbox: [], archive: ["Archive/cur/1.a:2,S"], rows: [r])
        #expect(changes.messages == [.relinked(.init(mailboxId: Self.inbox.id, uid: 1, file: Self.local("Archive/cur/1.a:2,S"),
                                                     flags: .seen, base: .seen, moveTo: Self.archive.id))])
        #expect(changes.result.moves == 1 && changes.result.deletes == 0 && changes.uploads.isEmpty)
    }

    @Test func anUnlinkedFileIsADelete() throws {
        let rows = [Self.row(Self.inbox, 1, "INBOX/cur/1.a:2,S"), Self.row(Self.inbox, 2, "INBOX/cur/2.b:2,")]
        let changes = try Self.diff(inbox: ["INBOX/cur/2.b:2,"], rows: rows)
        #expect(changes.messages == [.deleted(mailboxId: Self.inbox.id, uid: 1)])
        #expect(changes.result.deletes == 1)
    }

    @Test func aNewFileIsAnUploadToItsFolder() throws {
        let content = Self.message("new@x")
        let changes = try Self.diff(inbox: [], archive: ["Archive/new/9.z"], rows: [],
                                    contents: ["Archive/new/9.z": content])
        #expect(changes.messages.isEmpty)
        #expect(changes.uploads == [OutboxEntry(kind: .upload, mailboxId: Self.archive.id, file: "Archive/new/9.z", uniq: "9.z",
                                                sha256: content.sha256, size: content.bytes.count, messageId: "<new@x>",
                                                subject: "s", date: content.mtime, flags: [], afterUid: 7)])
        #expect(changes.result.uploads == 1)
    }

    /// `cp` of a message's file under a name of its own, into another folder, while the original
    /// stays: held (a save unlinks the original later), then uploaded as a copy.
    @Test func aCopyIsHeldWhileTheOriginalIsThereThenUploaded() throws {
        let original = Self.row(Self.inbox, 1, "INBOX/cur/1.a:2,S", messageId: "<m@x>")
        let recent = Self.message("m@x", written: Self.now - 60)
        let held = try Self.diff(inbox: ["INBOX/cur/1.a:2,S"], archive: ["Archive/cur/5.c:2,S"], rows: [original],
                                 contents: ["Archive/cur/5.c:2,S": recent])
        #expect(held.uploads.isEmpty && held.messages.isEmpty)
        #expect(held.result.readAgain == ["Archive"])
        #expect(held.scanned.map(\.mailboxId) == [Self.inbox.id])

        let old = Self.message("m@x", written: Self.now - Double(LocalScan.saveGrace) - 1)
        let copied = try Self.diff(inbox: ["INBOX/cur/1.a:2,S"], archive: ["Archive/cur/5.c:2,S"], rows: [original],
                                   contents: ["Archive/cur/5.c:2,S": old])
        #expect(copied.uploads.map(\.file) == ["Archive/cur/5.c:2,S"])
        #expect(copied.messages.isEmpty)
    }

    /// `cp` that kept the name: the same unique part in two folders, the original still there.
    @Test func aCopyUnderTheSameNameIsReportedNotUploaded() throws {
        let original = Self.row(Self.inbox, 1, "INBOX/cur/1.a:2,S")
        let changes = try Self.diff(inbox: ["INBOX/cur/1.a:2,S"], archive: ["Archive/cur/1.a:2,S"], rows: [original])
        #expect(changes.uploads.isEmpty && changes.messages.isEmpty)
        #expect(changes.notes.map(\.level) == [.warning])
    }

    /// mutt's save: a copy under a new name with the same bytes, and the original unlinked.
    @Test func aCopyWithTheSameBytesAndAnUnlinkIsAMove() throws {
        let content = Self.message("m@x")
        let original = Self.row(Self.inbox, 1, "INBOX/cur/1.a:2,S", sha256: content.sha256, messageId: "<m@x>")
        let changes = try Self.diff(inbox: [], archive: ["Archive/cur/5.c:2,S"], rows: [original],
                                    contents: ["Archive/cur/5.c:2,S": content])
        #expect(changes.messages == [.relinked(.init(mailboxId: Self.inbox.id, uid: 1, file: Self.local("Archive/cur/5.c:2,S"),
                                                     flags: .seen, base: .seen, moveTo: Self.archive.id))])
        #expect(changes.uploads.isEmpty && changes.result.deletes == 0)
    }

    /// neomutt's save rewrites the bytes: the Message-ID and about the size make it a move, and
    /// the new bytes' SHA-256 is recorded.
    @Test func aRewrittenSaveIsAMoveByMessageId() throws {
        let content = Self.message("m@x", body: "rewritten")
        let original = Self.row(Self.inbox, 1, "INBOX/cur/1.a:2,S", sha256: "other", messageId: "<m@x>",
                                size: content.bytes.count + 10)
        let changes = try Self.diff(inbox: [], archive: ["Archive/cur/5.c:2,RS"], rows: [original],
                                    contents: ["Archive/cur/5.c:2,RS": content])
        #expect(changes.messages == [.relinked(.init(mailboxId: Self.inbox.id, uid: 1, file: Self.local("Archive/cur/5.c:2,RS"),
                                                     flags: [.replied, .seen], base: .seen, sha256: content.sha256,
                                                     moveTo: Self.archive.id))])
        // Far from the size: another message, uploaded, and the original deleted.
        var big = original
        big.size = 10 * content.bytes.count + 10_000
        let other = try Self.diff(inbox: [], archive: ["Archive/cur/5.c:2,RS"], rows: [big],
                                  contents: ["Archive/cur/5.c:2,RS": content])
        #expect(other.messages == [.deleted(mailboxId: Self.inbox.id, uid: 1)])
        #expect(other.uploads.map(\.file) == ["Archive/cur/5.c:2,RS"])
    }

    @Test func aFileWithWdsyncsNameIsNeverAnUpload() throws {
        let name = AccountSync.uniqueName(mailboxId: Self.inbox.id, uid: 3, idate: 1_600_000_000)
        // Its message is not the one whose file vanished: reported, left alone.
        let alone = try Self.diff(inbox: ["INBOX/cur/\(name):2,S"], rows: [])
        #expect(alone.uploads.isEmpty && alone.messages.isEmpty)
        #expect(alone.notes.map(\.level) == [.warning])
        // The message it names lost its file (renamed by hand to another unique part): that file.
        let r = Self.row(Self.inbox, 3, "INBOX/cur/other.name:2,")
        let renamed = try Self.diff(inbox: ["INBOX/cur/\(name):2,S"], rows: [r])
        #expect(renamed.messages == [.relinked(.init(mailboxId: Self.inbox.id, uid: 3, file: Self.local("INBOX/cur/\(name):2,S"),
                                                     flags: .seen, base: []))])
        #expect(renamed.uploads.isEmpty && renamed.result.deletes == 0)
    }

    @Test func aFileStillBeingWrittenIsNotQueued() throws {
        let changes = try Self.diff(inbox: ["INBOX/new/9.z"], rows: [],
                                    contents: ["INBOX/new/9.z": Self.message("w@x", written: Self.now - 0.5)])
        #expect(changes.uploads.isEmpty && changes.result.unstable == 1)
        #expect(changes.result.readAgain == ["INBOX"])
    }

    @Test func aMessageWhoseRequestIsUnansweredIsLeftToThePush() throws {
        let r = Self.row(Self.inbox, 1, "INBOX/cur/1.a:2,")
        let sent = OutboxEntry(id: 4, kind: .delete, mailboxId: Self.inbox.id, uid: 1, sent: true)
        let changes = try Self.diff(inbox: [], rows: [r], outbox: [sent])
        #expect(changes.messages.isEmpty && changes.result.readAgain == ["INBOX"])
    }

    @Test func aFileBackUnderItsNameUndoesItsDelete() throws {
        let r = Self.row(Self.inbox, 1, "INBOX/cur/1.a:2,S")
        let delete = OutboxEntry(id: 4, kind: .delete, mailboxId: Self.inbox.id, uid: 1)
        let changes = try Self.diff(inbox: ["INBOX/cur/1.a:2,S"], rows: [r], outbox: [delete])
        #expect(changes.messages == [.undeleted(mailboxId: Self.inbox.id, uid: 1, flags: .seen, base: .seen)])
    }

    @Test func anOrphansFileIsLeftAlone() throws {
        let changes = try Self.diff(inbox: ["INBOX/cur/7.o:2,S"], rows: [], orphans: ["7.o"])
        #expect(changes.uploads.isEmpty && changes.messages.isEmpty)
    }

    @Test func aQueuedUploadFollowsItsFileAndGoesWithIt() throws {
        let upload = OutboxEntry(id: 9, kind: .upload, mailboxId: Self.inbox.id, file: "INBOX/new/9.z", uniq: "9.z")
        let moved = try Self.diff(inbox: [], archive: ["Archive/cur/9.z:2,S"], rows: [], outbox: [upload])
        #expect(moved.uploadMoves == [.init(id: 9, mailboxId: Self.archive.id, file: "Archive/cur/9.z:2,S", flags: .seen,
                                            afterUid: 7)])
        #expect(moved.uploads.isEmpty && moved.droppedUploads.isEmpty)
        let removed = try Self.diff(inbox: [], rows: [], outbox: [upload])
        #expect(removed.droppedUploads == [9] && removed.uploadMoves.isEmpty)
    }

    /// Two new files with the same unique part in two folders, the message's file gone from a
    /// folder not read: the first is its file (a move); the second then has the name of a file
    /// that is there, and is not a second move.
    @Test func aMessageIsRelinkedOnceWhenItsNameIsInTwoFolders() throws {
        let sent = MailboxRecord(id: "cccc03", path: "Sent", specialUse: "\\Sent", modifyIndex: 0, json: "{}", folder: "Sent")
        let r = Self.row(sent, 1, "Sent/cur/1.a:2,")
        let changes = try Self.diff(inbox: ["INBOX/cur/1.a:2,S"], archive: ["Archive/cur/1.a:2,S"], rows: [r])
        #expect(changes.messages == [.relinked(.init(mailboxId: sent.id, uid: 1, file: Self.local("INBOX/cur/1.a:2,S"),
                                                     flags: .seen, base: [], moveTo: Self.inbox.id))])
        #expect(changes.uploads.isEmpty && changes.notes.map(\.level) == [.warning])
    }

    @Test func aFolderChangedInTheLastSecondIsReadAgainNextTime() throws {
        var recent = Self.quietTimes
        recent.new = Int(Self.now * 1e9) - 1000
        let snapshot = ScanSnapshot(read: [.init(mailbox: Self.inbox, folder: "INBOX", times: recent, files: [])],
                                    unread: [ScannedFolder(mailboxId: Self.archive.id, times: Self.quietTimes)], started: Int(Self.now * 1e9))
        let changes = try ScanDiff(snapshot: snapshot, rows: [:], outbox: [], highestUid: [:]).changes(Lookup())
        #expect(changes.scanned.map(\.mailboxId) == [Self.archive.id])
    }
}
