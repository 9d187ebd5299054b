import Foundation
import Testing
@testable import Sync
import Maildir
import Store
import WildDuck

/// The push against an account in memory (`InMemoryAccount`) and local folders in memory
/// (`InMemoryFolders`, which the push only reads an upload's file from): what each local change
/// becomes on the server, and what happens when the server's answer is an error or never arrives.
@Suite struct PushTests {
    static let inbox = "aaaaaaaaaaaaaaaaaaaaaa01"
    static let archive = "bbbbbbbbbbbbbbbbbbbbbb02"

    /// A cache in a temporary directory and folders in memory, both in step with `server`.
    final class Fixture {
        let dir: String
        let store: Store
        let folders = InMemoryFolders()
        let server = InMemoryAccount()
        static let date = 1_700_000_000

        init() throws {
            for folder in ["INBOX", "Archive"] { try folders.ensureFolder(folder) }
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("push-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            store = try Store(path: dir + "/cache.db")
            for (id, path) in [(PushTests.inbox, "INBOX"), (PushTests.archive, "Archive")] {
                server.addMailbox(id, path: path)
                try store.upsertMailbox(MailboxRecord(id: id, path: path, specialUse: nil, modifyIndex: 0, json: "{}"))
                try store.setMailboxFolder(id: id, folder: path)
            }
        }

        deinit { try? FileManager.default.removeItem(atPath: dir) }

        func push() throws -> Push.Result {
            try Push(store: store, maildir: folders, client: server, log: NoLog(), isCancelled: { false }).run()
        }

        static func raw(_ messageId: String) -> [UInt8] {
            Array("Message-ID: <\(messageId)>\r\nSubject: about \(messageId)\r\n\r\nbody\r\n".utf8)
        }

        /// A message on the server and in the cache with its file, as a pull leaves it; `local`
        /// the flags the file has now.
        @discardableResult
        func synced(_ messageId: String, in mailbox: String = PushTests.inbox, local: MessageFlags = []) throws -> Int {
            let raw = Self.raw(messageId)
            let uid = server.deliver(raw, to: mailbox, date: Self.date)
            let folder = mailbox == PushTests.inbox ? "INBOX" : "Archive"
            let unique = "\(Self.date).M\(uid)P1.test"
            let file = "\(folder)/cur/\(unique):2,\(local.contains(.seen) ? "S" : "")"
            try folders.write(file, bytes: raw)
            try store.insertMessage(MessageRecord(mailboxId: mailbox, uid: uid, messageId: "<\(messageId)>", size: raw.count,
                                                  idate: Self.date, flags: [], json: "{}", uniq: unique))
            try store.setLocalFile(mailboxId: mailbox, uid: uid, file: file, uniq: unique, flags: local)
            try store.setMailboxSynced(id: mailbox, index: 0, highestUid: uid)
            return uid
        }

        /// A new file in INBOX, written long ago, queued for upload as the scan queues it.
        func newFile(_ messageId: String) throws -> String {
            let file = "INBOX/cur/\(Self.date).M99P1.test:2,S"
            try folders.write(file, bytes: Self.raw(messageId), mtime: Self.date)   // long ago: not being written
            try store.queueUpload(OutboxEntry(kind: .upload, mailboxId: PushTests.inbox, file: file,
                                              uniq: "\(Self.date).M99P1.test", flags: [.seen]))
            return file
        }

        func count(_ name: String) -> Int { server.calls.filter { $0 == .other(name) }.count }
    }

    struct NoLog: SyncLog {
        func log(_ level: LogLevel, _ message: String) {}
    }

    // MARK: Flags, moves, deletes

    @Test func flagChangesAreOneBulkRequestThenForgotten() throws {
        let f = try Fixture()
        for id in ["a@x", "b@x"] {
            let uid = try f.synced(id, local: [.seen])
            try f.store.queue(.flags, mailboxId: Self.inbox, uid: uid)
        }
        let result = try f.push()
        #expect(f.server.calls == [.setFlags(mailbox: Self.inbox, uids: "1,2", FlagUpdate(seen: true))])
        #expect(result.flags == 2)
        #expect(f.server.boxes[Self.inbox]?.messages.values.allSatisfy(\.seen) == true)
        #expect(try f.store.outboxCount() == 0)
        #expect(try f.store.fileRow(mailboxId: Self.inbox, uid: 1)?.baseFlags == [.seen])
        _ = try f.push()
        #expect(f.server.calls.count == 1, "sent again: \(f.server.calls)")
    }

    /// A refusal that sending again would not change (a 4xx) drops the change: one request,
    /// in this pass and the next.
    @Test func aRefusedFlagChangeIsNotSentAgain() throws {
        let f = try Fixture()
        try f.store.queue(.flags, mailboxId: Self.inbox, uid: try f.synced("a@x", local: [.seen]))
        f.server.fail("setFlags", with: .server(route: "PUT messages", status: 400, code: "InputValidationError", message: "bad"))
        _ = try f.push()
        _ = try f.push()
        #expect(f.server.calls == [.setFlags(mailbox: Self.inbox, uids: "1", FlagUpdate(seen: true))])
        #expect(try f.store.outboxCount() == 0)
    }

    @Test func aMoveIsOneMoveRequest() throws {
        let f = try Fixture()
        let uid = try f.synced("a@x")
        let file = try f.store.fileRow(mailboxId: Self.inbox, uid: uid)?.file
        try f.store.queue(.move, mailboxId: Self.inbox, uid: uid, target: Self.archive, file: file)
        let result = try f.push()
        #expect(f.server.calls.filter { if case .move = $0 { true } else { false } }
                == [.move(mailbox: Self.inbox, uids: String(uid), to: Self.archive, FlagUpdate())])
        #expect(result.moves == 1)
        #expect(f.server.boxes[Self.inbox]?.messages.isEmpty == true)
        #expect(f.server.boxes[Self.archive]?.messages.count == 1)
        #expect(try f.store.fileRow(mailboxId: Self.archive, uid: 1)?.file == file)
        #expect(try f.store.fileRow(mailboxId: Self.inbox, uid: uid) == nil)
        #expect(try f.store.outboxCount() == 0)
    }

    /// The move went through but its answer did not arrive (a proxy's 502): the next push finds
    /// the message in the target and ties it there; there is still one copy.
    @Test func aMoveWhoseAnswerWasLostIsFoundInTheTarget() throws {
        let f = try Fixture()
        let uid = try f.synced("a@x")
        let file = try f.store.fileRow(mailboxId: Self.inbox, uid: uid)?.file
        try f.store.queue(.move, mailboxId: Self.inbox, uid: uid, target: Self.archive, file: file)
        f.server.fail("moveMessages", with: InMemoryAccount.badGateway, afterDoing: true)
        #expect(throws: WildDuckError.self) { try f.push() }
        #expect(try f.store.outbox().first?.sent == true)
        let result = try f.push()
        #expect(result.moves == 1)
        #expect(f.count("searchByDate") == 1)
        #expect(f.server.boxes[Self.archive]?.messages.count == 1)
        #expect(try f.store.fileRow(mailboxId: Self.archive, uid: 1)?.file == file)
        #expect(try f.store.outboxCount() == 0)
    }

    @Test func aDeleteIsOneDeleteRequest() throws {
        let f = try Fixture()
        try f.synced("keep@x")
        let uid = try f.synced("a@x")
        try f.store.queue(.delete, mailboxId: Self.inbox, uid: uid)
        let result = try f.push()
        #expect(f.server.calls == [.delete(mailbox: Self.inbox, uid: uid)])
        #expect(result.deletes == 1)
        #expect(f.server.boxes[Self.inbox]?.messages.keys.sorted() == [1])
        #expect(try f.store.fileRow(mailboxId: Self.inbox, uid: uid) == nil)
        #expect(try f.store.outboxCount() == 0)
    }

    // MARK: Uploads

    @Test func anUploadIsTiedToTheServersMessage() throws {
        let f = try Fixture()
        let file = try f.newFile("new@x")
        let result = try f.push()
        #expect(f.server.calls == [.upload(mailbox: Self.inbox)])
        #expect(result.uploads == 1)
        #expect(f.server.boxes[Self.inbox]?.messages[1]?.seen == true)
        #expect(try f.store.fileRow(mailboxId: Self.inbox, uid: 1)?.file == file)
        #expect(try f.store.outboxCount() == 0)
    }

    /// nginx answers 502 after WildDuck stored the upload: the push looks on the server, finds
    /// it, and does not upload it a second time, in this pass or the next.
    @Test func aLostUploadAnswerIsSettledWithoutASecondUpload() throws {
        let f = try Fixture()
        try f.synced("old@x")
        let file = try f.newFile("new@x")
        f.server.fail("uploadMessage", with: InMemoryAccount.badGateway, afterDoing: true)
        let result = try f.push()
        _ = try f.push()
        #expect(f.server.uploads == 1)
        #expect(f.count("searchByDate") == 1)
        #expect(result.uploads == 1)
        #expect(f.server.boxes[Self.inbox]?.messages.count == 2)
        #expect(try f.store.fileRow(mailboxId: Self.inbox, uid: 2)?.file == file)
        #expect(try f.store.outboxCount() == 0)
    }

    /// The same answer when nothing was stored: the push cannot tell, so the upload stays
    /// "sent" and the next pass looks on the server before it sends it again.
    @Test func anUploadThatMayHaveFailedIsLookedForBeforeItIsSentAgain() throws {
        let f = try Fixture()
        let file = try f.newFile("new@x")
        f.server.fail("uploadMessage", with: InMemoryAccount.badGateway)
        #expect(throws: WildDuckError.self) { try f.push() }
        #expect(try f.store.outbox().first?.sent == true)
        #expect(f.count("searchByDate") == 1)
        _ = try f.push()
        #expect(f.count("searchByDate") == 2)
        #expect(f.server.calls.last == .upload(mailbox: Self.inbox))
        #expect(f.server.uploads == 2)
        #expect(f.server.boxes[Self.inbox]?.messages.count == 1)
        #expect(try f.store.fileRow(mailboxId: Self.inbox, uid: 1)?.file == file)
        #expect(try f.store.outboxCount() == 0)
    }

    /// WildDuck's own refusal (a 4xx) proves nothing was stored: no search, no second try in
    /// this pass; the file stays queued, not marked sent.
    @Test func aRefusedUploadIsNotRetriedBlindly() throws {
        let f = try Fixture()
        _ = try f.newFile("new@x")
        f.server.fail("uploadMessage", with: .server(route: "POST messages", status: 400, code: "InputValidationError", message: "bad"))
        let result = try f.push()
        #expect(f.server.calls == [.upload(mailbox: Self.inbox)])
        #expect(result.uploads == 0)
        #expect(f.server.boxes[Self.inbox]?.messages.isEmpty == true)
        let entry = try f.store.outbox()
        #expect(entry.count == 1 && entry.first?.sent == false)
    }
}
