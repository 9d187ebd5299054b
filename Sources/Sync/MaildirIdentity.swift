#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Maildir
import Store

/// The marker in the Maildir's root that says which cache wrote this Maildir and how far:
/// `.wdsync-state`, holding a random id (the cache records the same) and a generation. Mail
/// readers ignore dot files, and the scan never uploads one.
///
/// The generation moves forward (in the cache and in the marker) before a pass first changes
/// the Maildir or records a local change, and once more at the end of that pass. A copy of the
/// Maildir taken at any moment therefore carries a generation below the cache's as soon as the
/// cache knows anything the copy does not show — which is what makes a Maildir restored from a
/// backup recognisable (see docs/two-way.md, "Which Maildir").
struct MaildirMarker: Equatable, Sendable {
    static let fileName = ".wdsync-state"
    var id: String
    var generation: Int

    /// The marker of the Maildir at `root`: nil when there is none (or the root is missing),
    /// `.unreadable` when the file is there but is not a marker.
    enum Read: Equatable { case none, unreadable, marker(MaildirMarker) }

    static func read(root: String) -> Read {
        let path = root + "/" + fileName
        guard let data = FileManager.default.contents(atPath: path) else {
            return FileManager.default.fileExists(atPath: path) ? .unreadable : .none
        }
        var id: String?
        var generation: Int?
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            if parts[0] == "id", parts[1].utf8.count == 32, parts[1].allSatisfy(\.isHexDigit) { id = parts[1] }
            if parts[0] == "generation" { generation = Int(parts[1]) }
        }
        // Far below Int.max: a step adds up to `generationStride` (a billion steps fit).
        guard let id, let generation, generation >= 0, generation <= 1 << 62 else { return .unreadable }
        return .marker(MaildirMarker(id: id, generation: generation))
    }

    /// Writes the marker durably (a temporary file, fsynced, renamed over the old one, and the
    /// root fsynced): the cache records a generation only once the marker has it, so a power
    /// cut can leave the marker ahead of the cache, never behind it.
    func write(root: String) throws {
        let path = root + "/" + Self.fileName
        let temporary = path + ".tmp"
        // No colon anywhere: nothing takes it for a message (notmuch reads every file it finds).
        let text = "wdsync-maildir-state 1\nid \(id)\ngeneration \(generation)\n"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw Self.failure("create", temporary) }
        let ok = Array(text.utf8).withUnsafeBytes { bytes in Glibc.write(fd, bytes.baseAddress, bytes.count) == bytes.count }
            && fsync(fd) == 0
        let saved = errno
        close(fd)
        guard ok else { errno = saved; throw Self.failure("write", temporary) }
        guard rename(temporary, path) == 0 else { throw Self.failure("rename", path) }
        let dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 { _ = fsync(dir); close(dir) }
    }

    static func failure(_ what: String, _ path: String) -> SyncError {
        SyncError.localIO("cannot \(what) \(path): \(String(cString: strerror(errno))); check the Maildir's permissions and free space")
    }

    static func newId() -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        return bytes.map { String(format: "%02x", $0) }.joined()
    }
}

extension AccountSync {
    /// What the start of a pass found (`checkMaildir`).
    enum MaildirCheck: Equatable {
        /// The Maildir is the one this cache last wrote.
        case same
        /// The cache does not know the files that are there (a new, deleted or older cache, or
        /// `--adopt-maildir`): they are matched to the server's messages again (`adoptFiles`),
        /// and nothing is read from the Maildir as a local change in this pass.
        case adopt
    }

    /// Whether the Maildir in front of wdsync is the one this cache last wrote; throws (74,
    /// changing nothing on either side) when it is not and `--adopt-maildir` was not given.
    func checkMaildir() throws -> MaildirCheck {
        let root = maildir.root
        let marker = MaildirMarker.read(root: root)
        let state = try store.maildirState()
        let rootExists = FileManager.default.fileExists(atPath: root)
        func refuse(_ finding: String) -> SyncError {
            .localIO("the Maildir \(root) is not the one this cache last wrote: \(finding); nothing was changed on the server or on disk. Point --maildir at the right directory (or mount it), or run wdsync --once --adopt-maildir to bring this one to the server's state (files already there are kept, none is uploaded or deleted on the server because of it)")
        }
        if let state {
            switch marker {
            case .marker(let m) where m.id == state.maildirId:
                if m.generation == state.generation || m.generation == state.pending {
                    if state.pending != nil || m.generation != state.generation {
                        try store.setMaildirState(MaildirStateRecord(maildirId: m.id, generation: m.generation, adopting: state.adopting))
                    }
                    expectedMarker = m
                    // An adoption that was interrupted goes on.
                    return state.adopting ? .adopt : .same
                }
                if m.generation > state.generation {
                    // The cache is the older one (restored from a backup): the Maildir's files are
                    // taken as they are, and its pending changes with the cache's are dropped.
                    log.log(.warning, "the cache \(config.db) is older than the Maildir \(root) (its generation is behind the Maildir's: restored from a backup?); the files already there are matched to the server's messages again and nothing is sent from this pass")
                    return try adopt(id: m.id, from: m.generation)
                }
                if config.adoptMaildir { return try adopt(id: m.id, from: state.generation) }
                throw refuse("it is older than what the cache last wrote (its generation is behind the cache's: restored from a backup?)")
            case .marker:
                if config.adoptMaildir { return try adopt(id: state.maildirId, from: state.generation) }
                throw refuse("it belongs to another wdsync cache (its \(MaildirMarker.fileName) has another id)")
            case .unreadable:
                if config.adoptMaildir { return try adopt(id: state.maildirId, from: state.generation) }
                throw refuse("its \(MaildirMarker.fileName) cannot be read")
            case .none:
                if config.adoptMaildir { return try adopt(id: state.maildirId, from: state.generation) }
                // A first sync cut off before its marker reached the disk: nothing was written
                // that a missing marker could hide, so it starts again.
                if !rootHasEntries(), try !store.hasExportedFiles() {
                    try startIdentity(state.maildirId, from: state.generation)
                    return .same
                }
                throw refuse(rootExists ? "it has no \(MaildirMarker.fileName) (an empty directory, a disk mounted late, or another directory?)"
                                        : "it is missing (a disk that is not mounted?)")
            }
        }
        // A cache that never wrote a marker: new, deleted, or from before markers.
        switch marker {
        case .marker(let m):
            if try store.hasExportedFiles() || rootHasEntries() {
                log.log(.warning, "the cache \(config.db) does not know the Maildir \(root) (a new or deleted cache?); the files already there are matched to the server's messages and nothing is sent from this pass")
            }
            return try adopt(id: m.id, from: m.generation)
        case .unreadable:
            throw refuse("its \(MaildirMarker.fileName) cannot be read")
        case .none:
            if try store.hasExportedFiles() {
                // A cache from before markers: trusted as before, unless nothing is there at all.
                guard rootHasEntries() || config.adoptMaildir else {
                    throw refuse("it is empty, and this cache has written messages (a disk mounted late, or another directory?)")
                }
                if config.adoptMaildir { return try adopt(id: MaildirMarker.newId(), from: 0) }
                try startIdentity(MaildirMarker.newId(), from: 0)
                return .same
            }
            // A first sync. Files already there (a Maildir whose cache was deleted before
            // markers existed) are matched first, so nothing there is downloaded twice.
            let adopting = rootHasEntries()
            try startIdentity(MaildirMarker.newId(), from: 0, adopting: adopting)
            return adopting ? .adopt : .same
        }
    }

    /// Takes on this identity and moves the generation past `from` (both sides), for an adoption.
    private func adopt(id: String, from generation: Int) throws -> MaildirCheck {
        try store.forgetLocalState()
        try startIdentity(id, from: generation, adopting: true)
        return .adopt
    }

    private func startIdentity(_ id: String, from generation: Int, adopting: Bool = false) throws {
        try store.setMaildirState(MaildirStateRecord(maildirId: id, generation: generation, adopting: adopting))
        expectedMarker = MaildirMarker(id: id, generation: generation)
        if !config.dryRun { try advanceGeneration() }
    }

    /// The adoption pass went through: the next pass reads the Maildir as usual.
    func finishAdoption() throws {
        guard var state = try store.maildirState(), state.adopting else { return }
        state.adopting = false
        try store.setMaildirState(state)
    }

    /// Whether the root holds anything besides the marker.
    private func rootHasEntries() -> Bool {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: maildir.root)) ?? []
        return names.contains { $0 != MaildirMarker.fileName && $0 != MaildirMarker.fileName + ".tmp" }
    }

    /// Before the Maildir is read as local changes or written: it must still be the one the pass
    /// started with (the daemon's root can be moved away or unmounted under it).
    func requireSameMaildir() throws {
        guard let expected = expectedMarker, !config.dryRun else { return }
        if case .marker(let m) = MaildirMarker.read(root: maildir.root), m == expected {
            var st = stat()
            if stat(maildir.root, &st) == 0 {
                let here = [UInt64(st.st_dev), UInt64(st.st_ino)]
                if expectedRoot == nil { expectedRoot = here }
                if expectedRoot == here { return }
            }
        }
        throw SyncError.localIO("the Maildir \(maildir.root) changed under wdsync (moved, unmounted or replaced: its \(MaildirMarker.fileName) is not the one wdsync wrote); wdsync stopped and changed nothing more. Put the directory back and start it again, or run wdsync --once --adopt-maildir to bring this one to the server's state")
    }

    /// Moves the generation forward before the pass first changes the Maildir or records a
    /// local change (see `MaildirMarker`); nothing once it is open.
    func openGeneration() throws {
        guard !generationOpen, !config.dryRun, expectedMarker != nil else { return }
        try requireSameMaildir()
        try advanceGeneration()
        generationOpen = true
    }

    /// Moves it forward once more at the end of a pass that opened it: a copy taken during the
    /// pass is then older than the cache.
    func closeGeneration() throws {
        guard generationOpen, !config.dryRun else { return }
        try requireSameMaildir()
        try advanceGeneration()
        generationOpen = false
    }

    /// How far a step moves the generation at most: a random distance, not one. A cache restored
    /// from a backup goes on from an older generation along another history than the Maildir
    /// copies taken since; counting by one, it came back to a generation one of those copies
    /// carried, and the copy, restored later, was taken for the Maildir it last wrote (the
    /// torture's restoreCache then restoreMaildir). Two histories now meet on one number with a
    /// chance of one in four billion per step; the order within one history is kept.
    static let generationStride = 1 << 32

    /// The cache records the next generation as pending, the marker gets it (durably), then the
    /// cache makes it its own. Killed between any two steps, the next run finds the marker at
    /// the old or the pending generation and accepts either.
    private func advanceGeneration() throws {
        guard let state = try store.maildirState() else { return }
        let next = max(state.generation, state.pending ?? 0) + Int.random(in: 1...Self.generationStride)
        var record = state
        record.pending = next
        try store.setMaildirState(record)
        let marker = MaildirMarker(id: state.maildirId, generation: next)
        try marker.write(root: maildir.root)
        record.generation = next
        record.pending = nil
        try store.setMaildirState(record)
        expectedMarker = marker
    }
}

extension AccountSync {
    /// Whether the exporter has anything to change on disk: then the generation is opened first.
    func exportHasWork() throws -> Bool {
        if try !store.dirtyMessages(limit: 1).isEmpty || store.orphanCount() > 0 || !store.deadFolders().isEmpty { return true }
        return try store.mailboxes().contains { $0.folder != maildir.folderDirectory(for: $0.path) }
    }

    /// The mailbox and uid a file name of wdsync's own carries (`uniqueName`), if it is one.
    static func carriedKey(_ unique: String) -> (mailboxId: String, uid: Int)? {
        guard ownsFile(unique) else { return nil }
        let parts = unique.split(separator: ".", maxSplits: 2)
        let key = parts[1].dropFirst(2)
        guard let underscore = key.lastIndex(of: "_"), let uid = Int(key[key.index(after: underscore)...]) else { return nil }
        return (String(key[..<underscore]), uid)
    }

    /// Where an adoption puts the files it cannot give to a message: a folder no mailbox can
    /// have (a mailbox name's `%` is written `%25`), which the scan never reads.
    static let setAsideFolder = "%wdsync-set-aside"

    /// The adoption, after the pull (the cache holds the server's messages) and before the
    /// export: every file in the mailboxes' folders is matched to a message again, and the
    /// exporter then renames what was matched to the server's flags and folder and downloads
    /// only what has no file. Nothing here reaches the server.
    ///
    /// 1. A file whose unique part is a message's, or (wdsync's own name) that carries the
    ///    message's mailbox and uid, is that message's file.
    /// 2. Any other file whose Message-ID is that of a message still without a file (its own
    ///    mailbox first) is that message's file: a message moved on the server keeps its old
    ///    name, and a file you wrote keeps your name after its upload.
    /// 3. What is left: a file with wdsync's name (a message the server no longer has, or a
    ///    second copy) and a file of yours whose Message-ID the server already has in the same
    ///    mailbox are moved into `%wdsync-set-aside/<time>/` (never deleted, never uploaded);
    ///    any other file of yours stays where it is and is uploaded as new mail by the scan that
    ///    follows — a copy of a message of another mailbox too (a save or copy by mutt: the
    ///    original may be removed next).
    ///
    /// A matched file keeps the flags wdsync cannot push (D, R, P); S, F and T become the
    /// server's (local changes recorded from this Maildir were dropped: it is not trusted).
    func adoptFiles() throws {
        try openGeneration()
        try store.forgetFiles()
        let rows = try store.allFileRows()
        var byUniq: [String: Int] = [:]
        var byKey: [String: Int] = [:]
        var byMessageId: [String: [Int]] = [:]
        for (i, row) in rows.enumerated() {
            byUniq[row.uniq] = i
            byKey["\(row.mailboxId) \(row.uid)"] = i
            if let id = MessageHeaders.normalized(row.messageId) { byMessageId[id, default: []].append(i) }
        }
        var claimed = Set<Int>()
        var matched = 0
        func claim(_ i: Int, _ file: LocalFile) throws {
            let row = rows[i]
            let hash = try? Maildir.sha256(file: maildir.absolutePath(file.file))
            let flags = row.baseFlags.union(file.flags.subtracting(.pushable))
            try store.adoptFile(mailboxId: row.mailboxId, uid: row.uid, uniq: file.unique, file: file.file, sha256: hash?.hex, flags: flags)
            claimed.insert(i)
            matched += 1
        }

        // The folders the exporter will use, and those the cache last knew, if they differ.
        var folders: [(mailboxId: String, folder: String)] = []
        var listed = Set<String>()
        for mailbox in try store.mailboxes() {
            for folder in [mailbox.folder, maildir.folderDirectory(for: mailbox.path)].compactMap({ $0 }) where listed.insert(folder).inserted {
                folders.append((mailbox.id, folder))
            }
        }
        var leftover: [(mailboxId: String, file: LocalFile)] = []
        var aside: [LocalFile] = []
        try store.transaction {
            for (mailboxId, folder) in folders {
                // A folder that cannot be read (a file in its place) holds nothing to adopt; the
                // exporter reports it as it would anyway.
                guard let files = (try? maildir.listFolder(folder)) ?? nil else { continue }
                for file in files.sorted(by: { $0.file < $1.file }) {
                    if let i = byUniq[file.unique] {
                        if claimed.contains(i) { aside.append(file) } else { try claim(i, file) }
                    } else if let key = AccountSync.carriedKey(file.unique), let i = byKey["\(key.mailboxId) \(key.uid)"] {
                        if claimed.contains(i) { aside.append(file) } else { try claim(i, file) }
                    } else {
                        leftover.append((mailboxId, file))
                    }
                }
            }
            for (mailboxId, file) in leftover {
                let content = try? maildir.readFile(file.file, limit: LocalScan.uploadLimit)
                let id = content.flatMap { MessageHeaders.normalized(MessageHeaders($0.bytes).messageId) }
                let candidates = id.flatMap { byMessageId[$0] } ?? []
                let free = candidates.filter { !claimed.contains($0) }
                if let i = free.first(where: { rows[$0].mailboxId == mailboxId }) ?? free.first {
                    try claim(i, file)
                } else if AccountSync.ownsFile(file.unique) || candidates.contains(where: { rows[$0].mailboxId == mailboxId }) {
                    aside.append(file)
                }
                // Otherwise: mail of yours the server does not have in this mailbox (new, or a
                // copy of a message of another one: what mutt's save writes before it removes
                // the original, so setting it aside would lose the message once it does); the
                // scan uploads it.
            }
        }
        if !aside.isEmpty {
            let stamp = AccountSync.setAsideStamp()
            for file in aside { try setAside(file, into: AccountSync.setAsideFolder + "/" + stamp) }
            log.log(.warning, "\(aside.count) files in \(maildir.root) belong to no message on the server or are second copies; they were moved to \(maildir.absolutePath(AccountSync.setAsideFolder + "/" + stamp)) (wdsync does not read it, nothing in it is uploaded): look through them, then delete it")
        }
        log.log(.verbose, "adopted \(matched) files already in the Maildir; \(rows.count - matched) messages have none")
    }

    static func setAsideStamp() -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return formatter.string(from: Date())
    }

    /// Moves a file under `base`, keeping its folder, cur/ or new/, and name.
    private func setAside(_ file: LocalFile, into base: String) throws {
        let sub = (file.file as NSString).deletingLastPathComponent
        let folder = (sub as NSString).deletingLastPathComponent
        let target = base + (folder.isEmpty ? "" : "/" + folder)
        try maildir.ensureFolder(target)
        let destination = target + "/" + (sub as NSString).lastPathComponent + "/" + (file.file as NSString).lastPathComponent
        guard rename(maildir.absolutePath(file.file), maildir.absolutePath(destination)) == 0 else {
            throw MaildirMarker.failure("move aside", maildir.absolutePath(file.file))
        }
        onOwnWrite?(file.file, false)
    }
}
