#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The `write(2)` used by deliveries; tests substitute one that fails (ENOSPC) on demand.
struct FileIO: Sendable {
    var write: @Sendable (Int32, UnsafeRawPointer, Int) -> Int

    static let system = FileIO(write: { fd, buffer, count in
        #if canImport(Darwin)
        Darwin.write(fd, buffer, count)
        #elseif canImport(Musl)
        Musl.write(fd, buffer, count)
        #else
        Glibc.write(fd, buffer, count)
        #endif
    })
}

/// The result of a committed delivery.
public struct Delivered: Sendable, Hashable {
    /// The file, relative to the Maildir root: `<folder>/new/<unique>:2,` or `<folder>/cur/…`.
    public let relativePath: String
    /// The unique part of the file name (never changes after delivery).
    public let unique: String
    /// SHA-256 of the bytes written, lowercase hex.
    public let sha256: String
    /// Number of bytes written.
    public let size: Int64
}

extension Maildir {
    /// Starts a delivery of one message into `folder` (created if missing) under `unique` (see
    /// `uniqueName(time:key:host:)`). The body is streamed with `write` and published with
    /// `commit`; a failure at any step, `abort()`, or dropping the object removes the temporary
    /// file, so a partial message never appears in `cur/` or `new/`. A leftover `tmp/<unique>`
    /// from an interrupted earlier attempt is replaced (the unique name is ours).
    public func beginDelivery(folder: String, unique: String) throws(MaildirError) -> PendingDelivery {
        try Self.validateUnique(unique)
        let tmpRel = joinPath(folder, "tmp", unique)
        let tmpPath = absolutePath(tmpRel)
        let flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC
        var fd = Sys.openFile(tmpPath, flags, Sys.fileMode)
        if fd == -ENOENT {
            try ensureFolder(folder)
            fd = Sys.openFile(tmpPath, flags, Sys.fileMode)
        }
        if fd == -EEXIST {
            let r = Sys.removeFile(tmpPath)
            if r != 0 && r != ENOENT { throw .from(errno: r, path: tmpPath, operation: .creatingTemporaryFile) }
            fd = Sys.openFile(tmpPath, flags, Sys.fileMode)
        }
        if fd < 0 { throw .from(errno: -fd, path: tmpPath, operation: .creatingTemporaryFile) }
        // The creation mode is filtered by the umask; make it exactly 0600 if the umask took bits.
        if !Sys.umaskKeepsFileMode && fchmod(fd, Sys.fileMode) != 0 {
            let e = errno
            _ = Sys.closeDescriptor(fd)
            _ = Sys.removeFile(tmpPath)
            throw .from(errno: e, path: tmpPath, operation: .creatingTemporaryFile)
        }
        guard let hasher = SHA256Hasher() else {
            _ = Sys.closeDescriptor(fd)
            _ = Sys.removeFile(tmpPath)
            throw .system(path: tmpPath, operation: .creatingTemporaryFile, errno: ENOMEM)
        }
        return PendingDelivery(maildir: self, folder: folder, unique: unique, tmpPath: tmpPath, fd: fd, hasher: hasher)
    }

    /// Delivers a message held in memory: `beginDelivery`, one `write`, `commit`.
    @discardableResult
    public func deliver(folder: String, unique: String, contents: UnsafeRawBufferPointer,
                        flags: MaildirFlags, mtime: Int?) throws(MaildirError) -> Delivered {
        let pending = try beginDelivery(folder: folder, unique: unique)
        try pending.write(contents)
        return try pending.commit(flags: flags, mtime: mtime)
    }
}

/// One message being written to `tmp/`. Not thread-safe: use it from one task. Write the body
/// in chunks of any size (they are gathered into a 128 KiB buffer, large chunks are written
/// directly), then `commit` or `abort`.
public final class PendingDelivery {
    public let folder: String
    public let unique: String
    private let maildir: Maildir
    private let tmpPath: String
    private var fd: Int32
    private let hasher: SHA256Hasher
    private var size: Int64 = 0
    private static let capacity = 128 * 1024
    private let buffer: UnsafeMutableRawPointer
    private var buffered = 0

    init(maildir: Maildir, folder: String, unique: String, tmpPath: String, fd: Int32, hasher: SHA256Hasher) {
        self.maildir = maildir
        self.folder = folder
        self.unique = unique
        self.tmpPath = tmpPath
        self.fd = fd
        self.hasher = hasher
        self.buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.capacity, alignment: 16)
    }

    deinit {
        discard()
        buffer.deallocate()
    }

    /// Bytes accepted so far.
    public var bytesWritten: Int64 { size }

    /// Appends a chunk of the message.
    public func write(_ chunk: UnsafeRawBufferPointer) throws(MaildirError) {
        guard fd >= 0 else { throw .deliveryClosed(path: tmpPath) }
        guard let base = chunk.baseAddress, chunk.count > 0 else { return }
        hasher.update(chunk)
        size += Int64(chunk.count)
        if buffered + chunk.count <= Self.capacity {
            (buffer + buffered).copyMemory(from: base, byteCount: chunk.count)
            buffered += chunk.count
            if buffered == Self.capacity { try flush() }
            return
        }
        try flush()
        if chunk.count >= Self.capacity {
            try writeAll(base, chunk.count)
        } else {
            buffer.copyMemory(from: base, byteCount: chunk.count)
            buffered = chunk.count
        }
    }

    /// Appends bytes (convenience for small pieces).
    public func write(_ bytes: [UInt8]) throws(MaildirError) {
        var failure: MaildirError?
        bytes.withUnsafeBytes { raw in
            do throws(MaildirError) { try write(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Publishes the message: flush, set atime and mtime to `mtime` (seconds since the epoch,
    /// the message's internal date; nil keeps the current time), fsync, close, then move
    /// `tmp/<unique>` to `cur/<unique>:2,<flags>` if `flags` has S, else `new/<unique>:2,<flags>`
    /// with `renameat2(RENAME_NOREPLACE)` (where the C library or file system lacks it: hard-link
    /// then unlink, and without hard links check-then-rename). An existing target is never
    /// overwritten: if it holds exactly these bytes the delivery is already done and succeeds,
    /// otherwise it fails with `.alreadyExists`. The directory entry is made durable by
    /// `Maildir.syncFolder`, once per batch.
    public func commit(flags: MaildirFlags, mtime: Int?) throws(MaildirError) -> Delivered {
        guard fd >= 0 else { throw .deliveryClosed(path: tmpPath) }
        do throws(MaildirError) {
            try flush()
            // Times first, so the one fsync makes them durable with the data.
            if let mtime {
                var times = [timespec(tv_sec: time_t(mtime), tv_nsec: 0), timespec(tv_sec: time_t(mtime), tv_nsec: 0)]
                if futimens(fd, &times) != 0 {
                    throw MaildirError.from(errno: errno, path: tmpPath, operation: .settingTimes)
                }
            }
            let s = Sys.syncDescriptor(fd)
            if s != 0 { throw MaildirError.from(errno: s, path: tmpPath, operation: .syncing) }
            let c = Sys.closeDescriptor(fd)
            fd = -1
            if c != 0 { throw MaildirError.from(errno: c, path: tmpPath, operation: .closing) }
            let rel = joinPath(folder, flags.contains(.seen) ? "cur" : "new", Maildir.fileName(unique: unique, flags: flags))
            let target = maildir.absolutePath(rel)
            let moved = Sys.renameNoReplace(tmpPath, target)
            let l = moved == -1 ? Sys.linkPath(tmpPath, target) : moved
            switch l {
            case 0 where moved == 0:
                break
            case 0:
                _ = Sys.removeFile(tmpPath)
            case EEXIST:
                // The same message delivered before under the same name (a run that was killed
                // before it recorded the file): keep that file. Anything else is not overwritten.
                let hash = hasher.finalizeHex()
                if let existing = try? Maildir.sha256(file: target), existing.hex == hash, existing.size == size {
                    _ = Sys.removeFile(tmpPath)
                    fd = -2
                    return Delivered(relativePath: rel, unique: unique, sha256: hash, size: size)
                }
                throw MaildirError.alreadyExists(path: target)
            case EPERM, ENOTSUP, EOPNOTSUPP, ENOSYS, EMLINK:
                // No hard links here: check, then rename (the account lock excludes other writers).
                if Sys.kind(target).exists { throw MaildirError.alreadyExists(path: target) }
                let r = Sys.renamePath(tmpPath, target)
                if r != 0 { throw MaildirError.from(errno: r, path: target, operation: .delivering) }
            default:
                throw MaildirError.from(errno: l, path: target, operation: .delivering)
            }
            fd = -2  // published: the tmp name is gone and must not be unlinked later
            return Delivered(relativePath: rel, unique: unique, sha256: hasher.finalizeHex(), size: size)
        } catch {
            discard()
            throw error
        }
    }

    /// Abandons the delivery and removes the temporary file. Safe to call more than once.
    public func abort() { discard() }

    private func discard() {
        if fd >= 0 {
            _ = Sys.closeDescriptor(fd)
            fd = -1
            _ = Sys.removeFile(tmpPath)
        } else if fd == -1 {
            // Closed in commit but not published (or already published: the tmp name is gone).
            _ = Sys.removeFile(tmpPath)
        }
        fd = -2
    }

    private func flush() throws(MaildirError) {
        guard buffered > 0 else { return }
        let n = buffered
        buffered = 0
        try writeAll(buffer, n)
    }

    /// Writes everything, retrying on EINTR and short writes; any failure removes the tmp file.
    private func writeAll(_ base: UnsafeRawPointer, _ count: Int) throws(MaildirError) {
        var done = 0
        while done < count {
            let n = maildir.io.write(fd, base + done, count - done)
            if n > 0 { done += n; continue }
            let e = n < 0 ? errno : EIO
            if n < 0 && (e == EINTR || e == EAGAIN) { continue }
            discard()
            throw .from(errno: e, path: tmpPath, operation: .writing)
        }
    }
}
