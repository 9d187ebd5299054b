import Maildir
import Foundation
import Testing
@testable import Store

private func tempPath(_ name: String) -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wdsync-store-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.appendingPathComponent(name).path
}

private func mailbox(_ id: String, _ path: String, index: Int = 1) -> MailboxRecord {
    MailboxRecord(id: id, path: path, specialUse: nil, modifyIndex: index, json: "{}")
}

private func message(_ mailbox: String, _ uid: Int, flags: MessageFlags = [], messageId: String? = nil, size: Int = 100) -> MessageRecord {
    MessageRecord(mailboxId: mailbox, uid: uid, messageId: messageId ?? "<\(uid)@x>", size: size, idate: 1_700_000_000,
                  flags: flags, json: "{\"id\":\(uid)}", uniq: "u-\(mailbox)-\(uid)")
}

@Suite struct StoreTests {
    @Test func createsDatabaseWithPrivateModeAndAllMigrations() throws {
        let path = tempPath("cache.sqlite")
        let store = try Store(path: path)
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
        let s = try store.db.prepare("SELECT COUNT(*), MAX(version) FROM schema_migrations")
        #expect(try s.step())
        #expect(s.int(0) == embeddedMigrations.count)
        #expect(s.int(1) == Store.schemaVersion)
        let mode = try store.db.prepare("PRAGMA journal_mode")
        #expect(try mode.step())
        #expect(mode.text(0) == "wal")
        let fk = try store.db.prepare("PRAGMA foreign_keys")
        #expect(try fk.step())
        #expect(fk.int(0) == 1)
        // FULL (2): a commit is durable when it returns (docs/durability.md).
        let synchronous = try store.db.prepare("PRAGMA synchronous")
        #expect(try synchronous.step())
        #expect(synchronous.int(0) == 2)
    }

    /// A listed message whose file name another row already has (its file was re-used, or the
    /// cache was restored from a backup) gets a name of its own: no UNIQUE error at every run.
    @Test func aListedMessageWhoseNameIsTakenGetsItsOwn() throws {
        let store = try Store(path: tempPath("cache.sqlite"))
        try store.upsertMailbox(mailbox("m1", "INBOX"))
        try store.insertMessage(message("m1", 1))
        var taken = message("m1", 2)
        taken.uniq = "u-m1-1"
        try store.insertMessage(taken)
        let rows = try store.messages(mailboxId: "m1")
        #expect(rows.count == 2)
        #expect(Set(rows.map(\.uniq)).count == 2)
        #expect(rows.last?.uniq.hasPrefix("u-m1-1-") == true)
        try store.insertMessage(taken)   // listed again: merged, not inserted twice
        #expect(try store.messages(mailboxId: "m1").count == 2)
    }

    @Test func migrationsMatchTheSQLFiles() throws {
        // The binary carries Migrations/*.sql; make sure it carries exactly those files.
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files.count == embeddedMigrations.count)
        for (file, migration) in zip(files, embeddedMigrations.sorted { $0.version < $1.version }) {
            let sql = try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)
            #expect(file.hasPrefix(String(format: "%04d_", migration.version)))
            #expect(migration.sql.trimmingCharacters(in: .whitespacesAndNewlines) == sql.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    @Test func reopeningIsIdempotentAndNewerSchemaIsRefused() throws {
        let path = tempPath("cache.sqlite")
        do { _ = try Store(path: path) }
        do { _ = try Store(path: path) }   // second open applies nothing and succeeds
        let store = try Store(path: path)
        try store.db.run("INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, 'future', 0)", .int(Store.schemaVersion + 1))
        #expect {
            _ = try Store(path: path)
        } throws: { error in
            guard let e = error as? StoreError, case .newerSchema = e else { return false }
            return e.description.contains("newer wdsync")
        }
    }

    @Test func aMigrationMissingBelowTheNewestIsStillApplied() throws {
        // Migrations numbered on parallel branches can land out of order.
        let path = tempPath("cache.sqlite")
        do {
            let store = try Store(path: path)
            try store.db.execute("DROP TABLE status; DELETE FROM schema_migrations WHERE version = 3")
        }
        let store = try Store(path: path)
        #expect(try store.hasTable("status"))
        #expect(try store.status() == StatusRecord())
        let reader = try Store(readOnlyPath: path)
        var empty = CacheCounts()
        empty.pendingPushes = 0   // the two-way outbox exists and is empty
        #expect(try reader.counts() == empty)
    }

    @Test func accountMismatchIsRefused() throws {
        let store = try Store(path: tempPath("c.sqlite"))
        try store.setAccount(AccountRecord(server: "http://a", username: "alice", userId: "1", maildir: "/m", layout: "verbatim"))
        try store.setAccount(AccountRecord(server: "http://a", username: "alice", userId: "2", maildir: "/m2", layout: "verbatim"))
        #expect(try store.account()?.userId == "2")
        #expect(throws: StoreError.self) {
            try store.setAccount(AccountRecord(server: "http://b", username: "bob", userId: "3", maildir: "/m", layout: "verbatim"))
        }
    }

    @Test func messagesBecomeOrphansAndDirtyTracksFlagChanges() throws {
        let store = try Store(path: tempPath("c.sqlite"))
        try store.upsertMailbox(mailbox("A", "INBOX"))
        try store.insertMessage(message("A", 1))
        try store.insertMessage(message("A", 2, flags: [.seen]))
        #expect(try store.dirtyMessages(limit: 10).count == 2)
        try store.markExported(mailboxId: "A", uid: 1, uniq: "u-A-1", file: "INBOX/new/u-A-1:2,", sha256: "ab")
        try store.markExported(mailboxId: "A", uid: 2, uniq: "u-A-2", file: "INBOX/cur/u-A-2:2,S", sha256: "cd")
        #expect(try store.dirtyMessages(limit: 10).isEmpty)

        // Same flags: stays clean. Different flags: dirty again.
        try store.updateFlags(mailboxId: "A", uid: 2, flags: [.seen], json: nil)
        #expect(try store.dirtyMessages(limit: 10).isEmpty)
        try store.updateFlags(mailboxId: "A", uid: 2, flags: [.seen, .flagged], json: nil)
        #expect(try store.dirtyMessages(limit: 10).map(\.uid) == [2])

        // Keyset paging over dirty rows.
        #expect(try store.dirtyMessages(after: ("A", 2), limit: 10).isEmpty)

        try store.removeMessage(mailboxId: "A", uid: 1)
        let orphan = try store.matchOrphan(messageId: "<1@x>", size: 100)
        #expect(orphan?.file == "INBOX/new/u-A-1:2,")
        #expect(orphan?.sha256 == "ab")
        #expect(try store.matchOrphan(messageId: "<1@x>", size: 101) == nil)
        #expect(try store.message(mailboxId: "A", uid: 1) == nil)
    }

    @Test func removingAMailboxOrphansItsFilesAndQueuesItsFolder() throws {
        let store = try Store(path: tempPath("c.sqlite"))
        try store.upsertMailbox(mailbox("B", "Work"))
        try store.setMailboxFolder(id: "B", folder: "Work")
        try store.insertMessage(message("B", 7))
        try store.markExported(mailboxId: "B", uid: 7, uniq: "u-B-7", file: "Work/cur/u-B-7:2,S", sha256: nil)
        try store.removeMailbox(id: "B")
        #expect(try store.mailboxes().isEmpty)
        #expect(try store.messages().isEmpty)
        #expect(try store.orphans().map(\.file) == ["Work/cur/u-B-7:2,S"])
        #expect(try store.deadFolders() == ["Work"])
    }

    @Test func folderRenameRewritesFilePathsExactlyUnderThePrefix() throws {
        let store = try Store(path: tempPath("c.sqlite"))
        try store.upsertMailbox(mailbox("C", "a_b"))
        try store.upsertMailbox(mailbox("D", "a_b/child"))
        try store.setMailboxFolder(id: "C", folder: "a_b")
        try store.setMailboxFolder(id: "D", folder: "a_b/child")
        try store.insertMessage(message("C", 1))
        try store.insertMessage(message("C", 2))
        try store.markExported(mailboxId: "C", uid: 1, uniq: "x", file: "a_b/cur/x:2,S", sha256: nil)
        try store.markExported(mailboxId: "C", uid: 2, uniq: "y", file: "aXb/cur/y:2,S", sha256: nil)  // '_' is not a wildcard
        try store.moveFolder(from: "a_b", to: "Neue/Entwürfe", nested: true)
        let files = try store.messages().compactMap(\.file).sorted()
        #expect(files == ["Neue/Entwürfe/cur/x:2,S", "aXb/cur/y:2,S"])
        #expect(try store.mailboxes().map(\.folder).sorted { ($0 ?? "") < ($1 ?? "") } == ["Neue/Entwürfe", "Neue/Entwürfe/child"])
        // Non-ASCII on the old side too: substr counts characters, not bytes.
        try store.moveFolder(from: "Neue/Entwürfe", to: "X", nested: true)
        #expect(try store.messages().compactMap(\.file).sorted() == ["X/cur/x:2,S", "aXb/cur/y:2,S"])
        #expect(try store.isKnownFolder("X/child") && !store.isKnownFolder("Y"))
    }

    @Test func failedTransactionRollsBack() throws {
        let store = try Store(path: tempPath("c.sqlite"))
        try store.upsertMailbox(mailbox("A", "INBOX"))
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try store.transaction {
                try store.insertMessage(message("A", 1))
                throw Boom()
            }
        }
        #expect(try store.messages().isEmpty)
    }

    /// A duplicate the push found is left to the export as an orphan, in the push's own
    /// transaction, and is never taken for a moved message.
    @Test func aRecordedDuplicateIsAnOrphanThatMatchesNothing() throws {
        let store = try Store(path: tempPath("d.sqlite"))
        try store.upsertMailbox(mailbox("A", "INBOX"))
        try store.insertMessage(message("A", 1, messageId: "<m@x>", size: 100))
        try store.recordDuplicate(file: "INBOX/cur/1700000000.wdA_1.host:2,S")
        #expect(try store.orphans().map(\.file) == ["INBOX/cur/1700000000.wdA_1.host:2,S"])
        #expect(try store.orphans().first?.uniq == "1700000000.wdA_1.host")
        #expect(try store.matchOrphan(messageId: "<m@x>", size: 100) == nil)
        #expect(try store.matchOrphan(messageId: nil, size: 0) == nil)
    }

    @Test func serverUpdatesMergeIntoLocalChangesAndPendingMutationsHoldTheExport() throws {
        let store = try Store(path: tempPath("c.sqlite"))
        try store.upsertMailbox(mailbox("A", "INBOX"))
        try store.insertMessage(message("A", 1))
        try store.insertMessage(message("A", 2))
        try store.markExported(mailboxId: "A", uid: 1, uniq: "u-A-1", file: "INBOX/new/u-A-1:2,", sha256: "ab")
        try store.markExported(mailboxId: "A", uid: 2, uniq: "u-A-2", file: "INBOX/new/u-A-2:2,", sha256: "cd")
        // Read locally (scan), then the server flags it: both kept, base is the server's.
        try store.setLocalFile(mailboxId: "A", uid: 1, file: "INBOX/cur/u-A-1:2,S", uniq: "u-A-1", flags: [.seen])
        try store.queue(.flags, mailboxId: "A", uid: 1)
        try store.insertMessage(message("A", 1, flags: [.flagged]))
        let one = try #require(try store.message(mailboxId: "A", uid: 1))
        #expect(one.flags == [.seen, .flagged] && one.baseFlags == [.flagged])
        #expect(try store.messageFlags(mailboxId: "A")[1] == [.flagged])
        // Deleted locally: the row is held from the exporter until the delete is confirmed.
        try store.queue(.delete, mailboxId: "A", uid: 2)
        try store.updateFlags(mailboxId: "A", uid: 2, flags: [.seen], json: nil)
        #expect(try store.dirtyMessages(limit: 10).map(\.uid) == [1])
        try store.completeDelete(mailboxId: "A", uid: 2)
        #expect(try store.message(mailboxId: "A", uid: 2) == nil)
        #expect(try store.orphanCount() == 0)
        // The server dropping a message with a pending flag change drops the change.
        try store.removeMessage(mailboxId: "A", uid: 1)
        #expect(try store.outboxCount() == 0)
    }

    @Test func aPendingMoveKeepsItsFileWhenTheSourceMailboxGoes() throws {
        let store = try Store(path: tempPath("c.sqlite"))
        try store.upsertMailbox(mailbox("A", "INBOX"))
        try store.upsertMailbox(mailbox("B", "Work"))
        try store.insertMessage(message("A", 1))
        try store.markExported(mailboxId: "A", uid: 1, uniq: "u-A-1", file: "INBOX/cur/u-A-1:2,S", sha256: "ab")
        try store.setLocalFile(mailboxId: "A", uid: 1, file: "Work/cur/u-A-1:2,S", uniq: "u-A-1", flags: [.seen])
        try store.queue(.move, mailboxId: "A", uid: 1, target: "B", file: "Work/cur/u-A-1:2,S", uniq: "u-A-1")
        // The server listing no longer has it: kept for the push to settle.
        try store.removeMessage(mailboxId: "A", uid: 1)
        #expect(try store.message(mailboxId: "A", uid: 1) != nil)
        // The whole mailbox goes: the move becomes an upload of the file, which is not orphaned.
        try store.removeMailbox(id: "A")
        #expect(try store.orphanCount() == 0)
        let pending = try store.outbox()
        #expect(pending.count == 1 && pending.first?.kind == .upload && pending.first?.mailboxId == "B")
        #expect(pending.first?.file == "Work/cur/u-A-1:2,S")
    }
}
