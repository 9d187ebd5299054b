import Maildir
import Store

/// The mtimes (ns) of a folder's `cur/` and `new/`.
struct FolderTimes: Sendable, Equatable {
    var cur: Int
    var new: Int
}

/// A mailbox whose folder is recorded as scanned, with the mtimes it had.
struct ScannedFolder: Sendable, Equatable {
    var mailboxId: String
    var times: FolderTimes
}

/// What the scan read of the Maildir (`LocalScan.snapshot`): the disk's side of the diff.
struct ScanSnapshot: Sendable {
    /// A folder that was read: its mailbox, its mtimes and its message files.
    struct Folder: Sendable, Equatable {
        var mailbox: MailboxRecord
        var folder: String
        var times: FolderTimes
        var files: [LocalFile]
    }
    /// The folders read, in the order of the mailboxes.
    var read: [Folder] = []
    /// Folders without `cur/` or `new/`: never read as deletions (`LocalScan.restore`).
    var missing: [(mailbox: MailboxRecord, folder: String)] = []
    /// Folders the watch saw nothing but wdsync's own writes in: recorded as scanned unread.
    var unread: [ScannedFolder] = []
    /// When the scan started (ns): an mtime closer to it than `LocalScan.settleNanoseconds` is
    /// not recorded.
    var started = 0
}

/// What the diff may look up beyond its snapshot and rows, all of it read-only: the rest of the
/// cache (a message outside the folders read, orphans, messages by Message-ID) and the new
/// files themselves, read only when a decision needs them (a scan finds few new files).
/// `LocalScan.Lookup` asks the store and the Maildir; tests give values.
protocol ScanLookup {
    /// The stored message with this unique part, wherever its file is.
    func row(uniq: String) throws -> FileRow?
    func isOrphan(uniq: String) throws -> Bool
    /// The messages outside `mailboxId` that have a file and this (normalized) Message-ID.
    func rows(messageId: String, notIn mailboxId: String) throws -> [FileRow]
    /// A file's size and whether it is a regular file; nil when it is not there.
    func info(_ file: String) -> (size: Int, regular: Bool)?
    /// A file's SHA-256 (hex); nil when it cannot be read.
    func sha256(_ file: String) -> String?
    /// A file's bytes (at most `LocalScan.uploadLimit`).
    func content(_ file: String) throws -> LocalContent
    /// Now, in Unix seconds.
    func now() -> Double
}

/// What one scan found, to be queued in one transaction (`LocalScan.apply`).
struct ScanChanges: Sendable, Equatable {
    /// A message whose file the scan found under another name or in another folder: the row
    /// records `file` with `flags` (and `sha256`, when the bytes changed); then a move to
    /// `moveTo` is queued, or (nil) a flag push when S, F or T differ from `base`, the row's
    /// pending entry being dropped otherwise.
    struct Relink: Sendable, Equatable {
        var mailboxId: String
        var uid: Int
        var file: LocalFile
        var flags: MessageFlags
        var base: MessageFlags
        var sha256: String? = nil
        var moveTo: String? = nil
    }
    enum Message: Sendable, Equatable {
        case relinked(Relink)
        /// The file came back under the name it had while its delete was pending: the delete
        /// goes (a flag push is queued if its flags differ from the server's).
        case undeleted(mailboxId: String, uid: Int, flags: MessageFlags, base: MessageFlags)
        case deleted(mailboxId: String, uid: Int)
    }
    /// A queued upload whose file was renamed or moved to another folder before it was sent.
    struct UploadMove: Sendable, Equatable {
        var id: Int
        var mailboxId: String
        var file: String
        var flags: MessageFlags
        var afterUid: Int?
    }
    struct Note: Sendable, Equatable {
        var level: LogLevel
        var text: String
    }

    /// In the order decided (the order matters when one message is decided twice).
    var messages: [Message] = []
    var uploads: [OutboxEntry] = []
    var uploadMoves: [UploadMove] = []
    /// Queued uploads not sent yet whose file was removed before they went out.
    var droppedUploads: [Int] = []
    var scanned: [ScannedFolder] = []
    var notes: [Note] = []
    var result = LocalScan.Result()
}

/// The scan's decisions: a snapshot of the folders against the cache's rows for them, without
/// writing anything (the rules are in `LocalScan`'s comment and docs/two-way.md, "What the
/// scan sees"). Each step reads what the earlier ones decided — a message relinked by one is
/// not found where it was by the next — as the scan did when it wrote as it went.
struct ScanDiff {
    /// The folders read.
    let snapshot: ScanSnapshot
    /// A read folder's mailbox → its messages that have a file, and those whose pending move
    /// takes them into it. Asked for one folder at a time, and not kept: a scan of many large
    /// folders holds the rows of one, plus those left unmatched.
    let rows: (String) throws -> [FileRow]
    /// Every pending mutation, oldest first.
    let outbox: [OutboxEntry]
    /// Mailbox id → its highest uid (an upload's `afterUid`).
    let highestUid: [String: Int]

    struct Candidate: Sendable, Equatable {
        var file: LocalFile
        var mailboxId: String
    }
    private struct Key: Hashable {
        var mailboxId: String
        var uid: Int
    }

    private var changes = ScanChanges()
    private var unsettled = Set<String>()          // mailboxes whose scan must be repeated
    private var vanished: [String: FileRow] = [:]  // unique → row whose file is gone from its folder
    private var present = Set<String>()            // unique parts of pending uploads found in the folders read
    private let uploadUniques: Set<String>
    private var prefixes: [String] = []            // the folders read, as path prefixes
    private var relinked: [Key: FileRow] = [:]     // rows this diff gave another file, as they are now
    private var relinkedUniq: [String: Key] = [:]
    private var uploadOf: [String: OutboxEntry]    // uniq → pending entry (moves too), as decided
    private let pendingOf: [Key: OutboxEntry]      // a message's pending entry

    init(snapshot: ScanSnapshot, rows: [String: [FileRow]], outbox: [OutboxEntry], highestUid: [String: Int]) {
        self.init(snapshot: snapshot, rows: { rows[$0] ?? [] }, outbox: outbox, highestUid: highestUid)
    }

    init(snapshot: ScanSnapshot, rows: @escaping (String) throws -> [FileRow], outbox: [OutboxEntry],
         highestUid: [String: Int]) {
        self.snapshot = snapshot
        self.rows = rows
        uploadUniques = Set(outbox.compactMap { $0.kind == .upload ? $0.uniq : nil })
        self.outbox = outbox
        self.highestUid = highestUid
        pendingOf = Dictionary(outbox.compactMap { e in e.uid.map { (Key(mailboxId: e.mailboxId, uid: $0), e) } },
                               uniquingKeysWith: { a, _ in a })
        uploadOf = Dictionary(outbox.compactMap { e in e.uniq.map { ($0, e) } }, uniquingKeysWith: { a, _ in a })
    }

    /// Everything the scan decides, in the order it decides it.
    func changes(_ lookup: some ScanLookup) throws -> ScanChanges {
        var diff = self
        var fresh = try diff.matchFolders().compactMap { try diff.matchElsewhere($0, lookup) }
        diff.dropVanishedUploads()
        fresh = diff.matchCarriedKeys(fresh)
        fresh = diff.matchBytes(fresh, lookup)
        fresh = diff.matchMessageIds(fresh, lookup)
        for row in diff.vanished.values {
            diff.changes.messages.append(.deleted(mailboxId: row.mailboxId, uid: row.uid))
            diff.changes.result.deletes += 1
        }
        for candidate in fresh { try diff.upload(candidate, lookup) }
        diff.settle()
        return diff.changes
    }

    /// Each folder's files against its rows: renames in place, rows whose file is gone
    /// (`vanished`), and the files no row of the folder knows (returned).
    private mutating func matchFolders() throws -> [Candidate] {
        var unknown: [Candidate] = []
        for folder in snapshot.read {
            let mailboxId = folder.mailbox.id
            changes.result.scanned += 1
            var byUnique = Dictionary(folder.files.map { ($0.unique, $0) }, uniquingKeysWith: { a, _ in a })
            for f in folder.files where uploadUniques.contains(f.unique) { present.insert(f.unique) }
            let prefix = folder.folder.isEmpty ? "" : folder.folder + "/"
            prefixes.append(prefix)
            for row in try rows(mailboxId) {
                guard let file = row.file, file.hasPrefix(prefix + "cur/") || file.hasPrefix(prefix + "new/") else { continue }
                let pending = pendingOf[Key(mailboxId: row.mailboxId, uid: row.uid)]
                if pending?.sent == true {
                    // Its request's answer is unknown: the push settles it first.
                    byUnique[row.uniq] = nil
                    unsettled.insert(mailboxId)
                    continue
                }
                if let local = byUnique.removeValue(forKey: row.uniq) {
                    if local.file != file {
                        // Renamed in its folder (or, on its way there, in the folder it moves to).
                        relink(row, to: local, moveTo: pending?.kind == .move ? mailboxId : nil)
                        changes.result.flagChanges += 1
                    } else if pending?.kind == .delete {
                        // The file came back under the same name: nothing to delete.
                        changes.messages.append(.undeleted(mailboxId: row.mailboxId, uid: row.uid,
                                                           flags: row.flags, base: row.baseFlags))
                    }
                } else {
                    vanished[row.uniq] = row
                }
            }
            for local in byUnique.values { unknown.append(Candidate(file: local, mailboxId: mailboxId)) }
        }
        return unknown
    }

    /// A file no row of its folder knows: the file of a message gone from another folder read
    /// (a move), or of one outside them, an orphan's, a queued upload's; nil when it is one of
    /// those, the candidate when it is none (still maybe a move: see the next steps).
    private mutating func matchElsewhere(_ candidate: Candidate, _ lookup: some ScanLookup) throws -> Candidate? {
        let unique = candidate.file.unique
        if let row = vanished.removeValue(forKey: unique) {
            relocate(row, to: candidate)
        } else if let row = try currentRow(uniq: unique, lookup) {
            guard let file = row.file else { return nil }   // written by an interrupted export; it adopts it
            if lookup.info(file) != nil {
                changes.notes.append(.init(level: .warning, text: "\(candidate.file.file) has the same Maildir name as \(file); not uploaded (a copy must have a name of its own)"))
            } else if pendingOf[Key(mailboxId: row.mailboxId, uid: row.uid)]?.sent != true {
                relocate(row, to: candidate)
            }
        } else if try lookup.isOrphan(uniq: unique) {
            return nil
        } else if var upload = uploadOf[unique], upload.kind == .upload {
            if upload.sent {
                unsettled.insert(candidate.mailboxId)
            } else if upload.file != candidate.file.file || upload.mailboxId != candidate.mailboxId {
                let move = ScanChanges.UploadMove(id: upload.id, mailboxId: candidate.mailboxId, file: candidate.file.file,
                                                  flags: candidate.file.flags, afterUid: highestUid[candidate.mailboxId])
                changes.uploadMoves.append(move)
                upload.mailboxId = move.mailboxId
                upload.file = move.file
                upload.flags = move.flags
                upload.afterUid = move.afterUid
                uploadOf[unique] = upload
            }
        } else {
            return candidate
        }
        return nil
    }

    /// The row with this unique part as this diff left it (the cache's, unless relinked here).
    private func currentRow(uniq: String, _ lookup: some ScanLookup) throws -> FileRow? {
        if let key = relinkedUniq[uniq] { return relinked[key] }
        guard let row = try lookup.row(uniq: uniq) else { return nil }
        // Relinked here to a file with another unique part: no longer this one's.
        return relinked[Key(mailboxId: row.mailboxId, uid: row.uid)] == nil ? row : nil
    }

    /// Uploads not sent yet whose file was removed before they went out.
    private mutating func dropVanishedUploads() {
        for entry in outbox where entry.kind == .upload && !entry.sent {
            guard let unique = entry.uniq, let file = uploadOf[unique]?.file ?? entry.file,
                  prefixes.contains(where: { LocalScan.isFile(file, in: $0) }), !present.contains(unique) else { continue }
            changes.droppedUploads.append(entry.id)
        }
    }

    /// A file with wdsync's own name is never uploaded: it is the message whose mailbox and
    /// uid it carries when that one's file vanished (renamed by hand, another host part),
    /// and otherwise a copy of mail that is on the server or was there (a file restored
    /// from a backup, a copy from another Maildir), which is left alone.
    private mutating func matchCarriedKeys(_ fresh: [Candidate]) -> [Candidate] {
        let vanishedByKey = Dictionary(vanished.values.map { (Key(mailboxId: $0.mailboxId, uid: $0.uid), $0.uniq) },
                                       uniquingKeysWith: { a, _ in a })
        var rest: [Candidate] = []
        for candidate in fresh {
            guard let key = AccountSync.carriedKey(candidate.file.unique) else {
                rest.append(candidate)
                continue
            }
            if let uniq = vanishedByKey[Key(mailboxId: key.mailboxId, uid: key.uid)], let row = vanished[uniq] {
                vanished[row.uniq] = nil
                relocate(row, to: candidate)
            } else {
                changes.notes.append(.init(level: .warning, text: "\(candidate.file.file) has the name of a file wdsync writes but is not the file of the message it names (restored from a backup?); not uploaded (a copy under a name of your own is)"))
            }
        }
        return rest
    }

    /// mutt's save: a copy under a new name, then an unlink of the original.
    private mutating func matchBytes(_ fresh: [Candidate], _ lookup: some ScanLookup) -> [Candidate] {
        guard !vanished.isEmpty && !fresh.isEmpty else { return fresh }
        var bySha: [String: [FileRow]] = [:]
        for row in vanished.values { if let sha = row.sha256 { bySha[sha, default: []].append(row) } }
        var rest: [Candidate] = []
        for candidate in fresh {
            guard !bySha.isEmpty, let info = lookup.info(candidate.file.file), info.regular,
                  let hash = lookup.sha256(candidate.file.file),
                  var rows = bySha[hash], let row = rows.popLast() else {
                rest.append(candidate)
                continue
            }
            bySha[hash] = rows.isEmpty ? nil : rows
            vanished[row.uniq] = nil
            relocate(row, to: candidate)
        }
        return rest
    }

    /// A save that rewrote the bytes (mutt writes LF line endings and its own status
    /// headers): a new file in another folder with the Message-ID of a message that
    /// vanished in this scan, and about its size, is that message moved.
    private mutating func matchMessageIds(_ fresh: [Candidate], _ lookup: some ScanLookup) -> [Candidate] {
        guard !vanished.isEmpty && !fresh.isEmpty else { return fresh }
        var byId: [String: [FileRow]] = [:]
        for row in vanished.values {
            if let id = MessageHeaders.normalized(row.messageId) { byId[id, default: []].append(row) }
        }
        var rest: [Candidate] = []
        for candidate in fresh {
            guard !byId.isEmpty, let info = lookup.info(candidate.file.file), info.regular, info.size <= LocalScan.uploadLimit,
                  let content = try? lookup.content(candidate.file.file),
                  let id = MessageHeaders.normalized(MessageHeaders(content.bytes).messageId),
                  let index = byId[id]?.firstIndex(where: { row in
                      row.mailboxId != candidate.mailboxId && vanished[row.uniq] != nil
                          && Double(info.size) >= 0.8 * Double(row.size) - 1024
                          && Double(info.size) <= 1.05 * Double(row.size) + 1024
                  }), let row = byId[id]?[index] else {
                rest.append(candidate)
                continue
            }
            byId[id]?.remove(at: index)
            vanished[row.uniq] = nil
            relocate(row, to: candidate, sha256: content.sha256)
        }
        return rest
    }

    /// The flags a row gets from its file's new name: the flags changed on disk (against the
    /// name the file had) over the row's flags, which may hold a server change not yet exported.
    static func localFlags(_ row: FileRow, _ local: LocalFile) -> MessageFlags {
        let before = MessageFlags(fileName: row.file ?? "")
        return row.flags.taking(before.symmetricDifference(local.flags), from: local.flags)
    }

    /// The message's file is now `local`; later steps see the row as it is now.
    private mutating func relink(_ row: FileRow, to local: LocalFile, moveTo: String?, sha256: String? = nil) {
        let flags = Self.localFlags(row, local)
        changes.messages.append(.relinked(.init(mailboxId: row.mailboxId, uid: row.uid, file: local, flags: flags,
                                                base: row.baseFlags, sha256: sha256, moveTo: moveTo)))
        let key = Key(mailboxId: row.mailboxId, uid: row.uid)
        if let before = relinked[key] { relinkedUniq[before.uniq] = nil }
        var now = row
        now.file = local.file
        now.uniq = local.unique
        now.flags = flags
        if let sha256 { now.sha256 = sha256 }
        relinked[key] = now
        relinkedUniq[local.unique] = key
    }

    /// The message's file is now `candidate` (in another folder, or a copy with the same bytes).
    private mutating func relocate(_ row: FileRow, to candidate: Candidate, sha256: String? = nil) {
        // Back in its own folder: no move after all.
        relink(row, to: candidate.file, moveTo: candidate.mailboxId == row.mailboxId ? nil : candidate.mailboxId,
               sha256: sha256)
        changes.result.moves += 1
    }
}

extension ScanDiff {
    /// Decides about a new file that matches nothing: an upload to its folder's mailbox — unless
    /// it is too large, empty, unreadable or still being written (see `LocalScan.quietSeconds`),
    /// or held back (see `LocalScan.saveGrace`) while another folder's message with the same
    /// Message-ID still has its file — or lost it in a folder this scan did not read, so the
    /// next scan, which reads both, pairs the two as a move (what vanished in a folder read now
    /// is deleted now).
    private mutating func upload(_ candidate: Candidate, _ lookup: some ScanLookup) throws {
        let file = candidate.file.file
        guard let info = lookup.info(file), info.regular else { return }
        if info.size > LocalScan.uploadLimit {
            changes.result.tooLarge.append(file)
            return
        }
        if info.size == 0 { return }    // nothing the server would take
        let content: LocalContent
        do { content = try lookup.content(file) } catch {
            changes.notes.append(.init(level: .warning, text: "cannot read \(file) for upload: \(error)"))
            return
        }
        if LocalScan.isBeingWritten(content, now: lookup.now()) {
            changes.notes.append(.init(level: .verbose, text: "\(file) is still being written; it is uploaded once it has not changed for \(LocalScan.quietSeconds) s"))
            unsettled.insert(candidate.mailboxId)
            changes.result.unstable += 1
            return
        }
        let headers = MessageHeaders(content.bytes)
        if let id = MessageHeaders.normalized(headers.messageId), Int(lookup.now()) - content.ctime < LocalScan.saveGrace,
           let original = try lookup.rows(messageId: id, notIn: candidate.mailboxId).compactMap({ row in
               (relinked[Key(mailboxId: row.mailboxId, uid: row.uid)] ?? row).file
           }).first(where: { file in
               lookup.info(file) != nil || !prefixes.contains { LocalScan.isFile(file, in: $0) }
           }) {
            changes.notes.append(.init(level: .verbose, text: "\(file) is a copy of \(original), which is still there; not uploaded yet (a save becomes a move once the original goes)"))
            unsettled.insert(candidate.mailboxId)
            return
        }
        changes.uploads.append(OutboxEntry(
            kind: .upload, mailboxId: candidate.mailboxId, file: file, uniq: candidate.file.unique,
            sha256: content.sha256, size: content.bytes.count, messageId: headers.messageId, subject: headers.subject,
            date: content.mtime, flags: candidate.file.flags, afterUid: highestUid[candidate.mailboxId]))
        changes.result.uploads += 1
    }

    /// Which folders are recorded as scanned: not one with a message whose scan must be
    /// repeated (it is read again), nor one whose mtime is too recent to tell a later change by.
    private mutating func settle() {
        for folder in snapshot.read {
            if unsettled.contains(folder.mailbox.id) {
                changes.result.readAgain.insert(folder.folder)
                continue
            }
            let settled = snapshot.started - LocalScan.settleNanoseconds
            if folder.times.cur > settled || folder.times.new > settled { continue }
            changes.scanned.append(ScannedFolder(mailboxId: folder.mailbox.id, times: folder.times))
        }
        changes.scanned += snapshot.unread
    }
}
