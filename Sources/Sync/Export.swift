#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Failures
import Maildir
import Store
import WildDuck

/// export: store → Maildir. Makes the files match the store, reading only the store (never
/// network events); each message's step is decided first (`plan`, which `--dry-run` prints)
/// and then applied. The one thing it needs from the server is the bytes of a message that has
/// no file yet, which `Downloads` (Download.swift) fetches. `AccountSync.export` makes one for
/// each run, after checking that the Maildir is still the one the pass started with.
struct Export {
    let store: Store
    let maildir: Maildir
    let log: SyncLog
    /// Where the bodies it lacks come from.
    let downloads: Downloads
    let isCancelled: @Sendable () -> Bool
    /// Make the folders durable after a batch of deliveries (`AccountSync.syncFolders`).
    let syncFolders: Bool
    /// Told of every file it makes appear (true) or go away (false) (`AccountSync.onOwnWrite`).
    let onOwnWrite: ((String, Bool) -> Void)?
    /// Told of each folder it creates for a mailbox that had none (`AccountSync.onNewFolder`).
    let onNewFolder: ((String) -> Void)?
    /// Told how the downloads advance (the progress line).
    let onProgress: ((SyncProgress) -> Void)?
    /// What it changed, for the pass's summary (`SyncSummary.add`).
    var counts = Counts()
    /// The downloads' progress line, with each mailbox's path.
    var downloadProgress: (progress: SyncProgress, paths: [String: String])?

    struct Counts: Sendable, Equatable {
        var downloaded = 0
        var bytesDownloaded = 0
        var moved = 0
        var renamed = 0
        var removed = 0
        var recovered = 0
        var vanished = 0
        var failed = 0
    }

    /// Makes the Maildir match the store (`AccountSync.export` says what `keepOrphans` does).
    mutating func run(keepOrphans: Double = 0) throws {
        // Files renamed into place but not recorded can only exist if an export was interrupted
        // while downloading; the flag is set around downloads and cleared when the export ends.
        let interrupted = try store.isExporting()
        let mailboxes = try store.mailboxes()
        let folderOf = try placeFolders(mailboxes)
        try startDownloadProgress(mailboxes)
        defer { downloadProgress = nil }
        // One syncfs for the renames of a batch of rows where one can stand in for the
        // directories' fsyncs (see `commitDurably`).
        let renames = DeliveryBatch(maildir: maildir)
        let markedExporting = try exportMessages(folderOf: folderOf, interrupted: interrupted, renames: renames)
        try removeOrphans(olderThan: keepOrphans, renames: renames)
        if keepOrphans > 0 { try hideOrphans() }
        try removeDeadFolders(keeping: Set(folderOf.values), renames: renames)
        if markedExporting { try store.setExporting(false) }
    }

    /// The progress line of the downloads to come (on a terminal).
    private mutating func startDownloadProgress(_ mailboxes: [MailboxRecord]) throws {
        downloadProgress = nil
        guard onProgress != nil else { return }
        let pending = try store.counts()
        guard pending.pendingDownloads > 0 else { return }
        downloadProgress = (SyncProgress(phase: .downloading, mailbox: "", done: 0, total: pending.pendingDownloads,
                                         totalBytes: pending.pendingBytes),
                            Dictionary(mailboxes.map { ($0.id, $0.path) }, uniquingKeysWith: { a, _ in a }))
    }

    /// Every message whose file is not what the store says, 2,000 rows at a time: its plan
    /// applied and recorded in one transaction per batch (renames durable before the commit),
    /// then the batch's downloads. Returns whether the cache says "exporting" (`isExporting`).
    private mutating func exportMessages(folderOf: [String: String], interrupted: Bool, renames: DeliveryBatch?) throws -> Bool {
        var markedExporting = interrupted
        // After an interrupted export: folder → unique → file, read once per folder.
        var scanned: [String: [String: String]]? = interrupted ? [:] : nil
        var after: (String, Int)?
        while true {
            if isCancelled() { throw SyncError.cancelled }
            let batch = try store.dirtyMessages(after: after, limit: 2000)
            guard let last = batch.last else { break }
            after = (last.mailboxId, last.uid)
            var downloads: [DownloadJob] = []
            try store.transaction {
                var touched = Set<String>()   // folders whose cur/ or new/ a rename of this batch changed
                for row in batch {
                    guard let folder = folderOf[row.mailboxId] else { continue }
                    do {
                        if let job = try exportRow(row, folder: folder, recovering: &scanned, touched: &touched) {
                            downloads.append(job)
                        }
                    } catch let error where Export.concernsOneItem(error) {
                        // One message whose file cannot be placed must not stop the others.
                        log.log(.warning, "message \(row.uid) of mailbox \(row.mailboxId) is not exported: \(error)")
                    }
                }
                // The renames reach the disk before the commit that records them: a power cut
                // must not keep the commit and lose a rename, or the next scan would read the
                // old name as the user's flag change and send it to the server.
                try maildir.syncFolders(touched, batch: renames)
            }
            // Rows waiting for a download stay dirty, so fetch them before asking for more.
            if !downloads.isEmpty && !markedExporting {
                try store.setExporting(true)
                markedExporting = true
            }
            try download(downloads)
            if batch.count < 2000 { break }
        }
        return markedExporting
    }

    /// Applies the plan of one message; returns its download when it needs one. `recovering`
    /// (after an interrupted export): the folders' files by unique part, read once per folder.
    private mutating func exportRow(_ row: MessageRecord, folder: String, recovering scanned: inout [String: [String: String]]?,
                           touched: inout Set<String>) throws -> DownloadJob? {
        let flags = row.flags
        switch try plan(row, folder: folder) {
        case .place(let file, _):
            // (Nil: gone since it was found; downloaded below.)
            if let placed = try relocate(file, folder: folder, flags: flags) {
                if placed != row.file { counts.renamed += 1; touched.formUnion(Export.folders(of: file, placed)) }
                try store.markExported(mailboxId: row.mailboxId, uid: row.uid, file: placed, sha256: nil)
                return nil
            }
        case .reuse(let orphan, let file, _):
            if let placed = try relocate(file, folder: folder, flags: flags) {
                touched.formUnion(Export.folders(of: file, placed))
                try store.removeOrphan(file: orphan.file)
                try store.markExported(mailboxId: row.mailboxId, uid: row.uid, uniq: orphan.uniq, file: placed, sha256: orphan.sha256)
                counts.moved += 1
                return nil
            }
        case .download(let missing):
            // Our file is gone (deleted by hand): fetch it again.
            if let missing { log.log(.warning, "\(missing) disappeared from the Maildir; downloading it again") }
        }
        // Crash recovery: a file renamed into place by an interrupted export but not recorded.
        // After a clean export there is none, so big folders are not scanned.
        if scanned != nil && scanned?[folder] == nil {
            scanned?[folder] = try maildir.scanUniqueNames(folder: folder)
            // Only download leftovers (named by the bare unique part), not the files of
            // orphans kept there for a possible move (`hideOrphans`).
            _ = try maildir.cleanTmp(folder: folder, owns: { !$0.contains(":") && AccountSync.ownsFile($0) })
        }
        if let existing = scanned?[folder]?[row.uniq] {
            let placed = try maildir.moveFile(from: existing, to: folder, flags: flags)
            if placed != existing { onOwnWrite?(existing, false); onOwnWrite?(placed, true) }
            touched.formUnion(Export.folders(of: existing, placed))
            let hash = try maildir.sha256(placed)
            try store.markExported(mailboxId: row.mailboxId, uid: row.uid, file: placed, sha256: hash)
            counts.recovered += 1
            return nil
        }
        return DownloadJob(mailboxId: row.mailboxId, uid: row.uid, folder: folder, unique: row.uniq,
                           flags: flags, mtime: row.idate, size: row.size)
    }

    /// Files of messages that left the server and were not re-used by a move. The unlinks are
    /// made durable before the cache forgets the files: a power cut that kept the commit and
    /// lost an unlink would leave a file the cache does not know, which the next scan would
    /// upload as a new message. Interrupted before the commit, the next run finds the orphans
    /// again and their files already gone.
    private mutating func removeOrphans(olderThan keepOrphans: Double, renames: DeliveryBatch?) throws {
        let orphans = try store.orphans(olderThan: keepOrphans)
        guard !orphans.isEmpty else { return }
        var unlinkedIn = Set<String>()
        for orphan in orphans {
            if try maildir.removeFile(orphan.file) {
                counts.removed += 1
                onOwnWrite?(orphan.file, false)
            }
            unlinkedIn.formUnion(Export.folders(of: orphan.file))
        }
        try maildir.syncFolders(unlinkedIn, batch: renames)
        try store.transaction { for orphan in orphans { try store.removeOrphan(file: orphan.file) } }
    }

    /// The folders of mailboxes gone from the server (a mailbox deleted and re-created under
    /// the same path keeps its folder), durable before the cache forgets them.
    private func removeDeadFolders(keeping live: Set<String>, renames: DeliveryBatch?) throws {
        for folder in try store.deadFolders() {
            if !live.contains(folder) {
                if try maildir.removeFolder(folder, owns: AccountSync.ownsFile) == false {
                    log.log(.warning, "kept folder \(folder): it holds files wdsync did not write")
                }
                try maildir.syncRemovedFolder(folder, batch: renames)
            }
            try store.removeDeadFolder(folder)
        }
    }

    /// Settles every orphan kept for a possible move when the daemon stops: its file is
    /// unlinked (from `tmp/`, where `hideOrphans` put it) and the orphan forgotten, so a clean
    /// stop leaves nothing in `tmp/` and nothing that only this process knew to remove. A move
    /// whose other half comes later downloads its message again; nothing is lost.
    func removeKeptOrphans() throws {
        for orphan in try store.orphans() {
            if try maildir.removeFile(orphan.file) { onOwnWrite?(orphan.file, false) }
            try store.removeOrphan(file: orphan.file)
        }
    }

    /// Takes the files of orphans that are kept for a possible move out of the readers' view:
    /// each goes into its folder's `tmp/` under its own name, which Maildir readers ignore, so an
    /// expunge reaches mutt and notmuch with the batch that brings it. A move re-uses the file
    /// from there; otherwise it is unlinked when the hold ends. The store is updated first: if
    /// the process dies before the rename, the file is still found in `cur/`/`new/` by its
    /// unique part, by `moveFile` and `removeFile` alike. Nothing else removes these files:
    /// the crash-recovery clean-up of `tmp/` leaves names with an info part (`:2,…`) alone.
    private func hideOrphans() throws {
        for orphan in try store.orphans() where !Maildir.isHidden(orphan.file) {
            try store.moveOrphan(file: orphan.file, to: try Maildir.hiddenPath(of: orphan.file))
            if try maildir.hideFile(orphan.file) { onOwnWrite?(orphan.file, false) }
        }
    }

    /// Creates or renames the folders of all mailboxes so they match the mailboxes' current
    /// paths, parents first. Returns mailbox id → folder.
    private mutating func placeFolders(_ mailboxes: [MailboxRecord]) throws -> [String: String] {
        var result: [String: String] = [:]
        // Current folders; re-read after a move, which can shift others (children in verbatim,
        // an occupant moved aside).
        var current = Dictionary(mailboxes.map { ($0.id, $0.folder) }, uniquingKeysWith: { a, _ in a })
        for mailbox in mailboxes.sorted(by: { $0.path.split(separator: "/").count < $1.path.split(separator: "/").count }) {
            do {
                let wanted = maildir.folderDirectory(for: mailbox.path)
                result[mailbox.id] = wanted
                guard let folder = current[mailbox.id] ?? nil else {
                    try maildir.ensureFolder(wanted)
                    onNewFolder?(wanted)
                    try store.setMailboxFolder(id: mailbox.id, folder: wanted)
                    continue
                }
                guard folder != wanted else { continue }
                let destination = maildir.absolutePath(wanted)
                if FileManager.default.fileExists(atPath: destination) && FileManager.default.fileExists(atPath: maildir.absolutePath(folder)) {
                    // Two mailboxes swapped names, or one took the name of a deleted one: move the
                    // occupant aside (it is renamed or removed later in this pass).
                    guard try store.isKnownFolder(wanted) else {
                        throw SyncError.localIO("cannot rename \(folder) to \(wanted) for mailbox \(mailbox.path): \(destination) exists and is not wdsync's; move it away and re-run")
                    }
                    try moveFolder(wanted, to: Export.asideFolder(for: mailbox.id))
                }
                log.log(.verbose, "renaming folder \(folder) → \(wanted)")
                try moveFolder(folder, to: wanted)
                counts.renamed += 1
                current = Dictionary(try store.mailboxes().map { ($0.id, $0.folder) }, uniquingKeysWith: { a, _ in a })
            } catch let error where Export.concernsOneItem(error) {
                // One mailbox whose folder cannot be placed (a name the file system refuses, a
                // foreign file in the way) must not stop the others: its messages wait.
                result[mailbox.id] = nil
                log.log(.warning, "mailbox \(mailbox.path) is not exported: \(error)")
            }
        }
        return result
    }

    /// Where a folder is parked while its name is handed to another mailbox. The id is a
    /// validated ObjectId (`ServerID`); anything else is written as hex, so no id can name a
    /// path outside the Maildir root.
    static func asideFolder(for id: String) -> String {
        let tag = ServerID.isObjectId(id) ? id : "x" + id.utf8.prefix(48).map { String($0, radix: 16) }.joined()
        return "%%wdsync-aside-" + tag
    }

    /// Errors that concern one mailbox or one message (a name the file system refuses, a
    /// foreign file in the way) rather than the whole Maildir (disk full, no permission, I/O):
    /// the item is logged and skipped, the others go on.
    static func concernsOneItem(_ error: Error) -> Bool {
        let failure = Failure(of: error)
        return failure.origin == .local && failure.isContained
    }

    /// Renames a folder on disk, then in the store. Idempotent: if a crash came between the two,
    /// the disk already shows the new name and only the store is updated.
    private func moveFolder(_ folder: String, to newFolder: String) throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: maildir.absolutePath(folder)) || !fm.fileExists(atPath: maildir.absolutePath(newFolder)) {
            try maildir.renameFolder(from: folder, to: newFolder)
        }
        try store.transaction { try store.moveFolder(from: folder, to: newFolder, nested: maildir.layout == .verbatim) }
    }

    /// The folders of Maildir files (`<folder>/<cur|new|tmp>/<name>`), for `Maildir.syncFolders`.
    static func folders(of files: String...) -> Set<String> {
        Set(files.map { file in
            let parts = file.split(separator: "/", omittingEmptySubsequences: false)
            return parts.count >= 2 ? parts.dropLast(2).joined(separator: "/") : ""
        })
    }

    /// What the export does for a message whose file is not what the store says, decided from
    /// the store and the disk before anything changes: `export` applies it, `--dry-run` prints
    /// it. `excluding`: orphans already taken by an earlier step of a plan that is not applied;
    /// `moved`: where a file is once its folder's rename is done (the dry run does none).
    func plan(_ row: MessageRecord, folder: String, excluding taken: Set<String> = [],
              moved: (String) -> String = { $0 }) throws -> ExportStep {
        try Export.plan(row, folder: folder, store: store, folders: maildir, excluding: taken, moved: moved)
    }

    /// `plan` from the cache and any local folders (the tests' own, in a temporary directory).
    static func plan(_ row: MessageRecord, folder: String, store: Store, folders: any LocalFolders,
                     excluding taken: Set<String> = [], moved: (String) -> String = { $0 }) throws -> ExportStep {
        if let file = row.file, let current = try folders.find(file, movingTo: folder) {
            return .place(current, to: Maildir.placement(of: moved(current), in: folder, flags: row.flags))
        }
        if let orphan = try store.matchOrphan(messageId: row.messageId, size: row.size), !taken.contains(orphan.file),
           let current = try folders.find(orphan.file, movingTo: folder) {
            return .reuse(orphan, current, to: Maildir.placement(of: moved(current), in: folder, flags: row.flags))
        }
        return .download(missing: row.file)
    }

    /// Puts an existing file into `folder` with `flags`: into cur/ when seen, new/ when not, as
    /// the server says (a message marked unseen again goes back to new/); a file whose S does
    /// not change stays where it is (mutt's "old" messages are in cur/ without S). Nil if the
    /// file is gone.
    private func relocate(_ file: String, folder: String, flags: MessageFlags) throws -> String? {
        do {
            let placed = try maildir.moveFile(from: file, to: folder, flags: flags)
            if placed != file { onOwnWrite?(file, false); onOwnWrite?(placed, true) }
            return placed
        } catch MaildirError.notFound {
            return nil
        }
    }
}

/// What the export does for one message (`plan`).
enum ExportStep: Equatable {
    /// Its file is at this path: put it where its folder and flags say (a rename, or nothing).
    case place(String, to: String)
    /// An orphan holding the same message (a move whose halves came apart), at this path.
    case reuse(OrphanRecord, String, to: String)
    /// No file: downloaded. `missing`: the file the store knew, gone from the Maildir.
    case download(missing: String?)
}

extension Export {
    /// Downloads message bodies (`Downloads`) and records them as they come.
    private mutating func download(_ jobs: [DownloadJob]) throws {
        guard !jobs.isEmpty else { return }
        if let onProgress, var state = downloadProgress, state.progress.done == 0, let first = jobs.first {
            state.progress.mailbox = state.paths[first.mailboxId] ?? ""
            downloadProgress = state
            onProgress(state.progress)
        }
        log.log(.verbose, "downloading \(jobs.count) messages")
        try downloads.run(jobs) { results, batch in try record(results, batch: batch) }
    }

    /// Publishes what the downloads sealed (`Maildir.publish(_:batch:)`: every body durable before
    /// any rename), makes the renames durable, and records the batch in one transaction. A
    /// message that cannot be published because of something about it alone is skipped (see
    /// `concernsOneItem`); any other error is thrown, but only after everything published is
    /// recorded: a file in new/ or cur/ that the store does not know would come back as a
    /// message written locally.
    private mutating func record(_ results: [DownloadResult], batch: DeliveryBatch? = nil) throws {
        guard !results.isEmpty else { return }
        let sealed = results.compactMap { result -> SealedDelivery? in
            guard case .sealed(_, let delivery) = result else { return nil }
            return delivery
        }
        var outcomes = maildir.publish(sealed, batch: batch).makeIterator()
        var failure: Error?
        let results = results.compactMap { result -> DownloadResult? in
            guard case .sealed(let job, _) = result, let outcome = outcomes.next() else { return result }
            switch outcome {
            case .success(let delivered):
                return .delivered(job, delivered)
            case .failure(let error):
                if Export.concernsOneItem(error) { job.skipped(error, log: log) } else if failure == nil { failure = error }
                return nil
            }
        }
        // The folders' sync makes a whole batch's renames durable at once. (A rename lost to a
        // power cut is repaired by the next sync: the file is missing, so it is downloaded again.)
        if syncFolders {
            var folders = Set<String>()
            for case .delivered(let job, _) in results { folders.insert(job.folder) }
            try maildir.syncFolders(folders, batch: batch)
        }
        try store.transaction {
            for result in results {
                switch result {
                case .delivered(let job, let delivered):
                    onOwnWrite?(delivered.relativePath, true)
                    try store.markExported(mailboxId: job.mailboxId, uid: job.uid, file: delivered.relativePath,
                                           sha256: delivered.sha256)
                    counts.downloaded += 1
                    counts.bytesDownloaded += Int(delivered.size)
                case .vanished(let job):
                    // Expunged between listing and download: list the mailbox again next pass.
                    log.log(.verbose, "message \(job.uid) vanished from the server during the sync")
                    try store.markMailboxStale(id: job.mailboxId)
                    counts.vanished += 1
                case .refused(let job, let reason):
                    // Stays pending: the next pass tries again (and says so again).
                    log.log(.error, "\(job.folder): \(reason)")
                    counts.failed += 1
                case .sealed:
                    break  // none left: each was published (now .delivered) or skipped above
                }
            }
        }
        if let onProgress, var state = downloadProgress {
            for case .delivered(let job, _) in results.suffix(1) { state.progress.mailbox = state.paths[job.mailboxId] ?? "" }
            state.progress.done = min(counts.downloaded, state.progress.total)
            state.progress.bytes = counts.bytesDownloaded
            downloadProgress = state
            onProgress(state.progress)
        }
        if let failure { throw failure }
    }
}

