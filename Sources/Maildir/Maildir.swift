#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A Maildir tree under one root: folder naming, atomic delivery, flag renames, moves, removals.
///
/// All paths this API takes and returns are relative to `root`: a *folder* is what
/// `folderDirectory(for:)` returns ("" is the root itself in maildir++), a *file* is
/// `<folder>/cur/<name>` or `<folder>/new/<name>`. The value holds no mutable state and no open
/// descriptors, so it is `Sendable`; a `PendingDelivery` is owned by one task at a time.
///
/// Folders are created lazily: delivery only calls `mkdir` when opening `tmp/<unique>` fails
/// with ENOENT, so a delivery into an existing folder costs no `stat` or `mkdir`.
/// Files are created 0600 and folders 0700 whatever the umask. One caller per account: wdsync
/// holds the account lock, so no second writer races on the same unique names.
public struct Maildir: Sendable {
    public typealias Layout = MaildirLayout

    /// The root directory (no trailing slash).
    public let root: String
    public let layout: Layout
    let io: FileIO

    public init(root: String, layout: Layout = .verbatim) {
        self.init(root: root, layout: layout, io: .system)
    }

    init(root: String, layout: Layout, io: FileIO) {
        var r = root
        while r.count > 1 && r.hasSuffix("/") { r.removeLast() }
        self.root = r
        self.layout = layout
        self.io = io
    }

    // MARK: - Names

    /// The folder directory (relative to the root) for a mailbox path; see the scheme at the top
    /// of FolderNames.swift. `INBOX` is `"INBOX"` in verbatim and `""` (the root) in maildir++.
    public func folderDirectory(for mailboxPath: String) -> String {
        FolderNames.encode(mailboxPath, layout: layout)
    }

    /// The mailbox path of a folder directory, or nil for a foreign or truncated name.
    public func mailboxPath(forFolderDirectory folder: String) -> String? {
        FolderNames.decode(folder, layout: layout)
    }

    /// The absolute path of a relative folder or file path.
    public func absolutePath(_ relative: String) -> String {
        relative.isEmpty ? root : (root == "/" ? "/" + relative : root + "/" + relative)
    }

    /// A Maildir unique name `"<time>.<key>.<host>"` for a stable key (e.g. the server's message
    /// id), so a re-run produces the same name. In `key`, every byte other than `A–Z a–z 0–9 - _`
    /// is written as `\` and three octal digits; in `host`, `/` becomes `\057`, `:` `\072`, and `\`,
    /// `,`, spaces, control and non-ASCII bytes are escaped the same way (Dovecot reads `,S=`).
    /// The name never contains `/` or `:` and never starts with `.`.
    public static func uniqueName(time: Int, key: String, host: String) -> String {
        func escape(_ s: String, keep: (UInt8) -> Bool) -> String {
            var out: [UInt8] = []
            for b in s.utf8 {
                if keep(b) { out.append(b); continue }
                out.append(UInt8(ascii: "\\"))
                out.append(UInt8(ascii: "0") + (b >> 6))
                out.append(UInt8(ascii: "0") + ((b >> 3) & 7))
                out.append(UInt8(ascii: "0") + (b & 7))
            }
            return String(decoding: out, as: UTF8.self)
        }
        let k = escape(key) { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x5F
        }
        let h = escape(host) { b in
            b > 0x20 && b < 0x7F && b != UInt8(ascii: "/") && b != UInt8(ascii: ":")
                && b != UInt8(ascii: "\\") && b != UInt8(ascii: ",")
        }
        return "\(time).\(k).\(h)"
    }

    /// The unique part of a Maildir file name: everything before the first `:`.
    public static func uniquePart(ofFileName name: String) -> String {
        // Bytes, not Characters: a prepended mark (U+0605) before ':' makes one Character of both.
        if let colon = name.utf8.firstIndex(of: UInt8(ascii: ":")) {
            return String(decoding: name.utf8[..<colon], as: UTF8.self)
        }
        return name
    }

    /// The file name wdsync writes: unique part + `:2,` + flags.
    public static func fileName(unique: String, flags: MessageFlags) -> String {
        unique + flags.info
    }

    static func validateUnique(_ unique: String) throws(MaildirError) {
        let bytes = Array(unique.utf8)
        guard !bytes.isEmpty, bytes.first != UInt8(ascii: "."),
              !bytes.contains(UInt8(ascii: "/")), !bytes.contains(UInt8(ascii: ":")), !bytes.contains(0)
        else {
            throw .invalidArgument("unique name \(String(reflecting: unique)) must be non-empty, must not start with '.' and must not contain '/', ':' or NUL")
        }
        guard bytes.count + 10 <= FolderNames.maxNameBytes else {
            throw .invalidArgument("unique name is \(bytes.count) bytes; at most \(FolderNames.maxNameBytes - 10) leave room for the flags")
        }
    }

    // MARK: - Folders

    /// Creates the folder (and missing parents) with `cur/ new/ tmp/`, plus the `maildirfolder`
    /// marker for a maildir++ subfolder. Idempotent. New directories are 0700, the marker 0600;
    /// existing directories are left as they are. A newly created folder's parent is fsynced.
    public func ensureFolder(_ folder: String) throws(MaildirError) {
        let dir = absolutePath(folder)
        try makeDirectories(dir)
        for sub in ["cur", "new", "tmp"] {
            try makeDirectory(dir + "/" + sub)
        }
        if layout == .maildirPlusPlus && !folder.isEmpty {
            let marker = dir + "/maildirfolder"
            let fd = Sys.openFile(marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, Sys.fileMode)
            if fd >= 0 {
                _ = fchmod(fd, Sys.fileMode)
                _ = Sys.closeDescriptor(fd)
            } else if -fd != EEXIST {
                throw .from(errno: -fd, path: marker, operation: .creatingFolder)
            }
        }
    }

    /// `mkdir -p`, 0700 for each directory it creates.
    private func makeDirectories(_ path: String) throws(MaildirError) {
        let r = Sys.makeDirectory(path, Sys.dirMode)
        if r == 0 {
            try finishCreated(path)
            return
        }
        if r == EEXIST {
            let k = Sys.kind(path)
            if !k.isDirectory { throw .notADirectory(path: path) }
            return
        }
        guard r == ENOENT, let slash = path.lastIndex(of: "/"), slash != path.startIndex else {
            throw .from(errno: r, path: path, operation: .creatingFolder)
        }
        try makeDirectories(String(path[..<slash]))
        try makeDirectory(path)
    }

    private func makeDirectory(_ path: String) throws(MaildirError) {
        let r = Sys.makeDirectory(path, Sys.dirMode)
        if r == 0 { try finishCreated(path); return }
        if r == EEXIST {
            if !Sys.kind(path).isDirectory { throw .notADirectory(path: path) }
            return
        }
        throw .from(errno: r, path: path, operation: .creatingFolder)
    }

    /// chmod 0700 (umask may have cleared bits) and fsync the parent so the entry is durable.
    private func finishCreated(_ path: String) throws(MaildirError) {
        let r = Sys.changeMode(path, Sys.dirMode)
        if r != 0 { throw .from(errno: r, path: path, operation: .creatingFolder) }
        if let slash = path.lastIndex(of: "/") {
            let parent = slash == path.startIndex ? "/" : String(path[..<slash])
            try syncDirectory(parent, missingOK: false)
        }
    }

    private func syncDirectory(_ path: String, missingOK: Bool) throws(MaildirError) {
        let fd = Sys.openFile(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 {
            if missingOK && -fd == ENOENT { return }
            throw .from(errno: -fd, path: path, operation: .syncingFolder)
        }
        let r = Sys.syncDescriptor(fd)
        _ = Sys.closeDescriptor(fd)
        if r == 0 { FileTrace.note("D", path) }
        // Some file systems do not support fsync on directories; that is not a failure.
        if r != 0 && r != EINVAL && r != ENOTSUP {
            throw .from(errno: r, path: path, operation: .syncingFolder)
        }
    }

    /// fsyncs the folder's `new/` and `cur/` directories, making the renames of a batch of
    /// deliveries durable. Call once per batch rather than once per file.
    public func syncFolder(_ folder: String) throws(MaildirError) {
        try syncFolders([folder], batch: nil)
    }

    /// `syncFolder` for each of `folders`, except that the directories on the file system of
    /// `batch` are made durable together, by one sync.
    public func syncFolders(_ folders: Set<String>, batch: DeliveryBatch?) throws(MaildirError) {
        var viaBatch = false
        for folder in folders {
            for sub in ["new", "cur"] {
                let path = absolutePath(joinPath(folder, sub))
                if let batch, batch.covers(path: path) { viaBatch = true } else { try syncDirectory(path, missingOK: true) }
            }
        }
        if viaBatch, let batch {
            let r = io.syncFilesystem(batch.fd)
            if r != 0 { throw .from(errno: r, path: root, operation: .syncingFolder) }
        }
    }

    /// Makes the removal of `folder` (`removeFolder`) durable: the directory that held it is
    /// fsynced, or the whole file system synced through `batch` where that covers it.
    public func syncRemovedFolder(_ folder: String, batch: DeliveryBatch?) throws(MaildirError) {
        let path = absolutePath(folder)
        guard let slash = path.lastIndex(of: "/") else { return }
        let parent = slash == path.startIndex ? "/" : String(path[..<slash])
        if let batch, batch.covers(path: parent) {
            let r = io.syncFilesystem(batch.fd)
            if r != 0 { throw .from(errno: r, path: root, operation: .syncingFolder) }
        } else {
            try syncDirectory(parent, missingOK: true)
        }
    }

    /// Renames a folder (a mailbox rename on the server). Missing parents of the destination are
    /// created (verbatim). Never overwrites: if anything non-empty exists at the destination, this
    /// throws `.folderExists`. In verbatim the children move with the folder (they are nested);
    /// in maildir++ each child is its own `.a.b` directory and must be renamed by the caller.
    public func renameFolder(from: String, to: String) throws(MaildirError) {
        guard !from.isEmpty, !to.isEmpty else {
            throw .invalidArgument("the maildir++ root (INBOX) cannot be renamed")
        }
        if from == to { return }
        let src = absolutePath(from), dst = absolutePath(to)
        if let slash = dst.lastIndex(of: "/"), slash != dst.startIndex {
            try makeDirectories(String(dst[..<slash]))
        }
        let r = Sys.renamePath(src, dst)
        switch r {
        case 0: break
        case EEXIST, ENOTEMPTY: throw .folderExists(path: dst)
        case ENOENT: throw .notFound(path: src, operation: .renaming)
        case EINVAL: throw .invalidArgument("cannot move folder \(from) into itself (\(to))")
        default: throw .from(errno: r, path: src, operation: .renaming)
        }
        if let slash = dst.lastIndex(of: "/") {
            try syncDirectory(slash == dst.startIndex ? "/" : String(dst[..<slash]), missingOK: true)
        }
    }

    /// Removes a folder wdsync owns: unlinks the files in `cur/`, `new/` and `tmp/` whose unique
    /// part `owns` accepts, then removes `cur/ new/ tmp/`, the `maildirfolder` marker and the
    /// folder itself — but only if nothing else is left. Anything foreign (a file `owns` rejects,
    /// a dot file, a subfolder) keeps the folder in place. The maildir++ root is never removed.
    /// Returns true when the folder directory is gone (or was not there).
    @discardableResult
    public func removeFolder(_ folder: String, owns: (String) -> Bool) throws(MaildirError) -> Bool {
        let dir = absolutePath(folder)
        var foreign = false
        for sub in ["cur", "new", "tmp"] {
            let path = dir + "/" + sub
            guard let listing = try Sys.list(path) else { continue }
            if listing.foreign > 0 { foreign = true }
            for name in listing.names {
                if name.isDotFile || !owns(Self.uniquePart(ofFileName: name)) { foreign = true; continue }
                let r = Sys.removeFile(path + "/" + name)
                if r != 0 && r != ENOENT {
                    if r == EISDIR || r == EPERM && Sys.kind(path + "/" + name).isDirectory { foreign = true; continue }
                    throw .from(errno: r, path: path + "/" + name, operation: .removing)
                }
            }
        }
        if foreign || folder.isEmpty { return false }
        for sub in ["cur", "new", "tmp"] {
            let r = Sys.removeDirectory(dir + "/" + sub)
            if r == ENOTEMPTY || r == EEXIST { return false }
            if r != 0 && r != ENOENT { throw .from(errno: r, path: dir + "/" + sub, operation: .removing) }
        }
        guard let rest = try Sys.list(dir) else { return true }
        if rest.foreign > 0 || rest.names.contains(where: { !(layout == .maildirPlusPlus && $0 == "maildirfolder") }) {
            return false
        }
        if layout == .maildirPlusPlus {
            let r = Sys.removeFile(dir + "/maildirfolder")
            if r != 0 && r != ENOENT { throw .from(errno: r, path: dir + "/maildirfolder", operation: .removing) }
        }
        let r = Sys.removeDirectory(dir)
        if r == ENOTEMPTY || r == EEXIST { return false }
        if r != 0 && r != ENOENT { throw .from(errno: r, path: dir, operation: .removing) }
        return true
    }

    // MARK: - Scanning and recovery

    /// Unique part → relative file path for every message file in the folder's `new/` and `cur/`
    /// (dot files ignored). When a unique part is in both, `cur/` wins. A missing folder is empty.
    public func scanUniqueNames(folder: String) throws(MaildirError) -> [String: String] {
        var result: [String: String] = [:]
        for sub in ["new", "cur"] {
            let rel = joinPath(folder, sub)
            guard let listing = try Sys.list(absolutePath(rel)) else { continue }
            for name in listing.names where !name.isDotFile {
                result[Self.uniquePart(ofFileName: name)] = rel + "/" + name
            }
        }
        return result
    }

    /// Removes leftover files in the folder's `tmp/` whose name `owns` accepts (temporary files
    /// are named by the unique name). Returns how many were removed.
    @discardableResult
    public func cleanTmp(folder: String, owns: (String) -> Bool) throws(MaildirError) -> Int {
        let tmp = absolutePath(joinPath(folder, "tmp"))
        guard let listing = try Sys.list(tmp) else { return 0 }
        var removed = 0
        for name in listing.names where !name.isDotFile && owns(name) {
            let r = Sys.removeFile(tmp + "/" + name)
            if r == 0 { removed += 1 } else if r != ENOENT && r != EISDIR {
                throw .from(errno: r, path: tmp + "/" + name, operation: .removing)
            }
        }
        return removed
    }

    // MARK: - Files

    /// Splits `<folder>/<cur|new>/<name>` (or, with `hidden`, `<folder>/tmp/<name>`) into its parts.
    static func splitFile(_ relPath: String, hidden: Bool = false) throws(MaildirError) -> (folder: String, sub: String, name: String) {
        let parts = relPath.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 2, let name = parts.last, !name.isEmpty else {
            throw .invalidArgument("\(relPath) is not a Maildir file path (<folder>/cur/<name> or <folder>/new/<name>)")
        }
        let sub = parts[parts.count - 2]
        guard sub == "cur" || sub == "new" || (hidden && sub == "tmp") else {
            throw .invalidArgument("\(relPath) is not in a cur/ or new/ directory")
        }
        return (parts.dropLast(2).joined(separator: "/"), String(sub), String(name))
    }

    /// Where `hideFile` puts a message file: the same name in its folder's `tmp/`.
    public static func hiddenPath(of relPath: String) throws(MaildirError) -> String {
        let (folder, _, name) = try splitFile(relPath, hidden: true)
        return joinPath(folder, "tmp", name)
    }

    /// Whether a file path is in a folder's `tmp/` (a file `hideFile` took out of view).
    public static func isHidden(_ relPath: String) -> Bool {
        (try? splitFile(relPath, hidden: true).sub) == "tmp"
    }

    /// Finds the current path of a unique name in a folder after a MUA moved or renamed it.
    private func locate(unique: String, folder: String) throws(MaildirError) -> String? {
        try scanUniqueNames(folder: folder)[unique]
    }

    /// Gives a file the info of `flags`, keeping its unique part. A file in `new/` that becomes
    /// seen moves to `cur/`; otherwise it stays in its directory (a MUA may have moved it to
    /// `cur/` without S). If the file was moved or renamed by someone else, it is found again by
    /// its unique part. Returns the new relative path.
    @discardableResult
    public func renameForFlags(_ relPath: String, flags: MessageFlags) throws(MaildirError) -> String {
        let (folder, sub, name) = try Self.splitFile(relPath)
        let unique = Self.uniquePart(ofFileName: name)
        var current = relPath
        for attempt in 0..<2 {
            let currentSub = attempt == 0 ? sub : (try Self.splitFile(current)).sub
            let targetSub = (currentSub == "new" && flags.contains(.seen)) ? "cur" : currentSub
            let target = joinPath(folder, targetSub, Self.fileName(unique: unique, flags: flags))
            if target == current { return target }
            let r = Sys.renamePath(absolutePath(current), absolutePath(target))
            if r == 0 { return target }
            guard r == ENOENT, attempt == 0, let found = try locate(unique: unique, folder: folder) else {
                throw .from(errno: r, path: absolutePath(current), operation: .renaming)
            }
            current = found
        }
        throw .notFound(path: absolutePath(relPath), operation: .renaming)
    }

    /// Takes a message file out of every reader's view at once without deleting it: renames
    /// `<folder>/<cur|new>/<name>` to `hiddenPath(of:)`, `<folder>/tmp/<name>` (Maildir readers
    /// never look into `tmp/`). `moveFile` brings it back into any folder, `removeFile` deletes
    /// it. A file someone renamed is found by its unique part. Returns false when it is gone.
    @discardableResult
    public func hideFile(_ relPath: String) throws(MaildirError) -> Bool {
        let (folder, _, name) = try Self.splitFile(relPath)
        let target = absolutePath(joinPath(folder, "tmp", name))
        var current = relPath
        var ensured = false, relocated = false
        while true {
            let r = Sys.renamePath(absolutePath(current), target)
            if r == 0 { return true }
            guard r == ENOENT else { throw .from(errno: r, path: absolutePath(current), operation: .renaming) }
            if Sys.kind(absolutePath(current)).exists {
                guard !ensured else { throw .notFound(path: target, operation: .renaming) }
                try ensureFolder(folder)   // tmp/ was removed by hand
                ensured = true
            } else {
                guard !relocated, let found = try locate(unique: Self.uniquePart(ofFileName: name), folder: folder) else {
                    return false
                }
                current = found
                relocated = true
            }
        }
    }

    /// Moves a file to another folder (a message moved on the server), keeping its unique part,
    /// into `cur/` if `flags` has S, else `new/`. Creates the destination folder if needed; finds
    /// the source again by its unique part if someone renamed it. The source may be a file
    /// `hideFile` put into `tmp/`; if it is not there, it is looked for in `cur/` and `new/`, then
    /// in the destination's. Within its own folder a file stays in the directory the user's
    /// reader put it in (mutt moves a message it saw to `cur/` without S: old, not new) unless S
    /// itself changes. Returns the new relative path.
    @discardableResult
    public func moveFile(from relPath: String, to folder: String, flags: MessageFlags) throws(MaildirError) -> String {
        let (srcFolder, _, name) = try Self.splitFile(relPath, hidden: true)
        let unique = Self.uniquePart(ofFileName: name)
        let fileName = Self.fileName(unique: unique, flags: flags)
        var current = relPath
        var ensured = false, relocated = false
        while true {
            let target = Self.placement(of: current, in: folder, fileName: fileName, flags: flags)
            if current == target { return target }
            let r = Sys.renamePath(absolutePath(current), absolutePath(target))
            if r == 0 { return target }
            guard r == ENOENT else { throw .from(errno: r, path: absolutePath(current), operation: .renaming) }
            if Sys.kind(absolutePath(current)).exists {
                guard !ensured else { throw .notFound(path: absolutePath(target), operation: .renaming) }
                try ensureFolder(folder)
                ensured = true
            } else {
                // Not in its folder: perhaps already in the destination, moved there by a run
                // that was cut off before it recorded the move.
                var found = relocated ? nil : try locate(unique: unique, folder: srcFolder)
                if found == nil, !relocated, folder != srcFolder { found = try locate(unique: unique, folder: folder) }
                guard let found else { throw .notFound(path: absolutePath(relPath), operation: .renaming) }
                current = found
                relocated = true
            }
        }
    }

    /// Where `moveFile` puts the message whose file is at `current`: in `folder`, named for
    /// `flags`, in `cur/` with S and `new/` without, except that within its own folder a file
    /// stays in the directory it is in unless S itself changes. Pure: `--dry-run` shows it.
    public static func placement(of current: String, in folder: String, flags: MessageFlags) -> String {
        let unique = uniquePart(ofFileName: String(current.split(separator: "/").last ?? Substring(current)))
        return placement(of: current, in: folder, fileName: fileName(unique: unique, flags: flags), flags: flags)
    }

    private static func placement(of current: String, in folder: String, fileName: String, flags: MessageFlags) -> String {
        var sub = flags.contains(.seen) ? "cur" : "new"
        if let split = try? splitFile(current), split.folder == folder,
           MessageFlags(fileName: split.name).contains(.seen) == flags.contains(.seen) {
            sub = split.sub
        }
        return joinPath(folder, sub, fileName)
    }

    /// Where `moveFile` finds a message file to move into `destination`: `relPath`, or the file
    /// with its unique part that a reader renamed it to in its folder's `cur/` or `new/`, or one
    /// already in the destination (moved there by a run cut off before it recorded the move);
    /// nil when there is none.
    public func find(_ relPath: String, movingTo destination: String) throws(MaildirError) -> String? {
        if Sys.kind(absolutePath(relPath)).exists { return relPath }
        let (folder, _, name) = try Self.splitFile(relPath, hidden: true)
        let unique = Self.uniquePart(ofFileName: name)
        if let found = try locate(unique: unique, folder: folder) { return found }
        return destination == folder ? nil : try locate(unique: unique, folder: destination)
    }

    /// Removes a message file (in `cur/` or `new/`, or hidden in `tmp/`). If it was renamed by
    /// someone else, or is not hidden yet, it is found by its unique part in `cur/` and `new/`.
    /// Returns false when there was nothing to remove.
    @discardableResult
    public func removeFile(_ relPath: String) throws(MaildirError) -> Bool {
        let r = Sys.removeFile(absolutePath(relPath))
        if r == 0 { return true }
        guard r == ENOENT else { throw .from(errno: r, path: absolutePath(relPath), operation: .removing) }
        let (folder, _, name) = try Self.splitFile(relPath, hidden: true)
        guard let found = try locate(unique: Self.uniquePart(ofFileName: name), folder: folder) else { return false }
        let r2 = Sys.removeFile(absolutePath(found))
        if r2 == 0 { return true }
        if r2 == ENOENT { return false }
        throw .from(errno: r2, path: absolutePath(found), operation: .removing)
    }

    // MARK: - Hashing

    /// SHA-256 (lowercase hex) of the file at `relPath`, streamed (`sha256(file:)`): what the
    /// scan compares a new file with the files that vanished by.
    public func sha256(_ relPath: String) throws(MaildirError) -> String {
        try Self.sha256(file: absolutePath(relPath)).hex
    }

    /// SHA-256 (lowercase hex) and size of a file, streamed in 128 KiB reads (for `verify`).
    public static func sha256(file path: String) throws(MaildirError) -> (hex: String, size: Int64) {
        let fd = Sys.openFile(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw .from(errno: -fd, path: path, operation: .reading) }
        defer { _ = Sys.closeDescriptor(fd) }
        guard let hasher = SHA256Hasher() else { throw .system(path: path, operation: .reading, errno: ENOMEM) }
        let capacity = 128 * 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buffer.deallocate() }
        var size: Int64 = 0
        while true {
            let n = read(fd, buffer, capacity)
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                throw .from(errno: e, path: path, operation: .reading)
            }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(start: buffer, count: n))
            size += Int64(n)
        }
        return (hasher.finalizeHex(), size)
    }
}

extension String {
    /// A name starting with the byte `.`: dot-files are never ours and never uploaded. Compared
    /// as bytes, not Characters: "." followed by a combining mark is one Character that is not
    /// ".", and `hasPrefix(".")` would miss it.
    var isDotFile: Bool { utf8.first == UInt8(ascii: ".") }
}
