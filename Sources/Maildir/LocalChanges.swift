#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One message file in a folder's `cur/` or `new/`, as the scan for local changes sees it.
public struct LocalFile: Sendable, Equatable {
    /// The unique part of the name (before the first `:`).
    public var unique: String
    /// `<folder>/<cur|new>/<name>`, relative to the root.
    public var file: String
    /// The flags in the name's `:2,` info.
    public var flags: MessageFlags

    public init(unique: String, file: String, flags: MessageFlags) {
        self.unique = unique; self.file = file; self.flags = flags
    }
}

/// A file's bytes, for an upload.
public struct LocalContent: Sendable {
    public var bytes: [UInt8]
    public var sha256: String
    /// Modification time, Unix seconds: a Maildir file's mtime is its message's internal date.
    public var mtime: Int
    /// Inode change time, Unix seconds: when the file got its name here (a program cannot set it).
    public var ctime: Int
    /// Modification time in nanoseconds: a file someone is still writing has it close to now.
    public var mtimeNanoseconds: Int
    /// Whether the file had the same size and mtime after it was read as before: false when
    /// someone wrote to it meanwhile, so `bytes` may be a mix of two states.
    public var unchangedWhileRead: Bool

    public init(bytes: [UInt8], sha256: String, mtime: Int, ctime: Int, mtimeNanoseconds: Int, unchangedWhileRead: Bool) {
        self.bytes = bytes; self.sha256 = sha256; self.mtime = mtime; self.ctime = ctime
        self.mtimeNanoseconds = mtimeNanoseconds; self.unchangedWhileRead = unchangedWhileRead
    }
}

/// Reading folders for local changes (what the user's mail programs did). Deciding what a
/// change means is the sync engine's business; this only reads.
extension Maildir {
    /// Modification times (ns) of the folder's `cur/` and `new/`; nil when either is missing
    /// (a folder that is not there is never read as "everything was deleted"). A rename into or
    /// out of a directory, a new file and an unlink all change its mtime.
    public func folderTimes(_ folder: String) -> (cur: Int, new: Int)? {
        func mtime(_ sub: String) -> Int? {
            var st = stat()
            let r = Sys.call { absolutePath(joinPath(folder, sub)).withCString { stat($0, &st) } }
            guard r == 0, (st.st_mode & S_IFMT) == S_IFDIR else { return nil }
            return Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec)
        }
        guard let cur = mtime("cur"), let new = mtime("new") else { return nil }
        return (cur, new)
    }

    /// Every message file in the folder's `new/` and `cur/`, dot files ignored; a unique part
    /// in both is taken from `cur/`. Nil when `cur/` or `new/` is missing. Files in `tmp/` are
    /// never listed: they are being written.
    public func listFolder(_ folder: String) throws(MaildirError) -> [LocalFile]? {
        var byUnique: [String: LocalFile] = [:]
        for sub in ["new", "cur"] {
            let rel = joinPath(folder, sub)
            guard let listing = try Sys.list(absolutePath(rel)) else { return nil }
            for name in listing.names where !name.isDotFile {
                let unique = Self.uniquePart(ofFileName: name)
                byUnique[unique] = LocalFile(unique: unique, file: rel + "/" + name, flags: MessageFlags(fileName: name))
            }
        }
        return Array(byUnique.values)
    }

    /// Size (bytes) and whether the path is a regular file; nil when it does not exist.
    public func fileSize(_ relPath: String) -> (size: Int, regular: Bool)? {
        var st = stat()
        let r = Sys.call { absolutePath(relPath).withCString { lstat($0, &st) } }
        guard r == 0 else { return nil }
        return (Int(st.st_size), (st.st_mode & S_IFMT) == S_IFREG)
    }

    /// Reads a whole message file (at most `limit` bytes), with its SHA-256 and mtime.
    public func readFile(_ relPath: String, limit: Int) throws(MaildirError) -> LocalContent {
        let path = absolutePath(relPath)
        let fd = Sys.openFile(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 { throw .from(errno: -fd, path: path, operation: .reading) }
        defer { _ = Sys.closeDescriptor(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .from(errno: errno, path: path, operation: .reading) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .invalidArgument("\(path) is not a regular file") }
        guard Int(st.st_size) <= limit else { throw .invalidArgument("\(path) is larger than \(limit) bytes") }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var filled = 0
        while filled < bytes.count {
            let n = bytes.withUnsafeMutableBytes { raw in read(fd, raw.baseAddress.map { $0 + filled }, raw.count - filled) }
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                throw .from(errno: e, path: path, operation: .reading)
            }
            if n == 0 { break }
            filled += n
        }
        bytes.removeSubrange(filled...)
        var after = stat()
        let unchanged = fstat(fd, &after) == 0 && after.st_size == st.st_size && Int(after.st_size) == filled
            && after.st_mtim.tv_sec == st.st_mtim.tv_sec && after.st_mtim.tv_nsec == st.st_mtim.tv_nsec
        return LocalContent(bytes: bytes, sha256: hex(SHA256Hasher.digest(bytes)), mtime: Int(st.st_mtim.tv_sec),
                            ctime: Int(st.st_ctim.tv_sec),
                            mtimeNanoseconds: Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec),
                            unchangedWhileRead: unchanged)
    }
}
