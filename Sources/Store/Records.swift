import Maildir
public struct AccountRecord: Sendable, Equatable {
    public var server: String
    public var username: String
    public var userId: String?
    public var maildir: String
    public var layout: String
    public init(server: String, username: String, userId: String?, maildir: String, layout: String) {
        self.server = server; self.username = username; self.userId = userId
        self.maildir = maildir; self.layout = layout
    }
}

public struct MailboxRecord: Sendable, Equatable {
    public var id: String
    public var path: String
    public var specialUse: String?
    public var modifyIndex: Int
    public var syncedIndex: Int?
    public var highestUid: Int
    public var total: Int?
    public var unseen: Int?
    public var json: String
    public var folder: String?
    /// mtimes (ns) of the folder's cur/ and new/ when it was last scanned for local changes.
    public var scannedCur: Int?
    public var scannedNew: Int?
    /// The journal position from which the next pass must read before the last sync of this
    /// mailbox is final; nil when it is (see migration 0009).
    public var unsettledFrom: String?
    public init(id: String, path: String, specialUse: String?, modifyIndex: Int, syncedIndex: Int? = nil,
                highestUid: Int = 0, total: Int? = nil, unseen: Int? = nil, json: String, folder: String? = nil,
                scannedCur: Int? = nil, scannedNew: Int? = nil, unsettledFrom: String? = nil) {
        self.id = id; self.path = path; self.specialUse = specialUse; self.modifyIndex = modifyIndex
        self.syncedIndex = syncedIndex; self.highestUid = highestUid; self.total = total; self.unseen = unseen
        self.json = json; self.folder = folder; self.scannedCur = scannedCur; self.scannedNew = scannedNew
        self.unsettledFrom = unsettledFrom
    }
}

public struct MessageRecord: Sendable, Equatable {
    public var mailboxId: String
    public var uid: Int
    public var messageId: String?
    public var size: Int
    public var idate: Int?
    public var flags: MessageFlags
    public var json: String
    public var uniq: String
    public var sha256: String?
    public var file: String?
    /// The server's flags as last seen or confirmed (the merge base); `flags` is the state the
    /// file must have, which keeps local changes not yet pushed and the flags never pushed.
    public var baseFlags: MessageFlags
    public init(mailboxId: String, uid: Int, messageId: String?, size: Int, idate: Int?, flags: MessageFlags,
                json: String, uniq: String, sha256: String? = nil, file: String? = nil, baseFlags: MessageFlags? = nil) {
        self.mailboxId = mailboxId; self.uid = uid; self.messageId = messageId; self.size = size
        self.idate = idate; self.flags = flags; self.json = json; self.uniq = uniq
        self.sha256 = sha256; self.file = file; self.baseFlags = baseFlags ?? flags
    }
}

/// A delivered file whose message left its mailbox; re-used if the message shows up elsewhere.
public struct OrphanRecord: Sendable, Equatable {
    public var file: String
    public var uniq: String
    public var messageId: String?
    public var size: Int
    public var sha256: String?
}

// MARK: - Account, settings, filters, autoreply

extension Store {
    public func account() throws -> AccountRecord? {
        let s = try db.prepare("SELECT server, username, user_id, maildir, layout FROM account WHERE id = 1")
        guard try s.step() else { return nil }
        return AccountRecord(server: s.text(0) ?? "", username: s.text(1) ?? "", userId: s.text(2),
                             maildir: s.text(3) ?? "", layout: s.text(4) ?? "")
    }

    /// Records the account. A cache that already belongs to another server or user is refused.
    public func setAccount(_ account: AccountRecord) throws {
        if let existing = try self.account(),
           existing.server != account.server || existing.username != account.username {
            throw StoreError.accountMismatch(path: path, expected: "\(account.username) at \(account.server)",
                                             found: "\(existing.username) at \(existing.server)")
        }
        try db.run("""
            INSERT INTO account(id, server, username, user_id, maildir, layout) VALUES (1, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET user_id = excluded.user_id, maildir = excluded.maildir, layout = excluded.layout
            """, .text(account.server), .text(account.username), SQLValue(account.userId),
                   .text(account.maildir), .text(account.layout))
    }

    public func setUserJSON(_ json: String) throws {
        try db.run("UPDATE account SET user_json = ? WHERE id = 1", .text(json))
    }
    public func setAutoreplyJSON(_ json: String) throws {
        try db.run("UPDATE account SET autoreply_json = ? WHERE id = 1", .text(json))
    }
    public func userJSON() throws -> String? { try accountColumn("user_json") }
    public func autoreplyJSON() throws -> String? { try accountColumn("autoreply_json") }
    public func lastEventId() throws -> String? { try accountColumn("last_event_id") }
    public func setLastEventId(_ id: String?) throws {
        try db.run("UPDATE account SET last_event_id = ? WHERE id = 1", SQLValue(id))
    }
    /// Journal ids already applied near the position (see migration 0005).
    public func journalSeen() throws -> Set<String> {
        let s = try db.prepare("SELECT id FROM journal_seen")
        var out = Set<String>()
        while try s.step() { if let id = s.text(0) { out.insert(id) } }
        return out
    }

    /// Records the journal position and the ids around it, in one transaction.
    public func setJournalPosition(_ id: String?, seen: [String]) throws {
        try transaction {
            try db.run("UPDATE account SET last_event_id = ? WHERE id = 1", SQLValue(id))
            try db.run("DELETE FROM journal_seen")
            for id in seen { try db.run("INSERT OR IGNORE INTO journal_seen(id) VALUES (?)", .text(id)) }
        }
    }

    /// Whether downloads of an export are under way — or were, when a process was killed.
    public func isExporting() throws -> Bool {
        let s = try db.prepare("SELECT exporting FROM account WHERE id = 1")
        return try s.step() && s.int(0) == 1
    }

    public func setExporting(_ running: Bool) throws {
        try db.run("UPDATE account SET exporting = ? WHERE id = 1", .int(running ? 1 : 0))
    }

    public func setSyncedNow() throws {
        try db.run("UPDATE account SET synced_at = strftime('%s','now') WHERE id = 1")
    }

    private func accountColumn(_ column: String) throws -> String? {
        let s = try db.prepare("SELECT \(column) FROM account WHERE id = 1")
        return try s.step() ? s.text(0) : nil
    }

    /// Replaces the stored filter list with the server's. A filter whose listing is unchanged keeps its detail (see
    /// `setFilterDetail`); any other has none until it is fetched.
    public func replaceFilters(_ filters: [(id: String, json: String)], limitsJSON: String?) throws {
        var kept: [String: (json: String, detail: String?)] = [:]
        for filter in try filterDetails() { kept[filter.id] = (filter.json, filter.detail) }
        try db.run("DELETE FROM filters")
        for filter in filters {
            let detail = kept[filter.id].flatMap { $0.json == filter.json ? $0.detail : nil }
            try db.run("INSERT OR REPLACE INTO filters(id, json, detail_json) VALUES (?, ?, ?)",
                       .text(filter.id), .text(filter.json), SQLValue(detail))
        }
        try db.run("UPDATE account SET filters_json = ? WHERE id = 1", SQLValue(limitsJSON))
    }

    /// Each filter's listing and, once fetched, the whole filter (GET of the filter).
    public func filterDetails() throws -> [(id: String, json: String, detail: String?)] {
        let s = try db.prepare("SELECT id, json, detail_json FROM filters ORDER BY id")
        var out: [(id: String, json: String, detail: String?)] = []
        while try s.step() { out.append((s.text(0) ?? "", s.text(1) ?? "", s.text(2))) }
        return out
    }

    /// Records the whole filter (`detail_json`, migration 0013) of a listed one.
    public func setFilterDetail(id: String, json: String) throws {
        try db.run("UPDATE filters SET detail_json = ? WHERE id = ?", .text(json), .text(id))
    }

    public func filters() throws -> [(id: String, json: String)] {
        let s = try db.prepare("SELECT id, json FROM filters ORDER BY id")
        var out: [(id: String, json: String)] = []
        while try s.step() { out.append((s.text(0) ?? "", s.text(1) ?? "")) }
        return out
    }
}

// MARK: - Mailboxes

extension Store {
    public func mailboxes() throws -> [MailboxRecord] {
        let s = try db.prepare("""
            SELECT id, path, special_use, modify_index, synced_index, highest_uid, total, unseen, json, folder,
                   scanned_cur, scanned_new, unsettled_from
            FROM mailboxes ORDER BY path
            """)
        var out: [MailboxRecord] = []
        while try s.step() {
            out.append(MailboxRecord(id: s.text(0) ?? "", path: s.text(1) ?? "", specialUse: s.text(2),
                                     modifyIndex: s.int(3), syncedIndex: s.optionalInt(4), highestUid: s.int(5),
                                     total: s.optionalInt(6), unseen: s.optionalInt(7), json: s.text(8) ?? "{}",
                                     folder: s.text(9), scannedCur: s.optionalInt(10), scannedNew: s.optionalInt(11),
                                     unsettledFrom: s.text(12)))
        }
        return out
    }

    /// Inserts or updates what the server says about a mailbox; keeps local sync state.
    public func upsertMailbox(_ m: MailboxRecord) throws {
        try db.run("""
            INSERT INTO mailboxes(id, path, special_use, modify_index, total, unseen, json) VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET path = excluded.path, special_use = excluded.special_use,
                modify_index = excluded.modify_index, total = excluded.total, unseen = excluded.unseen, json = excluded.json
            """, .text(m.id), .text(m.path), SQLValue(m.specialUse), .int(m.modifyIndex),
                   SQLValue(m.total), SQLValue(m.unseen), .text(m.json))
    }

    /// Forgets a mailbox the server no longer has: its files become orphans (a later arrival of
    /// the same message elsewhere re-uses them) and its folder is queued for removal.
    /// A message moved locally out of it whose move was not pushed keeps its file: the move
    /// becomes an upload of that file to the target (the mail is never lost); its other pending
    /// mutations are dropped, and so are uploads into it (their files stay on disk, in a folder
    /// the exporter keeps because it holds files wdsync did not write). Moves into it are undone:
    /// their files go back to their own folders.
    public func removeMailbox(id: String) throws {
        try convertMovesToUploads(from: id, uid: nil)
        try db.run("DELETE FROM outbox WHERE mailbox_id = ? AND kind IN ('flags', 'delete', 'upload')", .text(id))
        // Moves into it cannot happen: their files go back to their own folders (before the
        // exporter removes this one).
        try db.run("""
            UPDATE messages SET dirty = 1 WHERE EXISTS (SELECT 1 FROM outbox o WHERE o.kind = 'move' AND o.target = ?1
                AND o.mailbox_id = messages.mailbox_id AND o.uid = messages.uid)
            """, .text(id))
        try db.run("DELETE FROM outbox WHERE kind = 'move' AND target = ?", .text(id))
        try db.run("""
            INSERT OR REPLACE INTO orphans(file, uniq, message_id, size, sha256)
            SELECT file, uniq, message_id, size, sha256 FROM messages WHERE mailbox_id = ? AND file IS NOT NULL
            """, .text(id))
        try db.run("INSERT OR IGNORE INTO dead_folders(folder) SELECT folder FROM mailboxes WHERE id = ? AND folder IS NOT NULL",
                   .text(id))
        try db.run("DELETE FROM messages WHERE mailbox_id = ?", .text(id))
        try db.run("DELETE FROM mailboxes WHERE id = ?", .text(id))
    }

    public func setMailboxSynced(id: String, index: Int, highestUid: Int) throws {
        try db.run("UPDATE mailboxes SET synced_index = ?, highest_uid = MAX(highest_uid, ?) WHERE id = ?",
                   .int(index), .int(highestUid), .text(id))
    }

    /// Records from which journal position the next pass must confirm the mailbox's last sync
    /// (nil: it is final).
    public func setMailboxUnsettled(id: String, from position: String?) throws {
        try db.run("UPDATE mailboxes SET unsettled_from = ? WHERE id = ?", SQLValue(position), .text(id))
    }

    /// When every mailbox was last listed and compared with the cache (unix seconds).
    public func lastFullCheck() throws -> Int? {
        let s = try db.prepare("SELECT last_full_check FROM account WHERE id = 1")
        return try s.step() ? s.optionalInt(0) : nil
    }

    public func setLastFullCheck(_ seconds: Int) throws {
        try db.run("UPDATE account SET last_full_check = ? WHERE id = 1", .int(seconds))
    }

    /// Marks a mailbox as needing a full re-listing (e.g. an update we could not apply exactly).
    public func markMailboxStale(id: String) throws {
        try db.run("UPDATE mailboxes SET synced_index = NULL WHERE id = ?", .text(id))
    }

    public func setMailboxFolder(id: String, folder: String?) throws {
        try db.run("UPDATE mailboxes SET folder = ? WHERE id = ?", SQLValue(folder), .text(id))
    }

    public func deadFolders() throws -> [String] {
        let s = try db.prepare("SELECT folder FROM dead_folders ORDER BY length(folder) DESC")
        var out: [String] = []
        while try s.step() { if let f = s.text(0) { out.append(f) } }
        return out
    }

    public func removeDeadFolder(_ folder: String) throws {
        try db.run("DELETE FROM dead_folders WHERE folder = ?", .text(folder))
    }
}

// MARK: - Messages

extension Store {
    /// uid → the server's flags as last seen, for every stored message of a mailbox (for diffing
    /// against a server listing).
    public func messageFlags(mailboxId: String) throws -> [Int: MessageFlags] {
        let s = try db.prepare("SELECT uid, base_flags FROM messages WHERE mailbox_id = ?")
        try s.bind([.text(mailboxId)])
        var out: [Int: MessageFlags] = [:]
        while try s.step() { out[s.int(0)] = MessageFlags(rawValue: s.int(1)) }
        return out
    }

    /// A message as the server lists it. A message already stored gets the server's flags merged
    /// into its own (`updateFlags`); a new one starts with the server's flags as its base.
    public func insertMessage(_ m: MessageRecord) throws {
        // Inserted first: a listing's rows are nearly all new, and a row that exists is merged.
        func insert(_ uniq: String) throws {
            try db.run("""
                INSERT INTO messages(mailbox_id, uid, message_id, size, idate, flags, base_flags, json, uniq, dirty)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT(mailbox_id, uid) DO NOTHING
                """, .text(m.mailboxId), .int(m.uid), SQLValue(m.messageId), .int(m.size), SQLValue(m.idate),
                       .int(m.flags.rawValue), .int(m.flags.rawValue), .text(m.json), .text(uniq))
        }
        do { try insert(m.uniq) } catch let error as SQLiteError where error.code == 2067 /* SQLITE_CONSTRAINT_UNIQUE */ {
            // Another row's file already has this name (a file re-used for another message,
            // a cache restored from a backup): this message gets a name of its own, with the
            // same mailbox and uid in it, instead of an error at every run.
            try insert(m.uniq + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 16))
        }
        if db.changes == 0 { _ = try mergeServerFlags(mailboxId: m.mailboxId, uid: m.uid, server: m.flags, json: m.json) }
    }

    /// New flags from the server, merged three-way with the local state (`MessageFlags.merge`);
    /// marks the row for the exporter when the file's flags must change.
    public func updateFlags(mailboxId: String, uid: Int, flags: MessageFlags, json: String?) throws {
        _ = try mergeServerFlags(mailboxId: mailboxId, uid: uid, server: flags, json: json)
    }

    /// False when there is no such row.
    private func mergeServerFlags(mailboxId: String, uid: Int, server: MessageFlags, json: String?) throws -> Bool {
        let s = try db.prepare("SELECT flags, base_flags FROM messages WHERE mailbox_id = ? AND uid = ?")
        try s.bind([.text(mailboxId), .int(uid)])
        guard try s.step() else { return false }
        let local = MessageFlags(rawValue: s.int(0)), base = MessageFlags(rawValue: s.int(1))
        let merged = MessageFlags.merge(local: local, base: base, server: server)
        if merged == local && base == server && json == nil { return true }
        try db.run("""
            UPDATE messages SET flags = ?, base_flags = ?, json = COALESCE(?, json),
                dirty = CASE WHEN flags = ? THEN dirty ELSE 1 END
            WHERE mailbox_id = ? AND uid = ?
            """, .int(merged.rawValue), .int(server.rawValue), SQLValue(json), .int(merged.rawValue),
                   .text(mailboxId), .int(uid))
        return true
    }

    /// The server no longer lists this message: its file (if any) becomes an orphan. A pending
    /// local flag change or delete of it is moot and dropped. A message moved locally whose move
    /// was not confirmed keeps its row and file: the push looks for it in the target, and uploads
    /// the file there if the server lost it.
    public func removeMessage(mailboxId: String, uid: Int) throws {
        if let pending = try outboxEntry(mailboxId: mailboxId, uid: uid) {
            if pending.kind == .move { return }
            try removeOutbox(id: pending.id)
        }
        try db.run("""
            INSERT OR REPLACE INTO orphans(file, uniq, message_id, size, sha256)
            SELECT file, uniq, message_id, size, sha256 FROM messages WHERE mailbox_id = ? AND uid = ? AND file IS NOT NULL
            """, .text(mailboxId), .int(uid))
        // After an export that was cut off, a message without a recorded file may still have
        // one: published, not recorded. It becomes an orphan under its unique name in new/
        // (the exporter finds the file by its unique part wherever it is), or it would stay
        // behind as a file nothing knows.
        try db.run("""
            INSERT OR IGNORE INTO orphans(file, uniq, message_id, size, sha256)
            SELECT CASE b.folder WHEN '' THEN '' ELSE b.folder || '/' END || 'new/' || m.uniq, m.uniq, m.message_id, m.size, NULL
            FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
            WHERE m.mailbox_id = ? AND m.uid = ? AND m.file IS NULL AND b.folder IS NOT NULL
              AND (SELECT exporting FROM account WHERE id = 1) = 1
            """, .text(mailboxId), .int(uid))
        try db.run("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", .text(mailboxId), .int(uid))
    }

    static let messageColumns = "mailbox_id, uid, message_id, size, idate, flags, json, uniq, sha256, file, base_flags"
    /// The same, with the item's JSON left out (empty), for the exporter, which does not read it.
    static let exportColumns = "mailbox_id, uid, message_id, size, idate, flags, '', uniq, sha256, file, base_flags"

    func messageRecord(_ s: Statement) -> MessageRecord {
        MessageRecord(mailboxId: s.text(0) ?? "", uid: s.int(1), messageId: s.text(2), size: s.int(3),
                      idate: s.optionalInt(4), flags: MessageFlags(rawValue: s.int(5)), json: s.text(6) ?? "{}",
                      uniq: s.text(7) ?? "", sha256: s.text(8), file: s.text(9), baseFlags: MessageFlags(rawValue: s.int(10)))
    }

    /// Rows the exporter must look at, in (mailbox, uid) order after `after`, at most `limit`.
    /// Held back while a local mutation of theirs is pending (docs/two-way.md, "The outbox
    /// rule"): a message moved or deleted locally (its file is elsewhere or gone on purpose); a
    /// message without a file in the target of a pending move that may be the server's copy of
    /// it (same Message-ID, or without one the same date and size); and one that may be the
    /// server's copy of an upload whose answer was lost (same Message-ID, or without one a uid
    /// above the one recorded and the same date). So neither is ever downloaded as a second copy.
    public func dirtyMessages(after: (mailboxId: String, uid: Int)? = nil, limit: Int) throws -> [MessageRecord] {
        let s = try db.prepare("""
            SELECT \(Store.exportColumns) FROM messages m WHERE dirty = 1 AND (mailbox_id, uid) > (?, ?)
              AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.mailbox_id = m.mailbox_id AND o.uid = m.uid
                              AND o.kind IN ('move', 'delete'))
              AND NOT (m.file IS NULL AND EXISTS (
                  SELECT 1 FROM outbox o JOIN messages src ON src.mailbox_id = o.mailbox_id AND src.uid = o.uid
                  WHERE o.kind = 'move' AND o.target = m.mailbox_id
                    AND (TRIM(src.message_id, '<> ') = TRIM(m.message_id, '<> ')
                         OR (src.message_id IS NULL AND src.idate = m.idate AND src.size = m.size))))
              AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.kind = 'upload' AND o.state = 1 AND o.mailbox_id = m.mailbox_id
                              AND (TRIM(o.message_id, '<> ') = TRIM(m.message_id, '<> ')
                                   OR (o.message_id IS NULL AND m.uid > COALESCE(o.after_uid, 0)
                                       AND ABS(m.idate - o.date) <= 1)))
            ORDER BY mailbox_id, uid LIMIT ?
            """)
        try s.bind([.text(after?.mailboxId ?? ""), .int(after?.uid ?? Int.min), .int(limit)])
        var out: [MessageRecord] = []
        while try s.step() { out.append(messageRecord(s)) }
        return out
    }

    public func message(mailboxId: String, uid: Int) throws -> MessageRecord? {
        let s = try db.prepare("SELECT \(Store.messageColumns) FROM messages WHERE mailbox_id = ? AND uid = ?")
        try s.bind([.text(mailboxId), .int(uid)])
        return try s.step() ? messageRecord(s) : nil
    }

    /// Every message of a mailbox (or of all mailboxes), for verify and tests.
    public func messages(mailboxId: String? = nil) throws -> [MessageRecord] {
        let s: Statement
        if let mailboxId {
            s = try db.prepare("SELECT \(Store.messageColumns) FROM messages WHERE mailbox_id = ? ORDER BY uid")
            try s.bind([.text(mailboxId)])
        } else {
            s = try db.prepare("SELECT \(Store.messageColumns) FROM messages ORDER BY mailbox_id, uid")
        }
        var out: [MessageRecord] = []
        while try s.step() { out.append(messageRecord(s)) }
        return out
    }

    /// Records that the row's file is in place and matches the row. `uniq` is the file's unique
    /// part when it is not the row's own (a re-used orphan); leaving the column out of the
    /// update when it does not change spares SQLite a rewrite of its unique index.
    public func markExported(mailboxId: String, uid: Int, uniq: String? = nil, file: String, sha256: String?) throws {
        if let uniq {
            try db.run("UPDATE messages SET uniq = ?, file = ?, sha256 = COALESCE(?, sha256), dirty = 0 WHERE mailbox_id = ? AND uid = ?",
                       .text(uniq), .text(file), SQLValue(sha256), .text(mailboxId), .int(uid))
        } else {
            try db.run("UPDATE messages SET file = ?, sha256 = COALESCE(?, sha256), dirty = 0 WHERE mailbox_id = ? AND uid = ?",
                       .text(file), SQLValue(sha256), .text(mailboxId), .int(uid))
        }
    }

    /// Forgets the row's file so the exporter downloads the message again.
    public func markForDownload(mailboxId: String, uid: Int) throws {
        try db.run("UPDATE messages SET file = NULL, sha256 = NULL, dirty = 1 WHERE mailbox_id = ? AND uid = ?",
                   .text(mailboxId), .int(uid))
    }
}

// MARK: - Orphans

extension Store {
    /// An orphan file holding the same message (same Message-ID and size), if any.
    public func matchOrphan(messageId: String?, size: Int) throws -> OrphanRecord? {
        guard let messageId else { return nil }
        let s = try db.prepare("SELECT file, uniq, message_id, size, sha256 FROM orphans WHERE message_id = ? AND size = ? LIMIT 1")
        try s.bind([.text(messageId), .int(size)])
        guard try s.step() else { return nil }
        return OrphanRecord(file: s.text(0) ?? "", uniq: s.text(1) ?? "", messageId: s.text(2), size: s.int(3), sha256: s.text(4))
    }

    /// Orphans older than `age` seconds (all of them for 0).
    public func orphans(olderThan age: Double = 0) throws -> [OrphanRecord] {
        let s = try db.prepare("""
            SELECT file, uniq, message_id, size, sha256 FROM orphans
            WHERE orphaned_at <= CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) - ? ORDER BY file
            """)
        try s.bind([.int(Int(age * 1000))])
        var out: [OrphanRecord] = []
        while try s.step() {
            out.append(OrphanRecord(file: s.text(0) ?? "", uniq: s.text(1) ?? "", messageId: s.text(2), size: s.int(3), sha256: s.text(4)))
        }
        return out
    }

    public func orphanCount() throws -> Int {
        let s = try db.prepare("SELECT COUNT(*) FROM orphans")
        _ = try s.step()
        return s.int(0)
    }

    /// A second copy of a message whose file is elsewhere (one an older run downloaded while a
    /// move's or upload's answer was unknown): the exporter unlinks it as it unlinks any orphan.
    /// Without a Message-ID here, it is never taken for a moved message.
    public func recordDuplicate(file: String) throws {
        let uniq = Maildir.uniquePart(ofFileName: String(file.split(separator: "/").last ?? Substring(file)))
        try db.run("INSERT OR REPLACE INTO orphans(file, uniq, message_id, size, sha256) VALUES (?, ?, NULL, 0, NULL)",
                   .text(file), .text(uniq))
    }

    public func removeOrphan(file: String) throws {
        try db.run("DELETE FROM orphans WHERE file = ?", .text(file))
    }

    /// Records that an orphan's file is now at `newFile` (taken out of readers' view).
    public func moveOrphan(file: String, to newFile: String) throws {
        try db.run("UPDATE orphans SET file = ? WHERE file = ?", .text(newFile), .text(file))
    }

    /// Records that the directory `folder` now is `newFolder`: the files of messages and orphans
    /// under it, the mailbox (and, when `nested`, the mailboxes below it, as in the verbatim
    /// layout) and a queued dead folder follow it.
    public func moveFolder(from folder: String, to newFolder: String, nested: Bool) throws {
        // substr counts characters (code points), not bytes.
        let skip = SQLValue.int(folder.unicodeScalars.count + 1)
        let below = SQLValue.text(Store.likePrefix(folder + "/"))
        for table in ["orphans", "messages"] {
            try db.run("UPDATE \(table) SET file = ? || substr(file, ?) WHERE file LIKE ? ESCAPE '\\'", .text(newFolder), skip, below)
        }
        for table in ["mailboxes", "dead_folders"] {
            try db.run("UPDATE \(table) SET folder = ? WHERE folder = ?", .text(newFolder), .text(folder))
            if nested {
                try db.run("UPDATE \(table) SET folder = ? || substr(folder, ?) WHERE folder LIKE ? ESCAPE '\\'", .text(newFolder), skip, below)
            }
        }
    }

    /// Whether a directory is one wdsync placed: a mailbox's folder or a dead folder.
    public func isKnownFolder(_ folder: String) throws -> Bool {
        let s = try db.prepare("SELECT EXISTS(SELECT 1 FROM mailboxes WHERE folder = ?1) OR EXISTS(SELECT 1 FROM dead_folders WHERE folder = ?1)")
        try s.bind([.text(folder)])
        return try s.step() && s.int(0) == 1
    }

    static func likePrefix(_ s: String) -> String {
        var out = ""
        for c in s {
            if c == "%" || c == "_" || c == "\\" { out.append("\\") }
            out.append(c)
        }
        return out + "%"
    }
}

// MARK: - Which Maildir

/// The identity and generation of the Maildir this cache last wrote (`maildir_state`).
public struct MaildirStateRecord: Sendable, Equatable {
    public var maildirId: String
    public var generation: Int
    /// Set while a new generation is being written to the marker: the marker may have either.
    public var pending: Int?
    /// An adoption (the files matched to the server's messages again) has not finished yet.
    public var adopting: Bool
    public init(maildirId: String, generation: Int, pending: Int? = nil, adopting: Bool = false) {
        self.maildirId = maildirId; self.generation = generation; self.pending = pending; self.adopting = adopting
    }
}

extension Store {
    public func maildirState() throws -> MaildirStateRecord? {
        let s = try db.prepare("SELECT maildir_id, generation, pending, adopting FROM maildir_state WHERE id = 1")
        guard try s.step() else { return nil }
        return MaildirStateRecord(maildirId: s.text(0) ?? "", generation: s.int(1), pending: s.optionalInt(2), adopting: s.int(3) == 1)
    }

    public func setMaildirState(_ state: MaildirStateRecord) throws {
        try db.run("""
            INSERT INTO maildir_state(id, maildir_id, generation, pending, adopting) VALUES (1, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET maildir_id = excluded.maildir_id, generation = excluded.generation,
                pending = excluded.pending, adopting = excluded.adopting
            """, .text(state.maildirId), .int(state.generation), SQLValue(state.pending), .int(state.adopting ? 1 : 0))
    }

    /// The start of an adoption (docs/two-way.md): the cache forgets which file is whose and
    /// what the Maildir looked like, and local changes recorded but not sent yet are dropped (they
    /// were read from a Maildir that is not trusted); requests already sent stay, for the push
    /// to settle. Every mailbox is listed again. A message whose flag change was dropped takes
    /// the server's S, F and T again: a file the exporter writes for it afresh (the root was
    /// emptied) must not carry a change that will never be sent.
    public func forgetLocalState() throws {
        try transaction {
            try db.run("DELETE FROM outbox WHERE state = 0")
            let pushable = MessageFlags.pushable.rawValue
            try db.run("""
                UPDATE messages SET flags = (flags & ~?) | (base_flags & ?), dirty = 1
                WHERE (flags & ?) != (base_flags & ?)
                  AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.mailbox_id = messages.mailbox_id AND o.uid = messages.uid)
                """, .int(pushable), .int(pushable), .int(pushable), .int(pushable))
            try db.run("UPDATE mailboxes SET synced_index = NULL, scanned_cur = NULL, scanned_new = NULL")
        }
    }

    /// Before the files are matched again: no row has a file, and no orphan either.
    public func forgetFiles() throws {
        try transaction {
            try db.run("UPDATE messages SET file = NULL, sha256 = NULL, dirty = 1 WHERE file IS NOT NULL OR dirty = 0")
            try db.run("DELETE FROM orphans")
        }
    }

    /// An adopted file: the row's file is `file` (unique part `uniq`), with `flags` (the
    /// exporter still renames it to them and into the row's folder, so the row stays dirty).
    public func adoptFile(mailboxId: String, uid: Int, uniq: String, file: String, sha256: String?, flags: MessageFlags) throws {
        try db.run("UPDATE messages SET uniq = ?, file = ?, sha256 = ?, flags = ?, dirty = 1 WHERE mailbox_id = ? AND uid = ?",
                   .text(uniq), .text(file), SQLValue(sha256), .int(flags.rawValue), .text(mailboxId), .int(uid))
    }
}
