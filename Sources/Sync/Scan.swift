#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Maildir
import Store

/// scan: Maildir → outbox. Turns what the user's mail programs did to the files into pending
/// mutations in the store, before anything is sent (the push sends them):
///
/// - a file renamed with other flags (or moved between `new/` and `cur/`): its flags, merged
///   over the row's (a flag changed on disk wins; see `MessageFlags.merge`);
/// - a file renamed into another folder (same unique part): a move;
/// - a new file with the bytes (SHA-256) of a file that vanished elsewhere in the same scan
///   (mutt's save = copy + unlink): a move, not an upload and a delete — and so is a new file
///   in another folder with the vanished message's Message-ID and about its size, because
///   mutt and neomutt rewrite line endings and status headers when they save;
/// - a file unlinked: a delete;
/// - a new file that matches nothing: an upload to that folder's mailbox.
///
/// A folder whose `cur/` and `new/` have the mtimes recorded at its last scan is not read. A
/// folder without `cur/` or `new/` is never read as deletions: its messages are downloaded
/// again. Files in `tmp/` and dot files are never looked at; files over the server's upload
/// limit are reported and left alone.
struct LocalScan {
    let store: Store
    let maildir: Maildir
    let log: SyncLog

    /// WildDuck refuses messages over 64 MiB (`MAX_ALLOWED_MESSAGE_SIZE`).
    static let uploadLimit = 64 * 1024 * 1024
    /// A directory mtime this close to the scan's start is not recorded: a change in the same
    /// timestamp tick would leave it unchanged, so such a folder is read again next time.
    static let settleNanoseconds = 1_000_000_000
    /// How long a new file is held back, not uploaded, while a message with its Message-ID still
    /// has a file in another folder (seconds since the file got its name, its ctime). mutt's and
    /// neomutt's save writes the copy at once but unlinks the original only when the folder is
    /// synced; the daemon sees the two in different scans. Held, the copy and the unlink meet
    /// in one scan and become a move. A real copy (mutt's `copy-message`) is uploaded when the
    /// time is up.
    static let saveGrace = 15 * 60
    /// A new file is uploaded only once it has stopped changing: its mtime at least this many
    /// seconds old (and unchanged while it was read). A Maildir file should be written in
    /// `tmp/` and renamed into place complete, but `cp`, `cat >` and `mv` across file systems
    /// write it in place, where a scan can find it half written; each write moves the mtime,
    /// and `mv` and `cp -p` set the original's at the end. The push checks again before sending.
    static let quietSeconds = 2

    /// Whether a file's mtime says someone may still be writing it (an mtime further in the
    /// future is a message's date, as mutt sets it, not a write).
    static func isBeingWritten(_ content: LocalContent, now: Double = Date().timeIntervalSince1970) -> Bool {
        let age = now - Double(content.mtimeNanoseconds) / 1e9
        return !content.unchangedWhileRead || abs(age) < Double(quietSeconds)
    }

    struct Result: Sendable, Equatable {
        var scanned = 0
        var flagChanges = 0
        var moves = 0
        var deletes = 0
        var uploads = 0
        var tooLarge: [String] = []
        /// New files not queued because they are still being written (see `quietSeconds`).
        var unstable = 0
        /// Folders to read again next time: a new file was held back (see `saveGrace`), or a
        /// request about one of its messages is still unanswered.
        var readAgain: Set<String> = []
    }

    private struct Candidate {
        var file: LocalFile
        var mailboxId: String
    }

    /// Which folders the daemon's inotify watch (`LocalWatch`) says to read: `changed` ones
    /// whatever their mtimes, none of the `unchanged` ones (watched, and nothing but wdsync's own
    /// writes happened there), the rest by their mtimes.
    struct Scope: Sendable, Equatable {
        var changed: Set<String> = []
        var unchanged: Set<String> = []
    }

    /// How far apart two directory mtimes must be for a change to move them, on a file system
    /// with sub-second timestamps (the kernel's coarse clock ticks every 1–10 ms).
    static let tickNanoseconds = 20_000_000

    /// Scans the folders that changed (every folder with `force`; see `Scope`).
    ///
    /// `quietSince` (ns, taken before the watch was drained): the folders in `scope.unchanged`
    /// had no change but wdsync's own until then, so their current mtimes are recorded without
    /// reading them — when those are at least a tick older than `quietSince`, so that a later
    /// change must move them, and have nanoseconds (a file system with whole-second
    /// timestamps is left to the settle rule).
    func run(force: Bool = false, scope: Scope? = nil, quietSince: Int? = nil) throws -> Result {
        var result = Result()
        let started = Int(Date().timeIntervalSince1970 * 1e9)
        try store.transaction {
            var scanned: [(MailboxRecord, (cur: Int, new: Int))] = []
            var unsettled = Set<String>()        // mailboxes whose scan must be repeated
            var vanished: [String: FileRow] = [:] // unique → row whose file is gone from its folder
            var unknown: [Candidate] = []
            var present = Set<String>()           // unique parts in the scanned folders
            var scannedPrefixes: [String] = []
            var pendingOf: [String: OutboxEntry]?   // "mailbox uid" → pending mutation, read once
            var verified: [(MailboxRecord, (cur: Int, new: Int))] = []

            for mailbox in try store.mailboxes() {
                guard let folder = mailbox.folder else { continue }
                if let scope, scope.unchanged.contains(folder) {
                    if let quietSince, let times = maildir.folderTimes(folder), times.cur != mailbox.scannedCur || times.new != mailbox.scannedNew,
                       [times.cur, times.new].allSatisfy({ $0 < quietSince - Self.tickNanoseconds && $0 % 1_000_000_000 != 0 }) {
                        verified.append((mailbox, times))
                    }
                    continue
                }
                guard let times = maildir.folderTimes(folder) else {
                    try restore(mailbox, folder: folder)
                    continue
                }
                let forced = force || scope?.changed.contains(folder) == true
                if !forced && times.cur == mailbox.scannedCur && times.new == mailbox.scannedNew { continue }
                guard let files = try maildir.listFolder(folder) else { continue }
                result.scanned += 1
                var byUnique = Dictionary(files.map { ($0.unique, $0) }, uniquingKeysWith: { a, _ in a })
                for f in files { present.insert(f.unique) }
                let prefix = folder.isEmpty ? "" : folder + "/"
                scannedPrefixes.append(prefix)
                let rows = try store.fileRows(mailboxId: mailbox.id) + store.fileRows(movingTo: mailbox.id)
                if pendingOf == nil {
                    // Only a row's own step below changes its entry, so one read serves the loop.
                    pendingOf = Dictionary(try store.outbox().compactMap { e in e.uid.map { ("\(e.mailboxId) \($0)", e) } },
                                           uniquingKeysWith: { a, _ in a })
                }
                for row in rows {
                    guard let file = row.file, file.hasPrefix(prefix + "cur/") || file.hasPrefix(prefix + "new/") else { continue }
                    let pending = pendingOf?["\(row.mailboxId) \(row.uid)"]
                    if pending?.sent == true {
                        // Its request's answer is unknown: the push settles it first.
                        byUnique[row.uniq] = nil
                        unsettled.insert(mailbox.id)
                        continue
                    }
                    if let local = byUnique.removeValue(forKey: row.uniq) {
                        if local.file != file {
                            try changed(row, to: local, in: mailbox.id, pending: pending)
                            result.flagChanges += 1
                        } else if pending?.kind == .delete {
                            // The file came back under the same name: nothing to delete.
                            try requeueFlags(row.mailboxId, row.uid, flags: row.flags, base: row.baseFlags, pending: pending)
                        }
                    } else {
                        vanished[row.uniq] = row
                    }
                }
                for local in byUnique.values { unknown.append(Candidate(file: local, mailboxId: mailbox.id)) }
                scanned.append((mailbox, times))
            }

            // Files no row of their folder knows.
            var fresh: [Candidate] = []
            for candidate in unknown {
                let unique = candidate.file.unique
                if let row = vanished.removeValue(forKey: unique) {
                    try relocate(row, to: candidate)
                    result.moves += 1
                } else if let row = try store.fileRow(uniq: unique) {
                    guard let file = row.file else { continue }   // written by an interrupted export; it adopts it
                    if maildir.fileSize(file) != nil {
                        log.log(.warning, "\(candidate.file.file) has the same Maildir name as \(file); not uploaded (a copy must have a name of its own)")
                    } else if try store.outboxEntry(mailboxId: row.mailboxId, uid: row.uid)?.sent != true {
                        try relocate(row, to: candidate)
                        result.moves += 1
                    }
                } else if try store.isOrphan(uniq: unique) {
                    continue
                } else if let upload = try store.outboxEntry(uniq: unique), upload.kind == .upload {
                    if upload.sent {
                        unsettled.insert(candidate.mailboxId)
                    } else if upload.file != candidate.file.file || upload.mailboxId != candidate.mailboxId {
                        try store.updateUpload(id: upload.id, mailboxId: candidate.mailboxId, file: candidate.file.file,
                                               flags: candidate.file.flags,
                                               afterUid: try highestUid(candidate.mailboxId))
                    }
                } else {
                    fresh.append(candidate)
                }
            }

            // Uploads not sent yet whose file was removed before they went out.
            for entry in try store.outbox() where entry.kind == .upload && !entry.sent {
                guard let file = entry.file, let unique = entry.uniq,
                      scannedPrefixes.contains(where: { Self.isFile(file, in: $0) }), !present.contains(unique) else { continue }
                try store.removeOutbox(id: entry.id)
            }

            // A file with wdsync's own name is never uploaded: it is the message whose mailbox and
            // uid it carries when that one's file vanished (renamed by hand, another host part),
            // and otherwise a copy of mail that is on the server or was there (a file restored
            // from a backup, a copy from another Maildir), which is left alone.
            if !fresh.isEmpty {
                var rest: [Candidate] = []
                for candidate in fresh {
                    guard let key = Mirror.carriedKey(candidate.file.unique) else {
                        rest.append(candidate)
                        continue
                    }
                    if let row = try store.fileRow(mailboxId: key.mailboxId, uid: key.uid), vanished[row.uniq] != nil {
                        vanished[row.uniq] = nil
                        try relocate(row, to: candidate)
                        result.moves += 1
                    } else {
                        log.log(.warning, "\(candidate.file.file) has the name of a file wdsync writes but is not the file of the message it names (restored from a backup?); not uploaded (a copy under a name of your own is)")
                    }
                }
                fresh = rest
            }

            // mutt's save: a copy under a new name, then an unlink of the original.
            if !vanished.isEmpty && !fresh.isEmpty {
                var bySha: [String: [FileRow]] = [:]
                for row in vanished.values { if let sha = row.sha256 { bySha[sha, default: []].append(row) } }
                var rest: [Candidate] = []
                for candidate in fresh {
                    guard !bySha.isEmpty, let info = maildir.fileSize(candidate.file.file), info.regular,
                          let hash = try? Maildir.sha256(file: maildir.absolutePath(candidate.file.file)),
                          var rows = bySha[hash.hex], let row = rows.popLast() else {
                        rest.append(candidate)
                        continue
                    }
                    bySha[hash.hex] = rows.isEmpty ? nil : rows
                    vanished[row.uniq] = nil
                    try relocate(row, to: candidate)
                    result.moves += 1
                }
                fresh = rest
            }

            // A save that rewrote the bytes (mutt writes LF line endings and its own status
            // headers): a new file in another folder with the Message-ID of a message that
            // vanished in this scan, and about its size, is that message moved.
            if !vanished.isEmpty && !fresh.isEmpty {
                var byId: [String: [FileRow]] = [:]
                for row in vanished.values {
                    if let id = MessageHeaders.normalized(row.messageId) { byId[id, default: []].append(row) }
                }
                var rest: [Candidate] = []
                for candidate in fresh {
                    guard !byId.isEmpty, let info = maildir.fileSize(candidate.file.file), info.regular, info.size <= Self.uploadLimit,
                          let content = try? maildir.readFile(candidate.file.file, limit: Self.uploadLimit),
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
                    try relocate(row, to: candidate, sha256: content.sha256)
                    result.moves += 1
                }
                fresh = rest
            }

            for row in vanished.values {
                try store.queue(.delete, mailboxId: row.mailboxId, uid: row.uid)
                result.deletes += 1
            }

            for candidate in fresh {
                switch try queueUpload(candidate, scannedPrefixes: scannedPrefixes) {
                case .queued: result.uploads += 1
                case .tooLarge: result.tooLarge.append(candidate.file.file)
                case .held:
                    unsettled.insert(candidate.mailboxId)
                case .unstable:
                    unsettled.insert(candidate.mailboxId)
                    result.unstable += 1
                case .skipped: break
                }
            }

            for (mailbox, times) in scanned {
                if unsettled.contains(mailbox.id) {
                    if let folder = mailbox.folder { result.readAgain.insert(folder) }
                    continue
                }
                if times.cur > started - Self.settleNanoseconds || times.new > started - Self.settleNanoseconds { continue }
                try store.setScanned(mailboxId: mailbox.id, cur: times.cur, new: times.new)
            }
            for (mailbox, times) in verified { try store.setScanned(mailboxId: mailbox.id, cur: times.cur, new: times.new) }
        }
        for file in result.tooLarge {
            log.log(.warning, "\(file) is larger than the server accepts (\(Self.uploadLimit / 1024 / 1024) MiB); not uploaded")
        }
        return result
    }

    static func isFile(_ file: String, in prefix: String) -> Bool {
        guard file.hasPrefix(prefix) else { return false }
        let rest = file.dropFirst(prefix.count)
        return (rest.hasPrefix("cur/") || rest.hasPrefix("new/")) && !rest.dropFirst(4).contains("/")
    }

    /// The flags a row gets from its file's new name: the flags changed on disk (against the
    /// name the file had) over the row's flags, which may hold a server change not yet exported.
    private func localFlags(_ row: FileRow, _ local: LocalFile) -> MessageFlags {
        let before = MessageFlags(fileName: row.file ?? "")
        return row.flags.taking(before.symmetricDifference(local.flags), from: local.flags)
    }

    /// The file was renamed in its folder.
    private func changed(_ row: FileRow, to local: LocalFile, in mailboxId: String, pending: OutboxEntry?) throws {
        let flags = localFlags(row, local)
        try store.setLocalFile(mailboxId: row.mailboxId, uid: row.uid, file: local.file, uniq: local.unique, flags: flags)
        if pending?.kind == .move {
            try store.queue(.move, mailboxId: row.mailboxId, uid: row.uid, target: mailboxId, file: local.file, uniq: local.unique)
        } else {
            try requeueFlags(row.mailboxId, row.uid, flags: flags, base: row.baseFlags, pending: pending)
        }
    }

    /// The message's file is now `candidate` (in another folder, or a copy with the same bytes).
    private func relocate(_ row: FileRow, to candidate: Candidate, sha256: String? = nil) throws {
        let flags = localFlags(row, candidate.file)
        try store.setLocalFile(mailboxId: row.mailboxId, uid: row.uid, file: candidate.file.file,
                               uniq: candidate.file.unique, flags: flags, sha256: sha256)
        if candidate.mailboxId == row.mailboxId {
            // Back in its own folder: no move after all.
            try requeueFlags(row.mailboxId, row.uid, flags: flags, base: row.baseFlags,
                             pending: try store.outboxEntry(mailboxId: row.mailboxId, uid: row.uid))
        } else {
            try store.queue(.move, mailboxId: row.mailboxId, uid: row.uid, target: candidate.mailboxId,
                            file: candidate.file.file, uniq: candidate.file.unique)
        }
    }

    /// Queues a flag push when S, F or T differ from the server's, and drops the pending entry otherwise.
    private func requeueFlags(_ mailboxId: String, _ uid: Int, flags: MessageFlags, base: MessageFlags,
                              pending: OutboxEntry?) throws {
        if !flags.pushableChanges(from: base).isEmpty {
            try store.queue(.flags, mailboxId: mailboxId, uid: uid)
        } else if let pending {
            try store.removeOutbox(id: pending.id)
        }
    }

    /// A folder without cur/ or new/: its messages are downloaded again, nothing is deleted.
    private func restore(_ mailbox: MailboxRecord, folder: String) throws {
        guard try store.markMailboxForDownload(mailboxId: mailbox.id) > 0 else { return }
        log.log(.warning, "the folder \(folder.isEmpty ? maildir.root : folder) has no cur/ or new/; nothing is deleted on the server and its messages are downloaded again")
    }

    private func highestUid(_ mailboxId: String) throws -> Int? {
        try store.mailboxes().first { $0.id == mailboxId }?.highestUid
    }

    private enum UploadDecision { case queued, tooLarge, held, unstable, skipped }

    /// Records the intent to upload a new file: what it is and how to find it on the server again.
    /// Held back (see `saveGrace`) while another folder's message with the same Message-ID still
    /// has its file — or lost it in a folder this scan did not read, so the next scan, which
    /// reads both, pairs the two as a move (what vanished in a folder read now is deleted now).
    private func queueUpload(_ candidate: Candidate, scannedPrefixes: [String]) throws -> UploadDecision {
        let file = candidate.file.file
        guard let info = maildir.fileSize(file), info.regular else { return .skipped }
        if info.size > Self.uploadLimit { return .tooLarge }
        if info.size == 0 { return .skipped }    // nothing the server would take
        let content: LocalContent
        do { content = try maildir.readFile(file, limit: Self.uploadLimit) } catch {
            log.log(.warning, "cannot read \(file) for upload: \(error)")
            return .skipped
        }
        if Self.isBeingWritten(content) {
            log.log(.verbose, "\(file) is still being written; it is uploaded once it has not changed for \(Self.quietSeconds) s")
            return .unstable
        }
        let headers = MessageHeaders(content.bytes)
        if let id = MessageHeaders.normalized(headers.messageId), Int(Date().timeIntervalSince1970) - content.ctime < Self.saveGrace,
           let original = try store.files(messageId: id, notIn: candidate.mailboxId).first(where: { file in
               maildir.fileSize(file) != nil || !scannedPrefixes.contains { Self.isFile(file, in: $0) }
           }) {
            log.log(.verbose, "\(file) is a copy of \(original), which is still there; not uploaded yet (a save becomes a move once the original goes)")
            return .held
        }
        try store.queueUpload(OutboxEntry(
            kind: .upload, mailboxId: candidate.mailboxId, file: file, uniq: candidate.file.unique,
            sha256: content.sha256, size: content.bytes.count, messageId: headers.messageId, subject: headers.subject,
            date: content.mtime, flags: candidate.file.flags,
            afterUid: try highestUid(candidate.mailboxId)))
        return .queued
    }
}

/// The few header fields an upload is recognised by: Message-ID and Subject (unfolded, raw).
struct MessageHeaders {
    var messageId: String?
    var subject: String?

    init(_ bytes: [UInt8]) {
        var fields: [(String, String)] = []
        var line: [UInt8] = []
        var index = 0
        func flush() {
            guard !line.isEmpty else { return }
            let text = String(decoding: line, as: UTF8.self)
            if let colon = text.firstIndex(of: ":") {
                fields.append((text[..<colon].trimmingCharacters(in: .whitespaces).lowercased(),
                               text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            }
            line.removeAll()
        }
        while index < bytes.count {
            var end = index
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            var content = bytes[index..<end]
            if content.last == 0x0D { content = content.dropLast() }
            index = end + 1
            if content.isEmpty { break }                       // end of the header
            if content.first == 0x20 || content.first == 0x09 {
                line.append(0x20)                             // folded continuation
                line.append(contentsOf: content.drop { $0 == 0x20 || $0 == 0x09 })
            } else {
                flush()
                line.append(contentsOf: content)
            }
        }
        flush()
        // The last of each, as WildDuck reads them (imap-core/lib/indexer/parse-mime-tree.js
        // keeps the last Message-ID and Subject field of a header).
        messageId = fields.last { $0.0 == "message-id" }.map { $0.1 }.flatMap { $0.isEmpty ? nil : $0 }
        subject = fields.last { $0.0 == "subject" }?.1
    }

    /// A Message-ID without its angle brackets and surrounding space, for comparisons.
    static func normalized(_ id: String?) -> String? {
        guard var s = id?.trimmingCharacters(in: .whitespaces), !s.isEmpty else { return nil }
        if s.hasPrefix("<") { s.removeFirst() }
        if s.hasSuffix(">") { s.removeLast() }
        return s
    }
}
