#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Lock

/// Thin, checked wrappers around the system calls the module uses. Every wrapper retries on
/// EINTR and turns a failure into a `MaildirError` that names the path and the operation.
enum Sys {
    static let fileMode: mode_t = 0o600
    static let dirMode: mode_t = 0o700

    static var lastErrno: Int32 { errno }

    /// `open(2)` with EINTR retry. Returns the descriptor or `-errno`.
    static func openFile(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 {
        while true {
            let fd = path.withCString { open($0, flags, mode) }
            if fd >= 0 { return fd }
            let e = errno
            if e != EINTR { return -e }
        }
    }

    /// `fsync(2)` with EINTR retry. Returns 0 or errno.
    static func syncDescriptor(_ fd: Int32) -> Int32 {
        call { fsync(fd) }
    }

    /// `close(2)`; EINTR is not retried (on Linux the descriptor is gone either way). Returns 0 or errno.
    static func closeDescriptor(_ fd: Int32) -> Int32 {
        if close(fd) == 0 { return 0 }
        let e = errno
        return e == EINTR ? 0 : e
    }

    /// Returns 0 or errno.
    static func call(_ body: () -> Int32) -> Int32 {
        while true {
            if body() == 0 { return 0 }
            let e = errno
            if e != EINTR { return e }
        }
    }

    static func makeDirectory(_ path: String, _ mode: mode_t) -> Int32 {
        call { path.withCString { mkdir($0, mode) } }
    }
    static func changeMode(_ path: String, _ mode: mode_t) -> Int32 {
        call { path.withCString { chmod($0, mode) } }
    }
    static func removeDirectory(_ path: String) -> Int32 {
        call { path.withCString { rmdir($0) } }
    }
    static func removeFile(_ path: String) -> Int32 {
        let r = call { path.withCString { unlink($0) } }
        if r == 0 { FileTrace.note("U", path) }
        return r
    }
    static func renamePath(_ from: String, _ to: String) -> Int32 {
        let r = call { from.withCString { f in to.withCString { t in rename(f, t) } } }
        if r == 0 { FileTrace.note("R", from, to) }
        return r
    }
    /// `renameat2(…, RENAME_NOREPLACE)`: one directory operation that never overwrites.
    /// Returns 0, `-1` when the C library or the file system lacks it (use link + unlink), or errno.
    static func renameNoReplace(_ from: String, _ to: String) -> Int32 {
        guard let renameat2 = renameat2Function else { return -1 }
        let r = call { from.withCString { f in to.withCString { t in renameat2(AT_FDCWD, f, AT_FDCWD, t, 1 /* RENAME_NOREPLACE */) } } }
        if r == 0 { FileTrace.note("R", from, to) }
        return r == EINVAL || r == ENOSYS || r == ENOTSUP ? -1 : r
    }

    /// A C library function that Swift's Glibc module does not import (renameat2 since glibc
    /// 2.28, syncfs, fstatfs), looked up by name; nil where the C library lacks it.
    private static func cFunction<F>(_ name: String, as type: F.Type) -> F? {
        dlsym(UnsafeMutableRawPointer(bitPattern: 0), name).map { unsafeBitCast($0, to: type) }
    }

    private static let renameat2Function = cFunction("renameat2",
        as: (@convention(c) (Int32, UnsafePointer<CChar>?, Int32, UnsafePointer<CChar>?, UInt32) -> Int32).self)

    /// `syncfs(2)` on the file system of `fd`, with EINTR retry. Returns 0 or errno.
    static func syncFilesystem(_ fd: Int32) -> Int32 {
        guard let syncfs = syncfsFunction else { return ENOSYS }
        let r = call { syncfs(fd) }
        if r == 0 { FileTrace.note("S") }
        return r
    }

    /// Whether one `syncfs` may stand in for an fsync of each file of a batch on the file system
    /// of `fd`. That needs Linux 5.8 or later, where syncfs reports write-back errors (older
    /// kernels return 0 whatever happened), and a file system whose sync flushes the device
    /// the way its fsync does: ext2/3/4, XFS and btrfs (measured in `contrib/bench/README.md`),
    /// and tmpfs (nothing to flush). Anything else (NFS, FUSE, overlayfs, ZFS, ...) keeps one
    /// fsync per file.
    static func syncsFilesystemForBatch(_ fd: Int32) -> Bool {
        guard kernelReportsSyncfsErrors, let fstatfs = fstatfsFunction else { return false }
        // `struct statfs` starts with `f_type`: read its first 32 bits (the magic numbers fit,
        // and on a big-endian ABI with a 64-bit f_type this reads 0: no batch, never unsafe).
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 512, alignment: 16)
        defer { buffer.deallocate() }
        guard call({ fstatfs(fd, buffer) }) == 0 else { return false }
        let magic = buffer.load(as: UInt32.self)
        return [0xEF53 /* ext2/3/4 */, 0x5846_5342 /* XFS */, 0x9123_683E /* btrfs */, 0x0102_1994 /* tmpfs */].contains(magic)
    }

    private static let kernelReportsSyncfsErrors: Bool = {
        #if os(Linux)
        var u = utsname()
        guard uname(&u) == 0 else { return false }
        let release = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        guard parts.count == 2 else { return false }
        return (parts[0], parts[1]) >= (5, 8)
        #else
        return false
        #endif
    }()

    private static let syncfsFunction = cFunction("syncfs", as: (@convention(c) (Int32) -> Int32).self)
    private static let fstatfsFunction = cFunction("fstatfs", as: (@convention(c) (Int32, UnsafeMutableRawPointer) -> Int32).self)

    /// Whether files created with mode 0600 come out as 0600 (the umask clears none of those
    /// bits), so no `fchmod` is needed. Read once; wdsync never changes its umask.
    static let umaskKeepsFileMode: Bool = {
        let old = umask(0o077)
        umask(old)
        return old & 0o600 == 0
    }()

    static func linkPath(_ from: String, _ to: String) -> Int32 {
        let r = call { from.withCString { f in to.withCString { t in link(f, t) } } }
        if r == 0 { FileTrace.note("R", from, to) }
        return r
    }

    /// `lstat`-based kind of a path: nil when it does not exist, otherwise whether it is a directory.
    static func kind(_ path: String) -> (exists: Bool, isDirectory: Bool, errno: Int32) {
        var st = stat()
        let r = call { path.withCString { lstat($0, &st) } }
        if r == ENOENT || r == ENOTDIR { return (false, false, 0) }
        if r != 0 { return (false, false, r) }
        return (true, (st.st_mode & S_IFMT) == S_IFDIR, 0)
    }

    /// Names in a directory, without `.` and `..`. Names that are not valid UTF-8 cannot have
    /// been written by wdsync; they are counted in `foreign` and not returned.
    /// Returns nil when the directory does not exist.
    static func list(_ path: String) throws(MaildirError) -> (names: [String], foreign: Int)? {
        guard let dir = path.withCString({ opendir($0) }) else {
            let e = errno
            if e == ENOENT { return nil }
            throw MaildirError.from(errno: e, path: path, operation: .listing)
        }
        defer { closedir(dir) }
        var names: [String] = []
        var foreign = 0
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                let e = errno
                if e != 0 { throw MaildirError.from(errno: e, path: path, operation: .listing) }
                break
            }
            let name: String? = withUnsafePointer(to: &entry.pointee.d_name) { tuple in
                tuple.withMemoryRebound(to: UInt8.self, capacity: 256) { cName in
                    FolderNames.string(validatingUTF8: Array(UnsafeBufferPointer(start: cName, count: strlen(UnsafeRawPointer(cName).assumingMemoryBound(to: CChar.self)))))
                }
            }
            guard let name else { foreign += 1; continue }
            if name == "." || name == ".." { continue }
            names.append(name)
        }
        return (names, foreign)
    }

    static func describe(_ e: Int32) -> String {
        guard let s = strerror(e) else { return "error \(e)" }
        return String(cString: s)
    }
}

/// Joins relative path pieces with `/`, skipping empty pieces ("" is the root folder).
func joinPath(_ parts: String...) -> String {
    var out = ""
    for p in parts where !p.isEmpty {
        if out.isEmpty { out = p } else { out += "/" + p }
    }
    return out
}

/// The message bodies, directory operations and durability barriers of a run, one line each,
/// appended to the file given to `start` (none: nothing is recorded). The crash-state tests
/// replay them under a power-loss model (docs/durability.md): `W path size` a message's body
/// written (not yet durable), `F path` that file fsynced, `R from to` a rename (or hard link),
/// `U path` an unlink, `D dir` a directory fsync, `S` a syncfs; the cache adds `C` at each
/// commit. Paths are absolute; no file contents or secrets are written.
public enum FileTrace {
    private static let file = Mutex<Int32>(-1)

    /// Starts recording into `path` (the tests' `WDSYNC_FS_TRACE`, which the executable reads
    /// and the engine is given: nothing deeper reads the environment). One trace per process:
    /// a later call, for another account, leaves it as it is.
    public static func start(path: String) {
        guard !path.isEmpty else { return }
        file.withLock { fd in
            if fd < 0 { fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600) }
        }
    }

    /// Whether a trace is being written.
    public static var isOn: Bool { file.withLock { $0 } >= 0 }

    /// Appends one line in a single write (O_APPEND keeps lines whole across threads).
    public static func note(_ fields: String...) {
        let fd = file.withLock { $0 }
        guard fd >= 0 else { return }
        let line = Array((fields.joined(separator: "\t") + "\n").utf8)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }
}
