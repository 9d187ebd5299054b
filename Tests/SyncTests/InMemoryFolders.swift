#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
// Testable: the Maildir's internal pure helpers (`splitFile`, `joinPath`, `isDotFile`,
// `MaildirError.from`, `SHA256Hasher`), so that the double follows its rules by calling them.
@testable import Maildir

/// The local folders in memory, for tests of the engine's decisions that need no disk.
///
/// A small file system (directories with an mtime, files with bytes, mtime and ctime) under
/// which each `LocalFolders` method does what `Maildir`'s does, step for step: the same calls in
/// the same order (a rename, and on ENOENT a search by unique part, `ensureFolder` once), with
/// the same errno a POSIX call would give and the same `MaildirError` made of it. What a name
/// means (unique part, flags, `cur/` or `new/`, `tmp/`, dot files, folder names) comes from the
/// Maildir's own helpers, not from copies of them. `InMemoryFoldersTests` runs the same steps
/// against a real `Maildir` and this, and compares everything a caller can see.
///
/// Directory mtimes: a change in a directory sets its mtime to `now`, or one nanosecond past the
/// last when the clock has not moved, so every change shows in `folderTimes` (on disk a change
/// in the same clock tick may not; the scan's settle rule is for that). `now` does not move by
/// itself: set it. The user's side (`write`, `rename`, `remove`, ...) is what a reader, `mv` or
/// `rm` does; those throw the `MaildirError` of the errno they would get.
final class InMemoryFolders: LocalFolders {
    let root: String
    let layout: MaildirLayout
    /// The clock (ns since 1970) that changes are stamped with; by default the time the folders
    /// were made, so that a file written then looks just written, as on disk.
    var now: Int

    struct File {
        var bytes: [UInt8]
        /// Nanoseconds since 1970.
        var mtime: Int
        var ctime: Int
    }

    /// Every directory under the root, "" being the root itself, with its mtime (ns).
    private(set) var directories: [String: Int]
    /// Every file, by its path relative to the root.
    private(set) var files: [String: File] = [:]

    init(root: String = "/in-memory/mail", layout: MaildirLayout = .verbatim,
         now: Int = Int(Date().timeIntervalSince1970 * 1e9)) {
        self.root = root
        self.layout = layout
        self.now = now
        directories = ["": now]
    }

    func folderDirectory(for mailboxPath: String) -> String {
        FolderNames.encode(mailboxPath, layout: layout)
    }

    /// As `Maildir.absolutePath`: for the paths in errors, which are the real one's when the
    /// roots are the same.
    func absolutePath(_ relative: String) -> String {
        relative.isEmpty ? root : (root == "/" ? "/" + relative : root + "/" + relative)
    }

    // MARK: - The file system

    private enum Node {
        case file(File)
        case directory
        /// ENOENT, or ENOTDIR when a parent is a file.
        case missing(Int32)
    }

    private static func parent(_ path: String) -> String {
        path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ""
    }

    /// What `lstat` finds at `path`.
    private func node(_ path: String) -> Node {
        if directories[path] != nil { return .directory }
        if let file = files[path] { return .file(file) }
        var ancestor = path
        while !ancestor.isEmpty {
            ancestor = Self.parent(ancestor)
            if files[ancestor] != nil { return .missing(ENOTDIR) }
            if directories[ancestor] != nil { break }
        }
        return .missing(ENOENT)
    }

    private func exists(_ path: String) -> Bool {
        if case .missing = node(path) { return false }
        return true
    }

    /// The names in a directory (files and directories, dot files too).
    private func entries(_ dir: String) -> [String] {
        let prefix = dir.isEmpty ? "" : dir + "/"
        return (Array(directories.keys) + Array(files.keys)).compactMap { path in
            guard !path.isEmpty, path.hasPrefix(prefix) else { return nil }
            let name = path.dropFirst(prefix.count)
            return name.contains("/") ? nil : String(name)
        }
    }

    /// An entry of `dir` was added, removed or renamed.
    private func changed(_ dir: String) {
        if let mtime = directories[dir] { directories[dir] = max(now, mtime + 1) }
    }

    /// `opendir` and `readdir`, as `Sys.list`: nil when the directory does not exist.
    private func list(_ dir: String) throws(MaildirError) -> [String]? {
        switch node(dir) {
        case .directory: return entries(dir)
        case .missing(ENOENT): return nil
        case .missing(let e): throw .from(errno: e, path: absolutePath(dir), operation: .listing)
        case .file: throw .from(errno: ENOTDIR, path: absolutePath(dir), operation: .listing)
        }
    }

    /// Whether the parent directory of `path` is there: 0, ENOENT or ENOTDIR.
    private func parentError(_ path: String) -> Int32 {
        switch node(Self.parent(path)) {
        case .directory: 0
        case .file: ENOTDIR
        case .missing(let e): e
        }
    }

    /// `mkdir(2)`: 0 or its errno.
    private func mkdir(_ path: String) -> Int32 {
        if exists(path) { return EEXIST }
        let e = parentError(path)
        if e != 0 { return e }
        directories[path] = now
        changed(Self.parent(path))
        return 0
    }

    /// `unlink(2)`.
    private func unlink(_ path: String) -> Int32 {
        switch node(path) {
        case .missing(let e): return e
        case .directory: return EISDIR
        case .file:
            files[path] = nil
            changed(Self.parent(path))
            return 0
        }
    }

    /// `rmdir(2)`.
    private func rmdir(_ path: String) -> Int32 {
        switch node(path) {
        case .missing(let e): return e
        case .file: return ENOTDIR
        case .directory:
            if !entries(path).isEmpty { return ENOTEMPTY }
            directories[path] = nil
            changed(Self.parent(path))
            return 0
        }
    }

    /// `rename(2)`: a file replaces a file, a directory an empty directory; a directory takes
    /// what is under it along.
    private func rename(_ from: String, _ to: String) -> Int32 {
        let source = node(from)
        if case .missing(let e) = source { return e }
        let e = parentError(to)
        if e != 0 { return e }
        if from == to { return 0 }
        switch (source, node(to)) {
        case (.file(var file), .file), (.file(var file), .missing):
            files[from] = nil
            file.ctime = now   // a rename changes the inode's ctime
            files[to] = file
        case (.file, .directory): return EISDIR
        case (.directory, _) where to.hasPrefix(from + "/"): return EINVAL
        case (.directory, .file): return ENOTDIR
        case (.directory, .directory) where !entries(to).isEmpty: return ENOTEMPTY
        case (.directory, _):
            directories[to] = nil
            func moved(_ path: String) -> String? {
                path == from ? to : path.hasPrefix(from + "/") ? to + path.dropFirst(from.count) : nil
            }
            for (path, mtime) in directories { if let new = moved(path) { directories[path] = nil; directories[new] = mtime } }
            for (path, file) in files { if let new = moved(path) { files[path] = nil; files[new] = file } }
        case (.missing, _): return ENOENT
        }
        changed(Self.parent(from))
        changed(Self.parent(to))
        return 0
    }

    // MARK: - What a user does

    /// Writes a file in place (`cat > file`): a new file changes its directory, an existing one
    /// only its own times. `mtime` (seconds) as `touch -d` sets it afterwards.
    func write(_ relPath: String, bytes: [UInt8], mtime: Int? = nil) throws(MaildirError) {
        let path = absolutePath(relPath)
        switch node(relPath) {
        case .directory: throw .from(errno: EISDIR, path: path, operation: .writing)
        case .missing(let e) where e != ENOENT: throw .from(errno: e, path: path, operation: .writing)
        case .missing:
            let e = parentError(relPath)
            if e != 0 { throw .from(errno: e, path: path, operation: .writing) }
            changed(Self.parent(relPath))
        case .file: break
        }
        files[relPath] = File(bytes: bytes, mtime: mtime.map { $0 * 1_000_000_000 } ?? now, ctime: now)
    }

    /// `mv`, within the root.
    func rename(_ from: String, to: String) throws(MaildirError) {
        let r = rename(from, to)
        if r != 0 { throw .from(errno: r, path: absolutePath(from), operation: .renaming) }
    }

    /// `rm` of a file.
    func remove(_ relPath: String) throws(MaildirError) {
        let r = unlink(relPath)
        if r != 0 { throw .from(errno: r, path: absolutePath(relPath), operation: .removing) }
    }

    /// `mkdir`.
    func makeDirectory(_ relPath: String) throws(MaildirError) {
        let r = mkdir(relPath)
        if r != 0 { throw .from(errno: r, path: absolutePath(relPath), operation: .creatingFolder) }
    }

    /// `rm -r` of a directory.
    func removeDirectory(_ relPath: String) throws(MaildirError) {
        guard case .directory = node(relPath), !relPath.isEmpty else {
            throw .notADirectory(path: absolutePath(relPath))
        }
        let prefix = relPath + "/"
        directories = directories.filter { $0.key != relPath && !$0.key.hasPrefix(prefix) }
        files = files.filter { !$0.key.hasPrefix(prefix) }
        changed(Self.parent(relPath))
    }

    /// Everything under the root: `"<dir>/"` for a directory, `"<file> <bytes>"` for a file;
    /// sorted. What `InMemoryFoldersTests` compares with the disk.
    var tree: [String] {
        (directories.keys.filter { !$0.isEmpty }.map { $0 + "/" }
            + files.map { "\($0.key) \(String(decoding: $0.value.bytes, as: UTF8.self))" }).sorted()
    }

    // MARK: - Folders (Maildir.swift)

    func ensureFolder(_ folder: String) throws(MaildirError) {
        try makeDirectories(folder)
        for sub in ["cur", "new", "tmp"] {
            try makeDirectory(joinPath(folder, sub), parents: false)
        }
        if layout == .maildirPlusPlus && !folder.isEmpty {
            let marker = joinPath(folder, "maildirfolder")
            switch node(marker) {
            case .missing(ENOENT): files[marker] = File(bytes: [], mtime: now, ctime: now); changed(folder)
            case .missing(let e): throw .from(errno: e, path: absolutePath(marker), operation: .creatingFolder)
            case .file, .directory: break   // O_EXCL: EEXIST
            }
        }
    }

    /// `mkdir -p`, as `Maildir.makeDirectories`.
    private func makeDirectories(_ path: String) throws(MaildirError) {
        try makeDirectory(path, parents: true)
    }

    private func makeDirectory(_ path: String, parents: Bool) throws(MaildirError) {
        if path.isEmpty { return }   // the root is there
        let r = mkdir(path)
        if r == 0 { return }
        if r == EEXIST {
            guard case .directory = node(path) else { throw .notADirectory(path: absolutePath(path)) }
            return
        }
        guard parents, r == ENOENT, path.contains("/") else {
            throw .from(errno: r, path: absolutePath(path), operation: .creatingFolder)
        }
        try makeDirectory(Self.parent(path), parents: true)
        try makeDirectory(path, parents: false)
    }

    func renameFolder(from: String, to: String) throws(MaildirError) {
        guard !from.isEmpty, !to.isEmpty else {
            throw .invalidArgument("the maildir++ root (INBOX) cannot be renamed")
        }
        if from == to { return }
        try makeDirectories(Self.parent(to))
        switch rename(from, to) {
        case 0: break
        case EEXIST, ENOTEMPTY: throw .folderExists(path: absolutePath(to))
        case ENOENT: throw .notFound(path: absolutePath(from), operation: .renaming)
        case EINVAL: throw .invalidArgument("cannot move folder \(from) into itself (\(to))")
        case let r: throw .from(errno: r, path: absolutePath(from), operation: .renaming)
        }
    }

    @discardableResult
    func removeFolder(_ folder: String, owns: (String) -> Bool) throws(MaildirError) -> Bool {
        var foreign = false
        for sub in ["cur", "new", "tmp"] {
            let dir = joinPath(folder, sub)
            guard let names = try list(dir) else { continue }
            for name in names {
                if name.isDotFile || !owns(Maildir.uniquePart(ofFileName: name)) { foreign = true; continue }
                let r = unlink(joinPath(dir, name))
                if r == EISDIR { foreign = true; continue }
                if r != 0 && r != ENOENT { throw .from(errno: r, path: absolutePath(joinPath(dir, name)), operation: .removing) }
            }
        }
        if foreign || folder.isEmpty { return false }
        for sub in ["cur", "new", "tmp"] {
            let r = rmdir(joinPath(folder, sub))
            if r == ENOTEMPTY || r == EEXIST { return false }
            if r != 0 && r != ENOENT { throw .from(errno: r, path: absolutePath(joinPath(folder, sub)), operation: .removing) }
        }
        guard let rest = try list(folder) else { return true }
        if rest.contains(where: { !(layout == .maildirPlusPlus && $0 == "maildirfolder") }) { return false }
        if layout == .maildirPlusPlus {
            let marker = joinPath(folder, "maildirfolder")
            let r = unlink(marker)
            if r != 0 && r != ENOENT { throw .from(errno: r, path: absolutePath(marker), operation: .removing) }
        }
        let r = rmdir(folder)
        if r == ENOTEMPTY || r == EEXIST { return false }
        if r != 0 && r != ENOENT { throw .from(errno: r, path: absolutePath(folder), operation: .removing) }
        return true
    }

    func scanUniqueNames(folder: String) throws(MaildirError) -> [String: String] {
        var result: [String: String] = [:]
        for sub in ["new", "cur"] {
            let rel = joinPath(folder, sub)
            guard let names = try list(rel) else { continue }
            for name in names where !name.isDotFile {
                result[Maildir.uniquePart(ofFileName: name)] = rel + "/" + name
            }
        }
        return result
    }

    @discardableResult
    func cleanTmp(folder: String, owns: (String) -> Bool) throws(MaildirError) -> Int {
        let tmp = joinPath(folder, "tmp")
        guard let names = try list(tmp) else { return 0 }
        var removed = 0
        for name in names where !name.isDotFile && owns(name) {
            let r = unlink(joinPath(tmp, name))
            if r == 0 { removed += 1 } else if r != ENOENT && r != EISDIR {
                throw .from(errno: r, path: absolutePath(joinPath(tmp, name)), operation: .removing)
            }
        }
        return removed
    }

    // MARK: - Files (Maildir.swift)

    @discardableResult
    func hideFile(_ relPath: String) throws(MaildirError) -> Bool {
        let (folder, _, name) = try Maildir.splitFile(relPath)
        let target = joinPath(folder, "tmp", name)
        var current = relPath
        var ensured = false, relocated = false
        while true {
            let r = rename(current, target)
            if r == 0 { return true }
            guard r == ENOENT else { throw .from(errno: r, path: absolutePath(current), operation: .renaming) }
            if exists(current) {
                guard !ensured else { throw .notFound(path: absolutePath(target), operation: .renaming) }
                try ensureFolder(folder)
                ensured = true
            } else {
                guard !relocated, let found = try scanUniqueNames(folder: folder)[Maildir.uniquePart(ofFileName: name)] else {
                    return false
                }
                current = found
                relocated = true
            }
        }
    }

    @discardableResult
    func moveFile(from relPath: String, to folder: String, flags: MessageFlags) throws(MaildirError) -> String {
        let (srcFolder, _, name) = try Maildir.splitFile(relPath, hidden: true)
        let unique = Maildir.uniquePart(ofFileName: name)
        var current = relPath
        var ensured = false, relocated = false
        while true {
            // (`current` always has `unique`: this is the placement `Maildir.moveFile` uses.)
            let target = Maildir.placement(of: current, in: folder, flags: flags)
            if current == target { return target }
            let r = rename(current, target)
            if r == 0 { return target }
            guard r == ENOENT else { throw .from(errno: r, path: absolutePath(current), operation: .renaming) }
            if exists(current) {
                guard !ensured else { throw .notFound(path: absolutePath(target), operation: .renaming) }
                try ensureFolder(folder)
                ensured = true
            } else {
                var found = relocated ? nil : try scanUniqueNames(folder: srcFolder)[unique]
                if found == nil, !relocated, folder != srcFolder { found = try scanUniqueNames(folder: folder)[unique] }
                guard let found else { throw .notFound(path: absolutePath(relPath), operation: .renaming) }
                current = found
                relocated = true
            }
        }
    }

    func find(_ relPath: String, movingTo destination: String) throws(MaildirError) -> String? {
        if exists(relPath) { return relPath }
        let (folder, _, name) = try Maildir.splitFile(relPath, hidden: true)
        let unique = Maildir.uniquePart(ofFileName: name)
        if let found = try scanUniqueNames(folder: folder)[unique] { return found }
        return destination == folder ? nil : try scanUniqueNames(folder: destination)[unique]
    }

    @discardableResult
    func removeFile(_ relPath: String) throws(MaildirError) -> Bool {
        let r = unlink(relPath)
        if r == 0 { return true }
        guard r == ENOENT else { throw .from(errno: r, path: absolutePath(relPath), operation: .removing) }
        let (folder, _, name) = try Maildir.splitFile(relPath, hidden: true)
        guard let found = try scanUniqueNames(folder: folder)[Maildir.uniquePart(ofFileName: name)] else { return false }
        let r2 = unlink(found)
        if r2 == 0 { return true }
        if r2 == ENOENT { return false }
        throw .from(errno: r2, path: absolutePath(found), operation: .removing)
    }

    // MARK: - Reading (LocalChanges.swift)

    func folderTimes(_ folder: String) -> (cur: Int, new: Int)? {
        guard let cur = directories[joinPath(folder, "cur")], let new = directories[joinPath(folder, "new")] else { return nil }
        return (cur, new)
    }

    func listFolder(_ folder: String) throws(MaildirError) -> [LocalFile]? {
        var byUnique: [String: LocalFile] = [:]
        for sub in ["new", "cur"] {
            let rel = joinPath(folder, sub)
            guard let names = try list(rel) else { return nil }
            for name in names where !name.isDotFile {
                let unique = Maildir.uniquePart(ofFileName: name)
                byUnique[unique] = LocalFile(unique: unique, file: rel + "/" + name, flags: MessageFlags(fileName: name))
            }
        }
        return Array(byUnique.values)
    }

    func fileSize(_ relPath: String) -> (size: Int, regular: Bool)? {
        switch node(relPath) {
        case .file(let file): (file.bytes.count, true)
        case .directory: (0, false)
        case .missing: nil
        }
    }

    func readFile(_ relPath: String, limit: Int) throws(MaildirError) -> LocalContent {
        let path = absolutePath(relPath)
        switch node(relPath) {
        case .missing(let e): throw .from(errno: e, path: path, operation: .reading)
        case .directory: throw .invalidArgument("\(path) is not a regular file")
        case .file(let file):
            guard file.bytes.count <= limit else { throw .invalidArgument("\(path) is larger than \(limit) bytes") }
            return LocalContent(bytes: file.bytes, sha256: hex(SHA256Hasher.digest(file.bytes)),
                                mtime: file.mtime / 1_000_000_000, ctime: file.ctime / 1_000_000_000,
                                mtimeNanoseconds: file.mtime, unchangedWhileRead: true)
        }
    }

    func sha256(_ relPath: String) throws(MaildirError) -> String {
        let path = absolutePath(relPath)
        switch node(relPath) {
        case .missing(let e): throw .from(errno: e, path: path, operation: .reading)
        case .directory: throw .from(errno: EISDIR, path: path, operation: .reading)   // read(2) of a directory
        case .file(let file): return hex(SHA256Hasher.digest(file.bytes))
        }
    }
}
