import Maildir

/// A pending mutation of the server (a row of `outbox`). It is written before its request is
/// sent and removed only when the server confirmed it, so a change made offline, or one whose
/// request failed, is sent by a later run. `sent` marks a request that went out without an
/// answer: before sending it again, the push looks on the server for its effect.
public struct OutboxEntry: Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// Push the message's S/F/T flags (`messages.flags` against `messages.base_flags`).
        case flags
        /// Move the message to `target` (with its flag changes); its file is `file`.
        case move
        /// Delete the message on the server (its file was unlinked).
        case delete
        /// Upload the new file `file` to `mailboxId`.
        case upload
    }
    public var id: Int
    public var kind: Kind
    public var mailboxId: String
    public var uid: Int?
    public var target: String?
    public var file: String?
    public var uniq: String?
    public var sha256: String?
    public var size: Int?
    public var messageId: String?
    public var subject: String?
    public var date: Int?
    public var flags: MessageFlags?
    public var afterUid: Int?
    public var sent: Bool
    /// An upload the server stored with a size that does not fit what was sent: kept, never
    /// sent again (state 2; see `setUploadStoredDiffers`).
    public var storedDiffers = false
    /// What the mass-delete breaker did with it (migration 0008).
    public var held: Held
    /// When the intent was recorded (unix seconds): the daemon sends a burst of deletes only
    /// once it has settled.
    public var createdAt: Int

    /// The breaker's state of a delete, a move to Trash or Junk, or a T flag.
    public enum Held: Int, Sendable {
        case no = 0
        /// Nothing is sent; the local change stays as it is.
        case held = 1
        /// `--allow-mass-delete`: the next push sends it, whoever runs it.
        case released = 2
        /// `--discard-held`: the next push drops it and restores the message locally.
        case discarded = 3
    }

    public init(id: Int = 0, kind: Kind, mailboxId: String, uid: Int? = nil, target: String? = nil, file: String? = nil,
                uniq: String? = nil, sha256: String? = nil, size: Int? = nil, messageId: String? = nil,
                subject: String? = nil, date: Int? = nil, flags: MessageFlags? = nil, afterUid: Int? = nil, sent: Bool = false,
                storedDiffers: Bool = false, held: Held = .no, createdAt: Int = 0) {
        self.id = id; self.kind = kind; self.mailboxId = mailboxId; self.uid = uid; self.target = target
        self.file = file; self.uniq = uniq; self.sha256 = sha256; self.size = size; self.messageId = messageId
        self.subject = subject; self.date = date; self.flags = flags; self.afterUid = afterUid; self.sent = sent
        self.storedDiffers = storedDiffers; self.held = held; self.createdAt = createdAt
    }
}

/// What the scan needs of a stored message: where its file is and its flags.
public struct FileRow: Sendable, Equatable {
    public var mailboxId: String
    public var uid: Int
    public var uniq: String
    public var file: String?
    public var flags: MessageFlags
    public var baseFlags: MessageFlags
    public var sha256: String?
    public var messageId: String?
    /// The server's size of the message.
    public var size: Int

    public init(mailboxId: String, uid: Int, uniq: String, file: String?, flags: MessageFlags, baseFlags: MessageFlags,
                sha256: String? = nil, messageId: String? = nil, size: Int = 0) {
        self.mailboxId = mailboxId; self.uid = uid; self.uniq = uniq; self.file = file; self.flags = flags
        self.baseFlags = baseFlags; self.sha256 = sha256; self.messageId = messageId; self.size = size
    }
}

// MARK: - Outbox

extension Store {
    private static let outboxColumns = """
        id, kind, mailbox_id, uid, target, file, uniq, sha256, size, message_id, subject, date, flags, after_uid, state, held, created_at
        """

    private func outboxEntry(_ s: Statement) -> OutboxEntry {
        OutboxEntry(id: s.int(0), kind: OutboxEntry.Kind(rawValue: s.text(1) ?? "") ?? .flags, mailboxId: s.text(2) ?? "",
                    uid: s.optionalInt(3), target: s.text(4), file: s.text(5), uniq: s.text(6), sha256: s.text(7),
                    size: s.optionalInt(8), messageId: s.text(9), subject: s.text(10), date: s.optionalInt(11),
                    flags: s.optionalInt(12).map(MessageFlags.init(rawValue:)), afterUid: s.optionalInt(13),
                    sent: s.int(14) == 1, storedDiffers: s.int(14) == 2,
                    held: OutboxEntry.Held(rawValue: s.int(15)) ?? .held, createdAt: s.int(16))
    }

    /// Every pending mutation, oldest first.
    public func outbox() throws -> [OutboxEntry] {
        let s = try db.prepare("SELECT \(Store.outboxColumns) FROM outbox ORDER BY id")
        var out: [OutboxEntry] = []
        while try s.step() { out.append(outboxEntry(s)) }
        return out
    }

    public func outboxCount() throws -> Int {
        let s = try db.prepare("SELECT COUNT(*) FROM outbox")
        _ = try s.step()
        return s.int(0)
    }

    public func outboxEntry(mailboxId: String, uid: Int) throws -> OutboxEntry? {
        let s = try db.prepare("SELECT \(Store.outboxColumns) FROM outbox WHERE mailbox_id = ? AND uid = ?")
        try s.bind([.text(mailboxId), .int(uid)])
        return try s.step() ? outboxEntry(s) : nil
    }

    public func outboxEntry(uniq: String) throws -> OutboxEntry? {
        let s = try db.prepare("SELECT \(Store.outboxColumns) FROM outbox WHERE uniq = ?")
        try s.bind([.text(uniq)])
        return try s.step() ? outboxEntry(s) : nil
    }

    /// Records a pending mutation of a stored message, replacing the one it had (a message has
    /// at most one: its latest intent).
    public func queue(_ kind: OutboxEntry.Kind, mailboxId: String, uid: Int, target: String? = nil,
                      file: String? = nil, uniq: String? = nil) throws {
        // The same intent again (a delete seen by another scan, a move whose file was renamed
        // in its new folder) stays the same row: it keeps when it was first recorded and what
        // the mass-delete breaker decided about it.
        try db.run("""
            UPDATE outbox SET file = ?, uniq = ?, state = 0 WHERE mailbox_id = ? AND uid = ? AND kind = ? AND target IS ?
            """, SQLValue(file), SQLValue(uniq), .text(mailboxId), .int(uid), .text(kind.rawValue), SQLValue(target))
        if db.changes > 0 { return }
        try db.run("DELETE FROM outbox WHERE mailbox_id = ? AND uid = ?", .text(mailboxId), .int(uid))
        try db.run("INSERT INTO outbox(kind, mailbox_id, uid, target, file, uniq) VALUES (?, ?, ?, ?, ?, ?)",
                   .text(kind.rawValue), .text(mailboxId), .int(uid), SQLValue(target), SQLValue(file), SQLValue(uniq))
    }

    /// Records the intent to upload a new file (everything needed to find it on the server
    /// again if the answer is lost). Returns the entry's id.
    @discardableResult
    public func queueUpload(_ e: OutboxEntry) throws -> Int {
        try db.run("""
            INSERT INTO outbox(kind, mailbox_id, file, uniq, sha256, size, message_id, subject, date, flags, after_uid)
            VALUES ('upload', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, .text(e.mailboxId), SQLValue(e.file), SQLValue(e.uniq), SQLValue(e.sha256), SQLValue(e.size),
                   SQLValue(e.messageId), SQLValue(e.subject), SQLValue(e.date), SQLValue(e.flags?.rawValue),
                   SQLValue(e.afterUid))
        return Int(sqlite3LastInsertRowid())
    }

    /// A queued upload whose file was renamed (new flags) or moved to another folder before it was sent.
    public func updateUpload(id: Int, mailboxId: String, file: String, flags: MessageFlags, afterUid: Int?) throws {
        try db.run("UPDATE outbox SET mailbox_id = ?, file = ?, flags = ?, after_uid = ? WHERE id = ? AND state = 0",
                   .text(mailboxId), .text(file), .int(flags.rawValue), SQLValue(afterUid), .int(id))
    }

    /// Marks a request as sent (committed before it goes out) or, after an error answer, as not sent.
    public func setOutboxSent(id: Int, _ sent: Bool) throws {
        try db.run("UPDATE outbox SET state = ? WHERE id = ?", .int(sent ? 1 : 0), .int(id))
    }

    public func removeOutbox(id: Int) throws {
        try db.run("DELETE FROM outbox WHERE id = ?", .int(id))
    }

    /// Pending moves out of a mailbox (or of one message) become uploads of their files to the
    /// target: used when the source message is gone from the server for good.
    public func convertMovesToUploads(from mailboxId: String, uid: Int?) throws {
        let s = try db.prepare("""
            SELECT o.id, o.target, o.file, o.uniq, m.sha256, m.size, m.message_id, m.idate, m.flags, t.highest_uid, o.uid
            FROM outbox o JOIN messages m ON m.mailbox_id = o.mailbox_id AND m.uid = o.uid
            LEFT JOIN mailboxes t ON t.id = o.target
            WHERE o.kind = 'move' AND o.mailbox_id = ?1 AND (?2 IS NULL OR o.uid = ?2)
            """)
        try s.bind([.text(mailboxId), SQLValue(uid)])
        var uploads: [(id: Int, uid: Int, upload: OutboxEntry)] = []
        while try s.step() {
            uploads.append((s.int(0), s.int(10),
                            OutboxEntry(kind: .upload, mailboxId: s.text(1) ?? "", file: s.text(2), uniq: s.text(3),
                                        sha256: s.text(4), size: s.optionalInt(5), messageId: s.text(6),
                                        date: s.optionalInt(7), flags: MessageFlags(rawValue: s.int(8)),
                                        afterUid: s.optionalInt(9))))
        }
        for (id, uid, upload) in uploads {
            try removeOutbox(id: id)
            try queueUpload(upload)
            // The file now belongs to the upload: the message's row must not orphan it.
            try db.run("UPDATE messages SET file = NULL WHERE mailbox_id = ? AND uid = ?", .text(mailboxId), .int(uid))
        }
    }

    private func sqlite3LastInsertRowid() -> Int64 {
        (try? db.prepare("SELECT last_insert_rowid()")).flatMap { s in (try? s.step()) == true ? Int64(s.int(0)) : nil } ?? 0
    }
}

// MARK: - Messages, as the scan and the push see them

extension Store {
    private static let fileRowColumns = "mailbox_id, uid, uniq, file, flags, base_flags, sha256, message_id, size"

    private func fileRow(_ s: Statement) -> FileRow {
        FileRow(mailboxId: s.text(0) ?? "", uid: s.int(1), uniq: s.text(2) ?? "", file: s.text(3),
                flags: MessageFlags(rawValue: s.int(4)), baseFlags: MessageFlags(rawValue: s.int(5)),
                sha256: s.text(6), messageId: s.text(7), size: s.int(8))
    }

    /// The messages of a mailbox that have a file.
    public func fileRows(mailboxId: String) throws -> [FileRow] {
        let s = try db.prepare("SELECT \(Store.fileRowColumns) FROM messages WHERE mailbox_id = ? AND file IS NOT NULL")
        try s.bind([.text(mailboxId)])
        var out: [FileRow] = []
        while try s.step() { out.append(fileRow(s)) }
        return out
    }

    /// Messages whose file was moved locally into `mailboxId`'s folder and whose move is pending.
    public func fileRows(movingTo mailboxId: String) throws -> [FileRow] {
        let s = try db.prepare("""
            SELECT m.mailbox_id, m.uid, m.uniq, m.file, m.flags, m.base_flags, m.sha256, m.message_id, m.size
            FROM outbox o JOIN messages m ON m.mailbox_id = o.mailbox_id AND m.uid = o.uid
            WHERE o.kind = 'move' AND o.target = ?
            """)
        try s.bind([.text(mailboxId)])
        var out: [FileRow] = []
        while try s.step() { out.append(fileRow(s)) }
        return out
    }

    /// The messages outside `mailboxId` that have a file and this Message-ID (compared without
    /// angle brackets and surrounding space).
    public func fileRows(messageId: String, notIn mailboxId: String) throws -> [FileRow] {
        let s = try db.prepare("""
            SELECT \(Store.fileRowColumns) FROM messages
            WHERE file IS NOT NULL AND mailbox_id != ? AND TRIM(message_id, '<> ') = ?
            """)
        try s.bind([.text(mailboxId), .text(messageId)])
        var out: [FileRow] = []
        while try s.step() { out.append(fileRow(s)) }
        return out
    }

    /// Every message, as the adoption matches files to them.
    public func allFileRows() throws -> [FileRow] {
        let s = try db.prepare("SELECT \(Store.fileRowColumns) FROM messages ORDER BY mailbox_id, uid")
        var out: [FileRow] = []
        while try s.step() { out.append(fileRow(s)) }
        return out
    }

    public func fileRow(uniq: String) throws -> FileRow? {
        let s = try db.prepare("SELECT \(Store.fileRowColumns) FROM messages WHERE uniq = ?")
        try s.bind([.text(uniq)])
        return try s.step() ? fileRow(s) : nil
    }

    public func fileRow(mailboxId: String, uid: Int) throws -> FileRow? {
        let s = try db.prepare("SELECT \(Store.fileRowColumns) FROM messages WHERE mailbox_id = ? AND uid = ?")
        try s.bind([.text(mailboxId), .int(uid)])
        return try s.step() ? fileRow(s) : nil
    }

    /// The scan found the message's file under another name (or folder): records it, with the
    /// flags it now has. Does not mark the row for the exporter: the disk already shows it.
    public func setLocalFile(mailboxId: String, uid: Int, file: String, uniq: String, flags: MessageFlags,
                             sha256: String? = nil) throws {
        try db.run("UPDATE messages SET file = ?, uniq = ?, flags = ?, sha256 = COALESCE(?, sha256) WHERE mailbox_id = ? AND uid = ?",
                   .text(file), .text(uniq), .int(flags.rawValue), SQLValue(sha256), .text(mailboxId), .int(uid))
    }

    /// The server confirmed pushed flags: they are now the agreed state.
    public func setBaseFlags(mailboxId: String, uid: Int, _ flags: MessageFlags) throws {
        try db.run("UPDATE messages SET base_flags = ? WHERE mailbox_id = ? AND uid = ?",
                   .int(flags.rawValue), .text(mailboxId), .int(uid))
    }

    /// The server confirmed a move: the message is `newUid` in `target`, its file stays where it is.
    /// A server change held back while the move was pending (the row is dirty) is exported now;
    /// a row the pull made for the target's copy meanwhile is replaced (a file it has, which a
    /// cache from before this rule may have downloaded, is returned so the caller can unlink it).
    @discardableResult
    public func completeMove(mailboxId: String, uid: Int, target: String, newUid: Int, baseFlags: MessageFlags) throws -> String? {
        guard let m = try message(mailboxId: mailboxId, uid: uid) else { return nil }
        var duplicate: String?
        if let existing = try fileRow(mailboxId: target, uid: newUid), let file = existing.file, file != m.file {
            duplicate = file
        }
        let held = try db.prepare("SELECT dirty FROM messages WHERE mailbox_id = ? AND uid = ?")
        try held.bind([.text(mailboxId), .int(uid)])
        let dirty = try held.step() ? held.int(0) : 0
        try db.run("DELETE FROM outbox WHERE mailbox_id = ? AND uid = ?", .text(mailboxId), .int(uid))
        try db.run("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", .text(mailboxId), .int(uid))
        try db.run("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", .text(target), .int(newUid))
        try db.run("""
            INSERT INTO messages(mailbox_id, uid, message_id, size, idate, flags, base_flags, json, uniq, sha256, file, dirty)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, .text(target), .int(newUid), SQLValue(m.messageId), .int(m.size), SQLValue(m.idate),
                   .int(m.flags.rawValue), .int(baseFlags.rawValue), .text(m.json), .text(m.uniq),
                   SQLValue(m.sha256), SQLValue(m.file), .int(dirty))
        if !m.flags.pushableChanges(from: baseFlags).isEmpty {
            try queue(.flags, mailboxId: target, uid: newUid)
        }
        try db.run("UPDATE mailboxes SET highest_uid = MAX(highest_uid, ?) WHERE id = ?", .int(newUid), .text(target))
        return duplicate
    }

    /// The server confirmed a delete (or no longer has the message): the row goes, with no
    /// orphan (the file was unlinked by the user).
    public func completeDelete(mailboxId: String, uid: Int) throws {
        try db.run("DELETE FROM outbox WHERE mailbox_id = ? AND uid = ?", .text(mailboxId), .int(uid))
        try db.run("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", .text(mailboxId), .int(uid))
    }

    /// The server confirmed an upload as `uid`: the local file *is* that message from now on, so
    /// neither a listing nor an event downloads it again. A row the pull already made for it (an
    /// upload whose answer was lost) takes the local file; a copy it downloaded is returned so
    /// the caller can unlink it.
    @discardableResult
    public func completeUpload(_ e: OutboxEntry, uid: Int, size: Int, baseFlags: MessageFlags) throws -> String? {
        let flags = e.flags ?? []
        var duplicate: String?
        if let existing = try fileRow(mailboxId: e.mailboxId, uid: uid), existing.file != e.file {
            duplicate = existing.file
        }
        try db.run("DELETE FROM outbox WHERE id = ?", .int(e.id))
        try db.run("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", .text(e.mailboxId), .int(uid))
        try db.run("""
            INSERT INTO messages(mailbox_id, uid, message_id, size, idate, flags, base_flags, json, uniq, sha256, file, dirty)
            VALUES (?, ?, ?, ?, ?, ?, ?, '{}', ?, ?, ?, 0)
            """, .text(e.mailboxId), .int(uid), SQLValue(e.messageId), .int(size), SQLValue(e.date),
                   .int(flags.rawValue), .int(baseFlags.rawValue), .text(e.uniq ?? ""), SQLValue(e.sha256), SQLValue(e.file))
        if !flags.pushableChanges(from: baseFlags).isEmpty {
            try queue(.flags, mailboxId: e.mailboxId, uid: uid)
        }
        try db.run("UPDATE mailboxes SET highest_uid = MAX(highest_uid, ?) WHERE id = ?", .int(uid), .text(e.mailboxId))
        return duplicate
    }

    /// Whether an orphan (a file whose message left the server, not yet unlinked) has this unique part.
    public func isOrphan(uniq: String) throws -> Bool {
        let s = try db.prepare("SELECT EXISTS(SELECT 1 FROM orphans WHERE uniq = ?)")
        try s.bind([.text(uniq)])
        return try s.step() && s.int(0) == 1
    }

    public func messageCount(mailboxId: String) throws -> Int {
        let s = try db.prepare("SELECT COUNT(*) FROM messages WHERE mailbox_id = ?")
        try s.bind([.text(mailboxId)])
        _ = try s.step()
        return s.int(0)
    }

    /// Whether any message has been written to the Maildir (a missing root then means a disk
    /// that is not mounted, not a first run).
    public func hasExportedFiles() throws -> Bool {
        let s = try db.prepare("SELECT EXISTS(SELECT 1 FROM messages WHERE file IS NOT NULL)")
        return try s.step() && s.int(0) == 1
    }

    /// Forgets the files of a mailbox whose folder is gone from disk, so the exporter downloads
    /// them again (messages with a pending mutation keep theirs). Returns how many.
    @discardableResult
    public func markMailboxForDownload(mailboxId: String) throws -> Int {
        try db.run("""
            UPDATE messages SET file = NULL, sha256 = NULL, dirty = 1 WHERE mailbox_id = ? AND file IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.mailbox_id = messages.mailbox_id AND o.uid = messages.uid)
            """, .text(mailboxId))
        let s = try db.prepare("SELECT changes()")
        _ = try s.step()
        return s.int(0)
    }

    /// Records what exactly is about to be uploaded, and that it is being sent, in one step.
    public func markUploadSent(id: Int, sha256: String, size: Int, messageId: String?, subject: String?, date: Int,
                               afterUid: Int?) throws {
        try db.run("""
            UPDATE outbox SET sha256 = ?, size = ?, message_id = ?, subject = ?, date = ?, after_uid = ?, state = 1
            WHERE id = ?
            """, .text(sha256), .int(size), SQLValue(messageId), SQLValue(subject), .int(date), SQLValue(afterUid), .int(id))
    }

    /// A queued upload's file changed after the scan found it: records what it is now (sent
    /// once it stops changing).
    public func updateUploadContent(id: Int, sha256: String, size: Int, messageId: String?, subject: String?, date: Int) throws {
        try db.run("UPDATE outbox SET sha256 = ?, size = ?, message_id = ?, subject = ?, date = ? WHERE id = ?",
                   .text(sha256), .int(size), SQLValue(messageId), SQLValue(subject), .int(date), .int(id))
    }

    /// The server stored an upload with a size that does not fit what was sent: the row stays
    /// (the file is not uploaded again, and `--status` counts it as pending) in state 2.
    public func setUploadStoredDiffers(id: Int) throws {
        try db.run("UPDATE outbox SET state = 2 WHERE id = ?", .int(id))
    }

    public func setScanned(mailboxId: String, cur: Int?, new: Int?) throws {
        try db.run("UPDATE mailboxes SET scanned_cur = ?, scanned_new = ? WHERE id = ?",
                   SQLValue(cur), SQLValue(new), .text(mailboxId))
    }
}
