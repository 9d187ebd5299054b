#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Maildir
import Store

/// What a sync would do, without doing it.
public struct DryRunReport: Sendable {
    /// Messages to download, per mailbox path: count and bytes.
    public var downloads: [String: (count: Int, bytes: Int)] = [:]
    /// Files to rename: `from → to` (flag changes and moves, done by rename).
    public var renames: [(from: String, to: String)] = []
    /// Folders to create or rename (`nil → folder` for a new one).
    public var folders: [(from: String?, to: String)] = []
    /// Files and folders to remove.
    public var removals: [String] = []
    public var folderRemovals: [String] = []
    /// Local changes to push to the server, by kind (flags, move, delete, upload).
    public var pushes: [String: Int] = [:]
    public init() {}
}

extension AccountSync {
    /// `--dry-run`: what a sync would download, rename, remove and push, found by running the
    /// scan and the pull against a throw-away copy of the cache (this mirror's store must be
    /// that copy, and its config `pullOnly` and `dryRun`), and asking, instead of exporting,
    /// what the exporter would do. Nothing is written to the Maildir, the real cache or the
    /// server: the scan and the pull only read the Maildir and the server (authenticating is
    /// the one POST, as for any read).
    public func dryRun() throws -> DryRunReport {
        precondition(config.pullOnly && config.dryRun, "a dry run needs a pull-only, dry-run mirror on a copy of the cache")
        var report = DryRunReport()
        summary = SyncSummary()
        // A Maildir that would be refused is refused here too; one that would be adopted is
        // not read as local changes.
        if try checkMaildir() == .same, FileManager.default.fileExists(atPath: maildir.root) { try scanLocal() }
        for entry in try store.outbox() { report.pushes["\(entry.kind)", default: 0] += 1 }
        if server.userId == nil { try client.authenticate() }
        try store.setAccount(AccountRecord(server: config.server, username: config.username, userId: server.userId,
                                           maildir: maildir.root, layout: config.layout.rawValue))
        let pull = self.pull
        try pull.settings()
        for mailbox in try pull.mailboxList().changed { try pull.listing(of: mailbox) }

        // What `export` would do with the store as the pull left it.
        let mailboxes = try store.mailboxes()
        var folderOf: [String: String] = [:]
        var paths: [String: String] = [:]
        var renamedFolders: [(from: String, to: String)] = []
        for mailbox in mailboxes {
            let wanted = maildir.folderDirectory(for: mailbox.path)
            folderOf[mailbox.id] = wanted
            paths[mailbox.id] = mailbox.path
            if mailbox.folder != wanted {
                report.folders.append((mailbox.folder, wanted))
                if let old = mailbox.folder { renamedFolders.append((old, wanted)) }
            }
        }
        /// Where a file is once its folder was renamed (files move with their folder).
        func afterFolderRenames(_ file: String) -> String {
            for (old, new) in renamedFolders where file.hasPrefix(old + "/") {
                return new + file.dropFirst(old.count)
            }
            return file
        }
        let exporter = self.exporter
        var reused = Set<String>()
        var after: (String, Int)?
        while true {
            let batch = try store.dirtyMessages(after: after, limit: 2000)
            guard let last = batch.last else { break }
            after = (last.mailboxId, last.uid)
            for row in batch {
                guard let folder = folderOf[row.mailboxId] else { continue }
                // The export's own decision (`plan`), for the folders as it will have renamed them.
                switch try exporter.plan(row, folder: folder, excluding: reused, moved: afterFolderRenames) {
                case .place(let file, let target):
                    if target != afterFolderRenames(file) { report.renames.append((file, target)) }
                case .reuse(let orphan, let file, let target):
                    reused.insert(orphan.file)
                    report.renames.append((file, target))
                case .download:
                    report.downloads[paths[row.mailboxId] ?? row.mailboxId, default: (0, 0)].count += 1
                    report.downloads[paths[row.mailboxId] ?? row.mailboxId, default: (0, 0)].bytes += row.size
                }
            }
            if batch.count < 2000 { break }
        }
        report.removals = try store.orphans().map(\.file).filter { !reused.contains($0) }
        let live = Set(folderOf.values)
        report.folderRemovals = try store.deadFolders().filter { !live.contains($0) }
        return report
    }
}
