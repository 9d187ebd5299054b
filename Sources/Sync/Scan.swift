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
///
/// Three steps: `snapshot` reads the folders, `ScanDiff` (ScanDiff.swift) decides from that and
/// the cache's rows without writing, `apply` queues what it decided.
struct LocalScan {
    let store: Store
    let maildir: any LocalFolders
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

    struct GenerationFirst: Error { var snapshot: ScanSnapshot }

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

    /// Scans the folders that changed (every folder with `force`; see `Scope`): reads them
    /// (`snapshot`), decides what the user did (`ScanDiff`, which writes nothing) and queues it
    /// (`apply`), in one transaction. `confirm` runs once the folders are read, before anything
    /// is recorded: when it throws (the Maildir is no longer the one the scan began in), nothing is.
    /// When the scan found changes and `mayRecord` says they may not be recorded yet, it throws
    /// `GenerationFirst` and records nothing (the caller moves the Maildir's generation, then
    /// runs it again with the snapshot the error carries: the folders are not read twice).
    func run(force: Bool = false, scope: Scope? = nil, quietSince: Int? = nil, confirm: () throws -> Void = {},
             mayRecord: () -> Bool = { true }, snapshot taken: ScanSnapshot? = nil) throws -> Result {
        var result = Result()
        let started = Int(Date().timeIntervalSince1970 * 1e9)
        try store.transaction {
            let snapshot = try taken ?? self.snapshot(force: force, scope: scope, quietSince: quietSince, started: started)
            try confirm()
            // Before the rows are read: a message whose file is forgotten is no longer found
            // by its unique part (an interrupted export's file, which the adoption takes).
            for (mailbox, folder) in snapshot.missing { try restore(mailbox, folder: folder) }
            let highestUid = Dictionary(try store.mailboxes().map { ($0.id, $0.highestUid) }, uniquingKeysWith: { a, _ in a })
            let store = self.store
            let diff = ScanDiff(snapshot: snapshot, rows: { try store.fileRows(mailboxId: $0) + store.fileRows(movingTo: $0) },
                                outbox: try store.outbox(), highestUid: highestUid)
            let changes = try diff.changes(Lookup(store: store, maildir: maildir))
            let r = changes.result
            if r.flagChanges + r.moves + r.deletes + r.uploads > 0 && !mayRecord() { throw GenerationFirst(snapshot: snapshot) }
            try apply(changes)
            result = changes.result
        }
        for file in result.tooLarge {
            log.log(.warning, "\(file) is larger than the server accepts (\(Self.uploadLimit / 1024 / 1024) MiB); not uploaded")
        }
        return result
    }

    /// Which folders to read, and what is in them.
    ///
    /// `quietSince` (ns, taken before the watch was drained): the folders in `scope.unchanged`
    /// had no change but wdsync's own until then, so their current mtimes are recorded without
    /// reading them — when those are at least a tick older than `quietSince`, so that a later
    /// change must move them, and have nanoseconds (a file system with whole-second
    /// timestamps is left to the settle rule).
    func snapshot(force: Bool, scope: Scope?, quietSince: Int?, started: Int) throws -> ScanSnapshot {
        var snapshot = ScanSnapshot(started: started)
        for mailbox in try store.mailboxes() {
            guard let folder = mailbox.folder else { continue }
            if let scope, scope.unchanged.contains(folder) {
                if let quietSince, let times = maildir.folderTimes(folder), times.cur != mailbox.scannedCur || times.new != mailbox.scannedNew,
                   [times.cur, times.new].allSatisfy({ $0 < quietSince - Self.tickNanoseconds && $0 % 1_000_000_000 != 0 }) {
                    snapshot.unread.append(ScannedFolder(mailboxId: mailbox.id, times: FolderTimes(cur: times.cur, new: times.new)))
                }
                continue
            }
            guard let times = maildir.folderTimes(folder) else {
                snapshot.missing.append((mailbox, folder))
                continue
            }
            let forced = force || scope?.changed.contains(folder) == true
            if !forced && times.cur == mailbox.scannedCur && times.new == mailbox.scannedNew { continue }
            guard let files = try maildir.listFolder(folder) else { continue }
            snapshot.read.append(.init(mailbox: mailbox, folder: folder, times: FolderTimes(cur: times.cur, new: times.new),
                                       files: files))
        }
        return snapshot
    }

    /// Queues what the diff decided (in the scan's transaction).
    func apply(_ changes: ScanChanges) throws {
        for change in changes.messages {
            switch change {
            case .relinked(let r):
                try store.setLocalFile(mailboxId: r.mailboxId, uid: r.uid, file: r.file.file, uniq: r.file.unique,
                                       flags: r.flags, sha256: r.sha256)
                if let target = r.moveTo {
                    try store.queue(.move, mailboxId: r.mailboxId, uid: r.uid, target: target, file: r.file.file, uniq: r.file.unique)
                } else {
                    try requeueFlags(r.mailboxId, r.uid, flags: r.flags, base: r.base)
                }
            case .undeleted(let mailboxId, let uid, let flags, let base):
                try requeueFlags(mailboxId, uid, flags: flags, base: base)
            case .deleted(let mailboxId, let uid):
                try store.queue(.delete, mailboxId: mailboxId, uid: uid)
            }
        }
        for move in changes.uploadMoves {
            try store.updateUpload(id: move.id, mailboxId: move.mailboxId, file: move.file, flags: move.flags, afterUid: move.afterUid)
        }
        for id in changes.droppedUploads { try store.removeOutbox(id: id) }
        for upload in changes.uploads { try store.queueUpload(upload) }
        for folder in changes.scanned {
            try store.setScanned(mailboxId: folder.mailboxId, cur: folder.times.cur, new: folder.times.new)
        }
        for note in changes.notes { log.log(note.level, note.text) }
    }

    static func isFile(_ file: String, in prefix: String) -> Bool {
        guard file.hasPrefix(prefix) else { return false }
        let rest = file.dropFirst(prefix.count)
        return (rest.hasPrefix("cur/") || rest.hasPrefix("new/")) && !rest.dropFirst(4).contains("/")
    }

    /// Queues a flag push when S, F or T differ from the server's, and drops the message's
    /// pending entry otherwise.
    private func requeueFlags(_ mailboxId: String, _ uid: Int, flags: MessageFlags, base: MessageFlags) throws {
        if !flags.pushableChanges(from: base).isEmpty {
            try store.queue(.flags, mailboxId: mailboxId, uid: uid)
        } else if let pending = try store.outboxEntry(mailboxId: mailboxId, uid: uid) {
            try store.removeOutbox(id: pending.id)
        }
    }

    /// A folder without cur/ or new/: its messages are downloaded again, nothing is deleted.
    private func restore(_ mailbox: MailboxRecord, folder: String) throws {
        guard try store.markMailboxForDownload(mailboxId: mailbox.id) > 0 else { return }
        log.log(.warning, "the folder \(folder.isEmpty ? maildir.root : folder) has no cur/ or new/; nothing is deleted on the server and its messages are downloaded again")
    }

    /// What the diff looks up, from the cache and the Maildir.
    struct Lookup: ScanLookup {
        let store: Store
        let maildir: any LocalFolders
        func row(uniq: String) throws -> FileRow? { try store.fileRow(uniq: uniq) }
        func isOrphan(uniq: String) throws -> Bool { try store.isOrphan(uniq: uniq) }
        func rows(messageId: String, notIn mailboxId: String) throws -> [FileRow] {
            try store.fileRows(messageId: messageId, notIn: mailboxId)
        }
        func info(_ file: String) -> (size: Int, regular: Bool)? { maildir.fileSize(file) }
        func sha256(_ file: String) -> String? { try? maildir.sha256(file) }
        func content(_ file: String) throws -> LocalContent { try maildir.readFile(file, limit: LocalScan.uploadLimit) }
        func now() -> Double { Date().timeIntervalSince1970 }
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
