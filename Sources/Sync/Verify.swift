#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Maildir
import Store

/// What `--verify` found: problems (a file missing or altered, a message never downloaded),
/// files the user's mail program renamed or moved that the next sync sends, and where altered
/// files were put.
public struct VerifyReport: Sendable {
    public var problems: [String] = []
    /// Files found under another name or in another folder than the cache recorded (a read, a
    /// flag change, a move in a mail program): not damage; the next sync sends the change.
    public var localChanges = 0
    /// Where each altered file went (outside the Maildir, next to the cache).
    public var movedAside: [String] = []
}

extension AccountSync {
    /// Checks, without the network, that every cached message has its file with the recorded
    /// SHA-256. A file is recognised by the unique part of its name, whatever its flags, its
    /// `cur/` or `new/` and its folder: mutt reading a message offline (`new/` to `cur/`, `S`)
    /// or a move not yet synced is a change the next sync sends, not damage. A file that is
    /// nowhere is queued for download again (after a disk scare, the scan would otherwise read
    /// its absence as a delete). An altered file is queued too, but first moved aside — never
    /// deleted: it may be the only complete copy (a server copy can be damaged as well).
    public func verify() throws -> VerifyReport {
        var report = VerifyReport()
        var onDisk: [String: String] = [:]   // unique part → file, over every mailbox's folder
        for mailbox in try store.mailboxes() {
            guard let folder = mailbox.folder else { continue }
            for (unique, file) in try maildir.scanUniqueNames(folder: folder) where onDisk[unique] == nil {
                onDisk[unique] = file
            }
        }
        let aside = config.db + ".altered"
        for row in try store.messages() {
            // Deleted or moved locally, not pushed yet (e.g. --pull-only): not damage.
            if let pending = try store.outboxEntry(mailboxId: row.mailboxId, uid: row.uid), pending.kind != .flags { continue }
            guard let recorded = row.file else {
                report.problems.append("message \(row.uid) of mailbox \(row.mailboxId) has not been downloaded yet")
                continue
            }
            var file = recorded
            if !FileManager.default.fileExists(atPath: maildir.absolutePath(recorded)) {
                guard let found = onDisk[Maildir.uniquePart(ofFileName: String(recorded.split(separator: "/").last ?? ""))] else {
                    report.problems.append("\(recorded): missing from every folder; queued to be downloaded again")
                    try store.markForDownload(mailboxId: row.mailboxId, uid: row.uid)
                    continue
                }
                report.localChanges += 1
                file = found
            }
            let hash: String
            do { hash = try maildir.sha256(file) } catch {
                report.problems.append("\(file): \(error)")
                continue
            }
            guard let expected = row.sha256, hash != expected else { continue }
            let target = try Self.moveAside(maildir.absolutePath(file), into: aside)
            try store.markForDownload(mailboxId: row.mailboxId, uid: row.uid)
            report.problems.append("\(file): contents differ from the cache (SHA-256); moved to \(target) and queued to be downloaded again")
            report.movedAside.append(target)
        }
        return report
    }

    /// Moves a file into `directory` without ever deleting the only copy: a rename when both
    /// are on one file system, otherwise a copy made durable before the original is unlinked.
    /// A name already there gets a numbered suffix. Returns the new path.
    static func moveAside(_ path: String, into directory: String) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let name = URL(fileURLWithPath: path).lastPathComponent
        var target = directory + "/" + name
        var n = 1
        while FileManager.default.fileExists(atPath: target) { target = directory + "/\(name).\(n)"; n += 1 }
        if rename(path, target) == 0 { return target }
        let e = errno
        guard e == EXDEV else { throw MaildirError.system(path: path, operation: .renaming, errno: e) }
        try FileManager.default.copyItem(atPath: path, toPath: target)
        let fd = open(target, O_RDONLY | O_CLOEXEC)
        guard fd >= 0, fsync(fd) == 0 else {
            let e = errno
            if fd >= 0 { close(fd) }
            throw MaildirError.system(path: target, operation: .syncing, errno: e)
        }
        close(fd)
        try FileManager.default.removeItem(atPath: path)
        return target
    }
}
