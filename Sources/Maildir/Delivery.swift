#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The `write(2)` used by deliveries and the `syncfs(2)` of a batch (returns 0 or errno); tests
/// substitute ones that fail (ENOSPC, EIO) on demand.
struct FileIO: Sendable {
    var write: @Sendable (Int32, UnsafeRawPointer, Int) -> Int
    var syncFilesystem: @Sendable (Int32) -> Int32 = Sys.syncFilesystem

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

/// A message complete in `tmp/`, closed, waiting for `Maildir.publish` to rename it into place.
/// One that is never published (a killed process) leaves its tmp file behind, which the next
/// export's recovery removes, and a later delivery under the same unique name replaces.
public struct SealedDelivery: Sendable {
    let tmpPath: String
    /// Whether the body is durable on its own (fsynced), rather than by its batch's sync.
    let synced: Bool
    /// What publishing it yields.
    public let delivered: Delivered
}

/// One durability barrier for many deliveries: bodies sealed with a batch are made durable
/// together by one `syncfs` when they are published (`Maildir.publish(_:batch:)`), in place of
/// one fsync each. A file system flushes many files at once for about the price of one fsync;
/// per file, the device flush and the small writes are paid again and again (the measurements
/// are in `contrib/bench/README.md`). Only where that is as safe (`Sys.syncsFilesystemForBatch`)
/// and only for files on the same device as the Maildir's root (`covers`); elsewhere `seal`
/// fsyncs. Create it before the first delivery it covers: syncfs reports the write-back errors
/// seen since its descriptor was opened.
public final class DeliveryBatch: Sendable {
    let fd: Int32
    private let device: UInt64

    /// Nil where one sync cannot stand in for each file's fsync.
    public init?(maildir: Maildir) {
        let fd = Sys.openFile(maildir.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        var st = stat()
        guard fstat(fd, &st) == 0, Sys.syncsFilesystemForBatch(fd) else { _ = Sys.closeDescriptor(fd); return nil }
        self.fd = fd
        self.device = UInt64(st.st_dev)
    }

    deinit { _ = Sys.closeDescriptor(fd) }

    /// Whether the open file `fd` lies on the file system this batch syncs.
    func covers(_ fd: Int32) -> Bool {
        var st = stat()
        return fstat(fd, &st) == 0 && UInt64(st.st_dev) == device
    }

    /// Whether the directory at `path` lies on the file system this batch syncs.
    func covers(path: String) -> Bool {
        var st = stat()
        return path.withCString { stat($0, &st) } == 0 && UInt64(st.st_dev) == device
    }
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

    /// Publishes a delivery finished with `PendingDelivery.seal`: moves `tmp/<unique>` to
    /// `cur/<unique>:2,<flags>` if the flags have S, else `new/<unique>:2,<flags>`, with
    /// `renameat2(RENAME_NOREPLACE)` (where the C library or file system lacks it: hard-link then
    /// unlink, and without hard links check-then-rename). An existing target is never
    /// overwritten: if it holds exactly these bytes the delivery is already done and succeeds,
    /// otherwise it fails with `.alreadyExists`. On failure the tmp file is removed. The body
    /// must be durable first: sealed without a batch, or its batch synced (`publish(_:batch:)`).
    public func publish(_ sealed: SealedDelivery) throws(MaildirError) -> Delivered {
        let delivered = sealed.delivered
        let target = absolutePath(delivered.relativePath)
        let moved = Sys.renameNoReplace(sealed.tmpPath, target)
        let l = moved == -1 ? Sys.linkPath(sealed.tmpPath, target) : moved
        switch l {
        case 0:
            if moved != 0 { _ = Sys.removeFile(sealed.tmpPath) }
            return delivered
        case EEXIST:
            _ = Sys.removeFile(sealed.tmpPath)
            // The same message delivered before under the same name (a run that was killed
            // before it recorded the file): keep that file. Anything else is not overwritten.
            if let existing = try? Maildir.sha256(file: target), existing.hex == delivered.sha256, existing.size == delivered.size {
                return delivered
            }
            throw .alreadyExists(path: target)
        case EPERM, ENOTSUP, EOPNOTSUPP, ENOSYS, EMLINK:
            // No hard links here: check, then rename (the account lock excludes other writers).
            let r = Sys.kind(target).exists ? EEXIST : Sys.renamePath(sealed.tmpPath, target)
            if r == 0 { return delivered }
            _ = Sys.removeFile(sealed.tmpPath)
            throw r == EEXIST ? .alreadyExists(path: target) : .from(errno: r, path: target, operation: .delivering)
        default:
            _ = Sys.removeFile(sealed.tmpPath)
            throw .from(errno: l, path: target, operation: .delivering)
        }
    }

    /// Publishes many sealed deliveries: one `syncfs` through `batch` makes every body that
    /// relies on it durable, then each is renamed into place (`publish(_:)`). Results come in
    /// the order given; when the sync fails, every delivery that relied on it fails with that
    /// error and its tmp file is removed.
    public func publish(_ sealed: [SealedDelivery], batch: DeliveryBatch?) -> [Result<Delivered, MaildirError>] {
        var failed: MaildirError?
        if let batch, sealed.contains(where: { !$0.synced }) {
            let r = io.syncFilesystem(batch.fd)
            if r != 0 { failed = .from(errno: r, path: root, operation: .syncing) }
        }
        return sealed.map { one in
            if let failed, !one.synced {
                _ = Sys.removeFile(one.tmpPath)
                return .failure(failed)
            }
            return Result { () throws(MaildirError) in try publish(one) }
        }
    }

    /// Delivers a message held in memory: `beginDelivery`, one `write`, `commit`.
    @discardableResult
    public func deliver(folder: String, unique: String, contents: UnsafeRawBufferPointer,
                        flags: MessageFlags, mtime: Int?) throws(MaildirError) -> Delivered {
        let pending = try beginDelivery(folder: folder, unique: unique)
        try pending.write(contents)
        return try pending.commit(flags: flags, mtime: mtime)
    }
}

/// One message being written to `tmp/`. Not thread-safe: use it from one task. Write the body
/// in chunks of any size (they are gathered into a 128 KiB buffer, large chunks are written
/// directly), then `commit` or `abort`; or `seal` it and publish it later, with others.
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

    /// Publishes the message: `seal` it, then `Maildir.publish` it: flushed, its times set,
    /// fsynced, closed, renamed into new/ or cur/ without overwriting anything. The directory
    /// entry is made durable by `Maildir.syncFolder`, once per batch.
    public func commit(flags: MessageFlags, mtime: Int?) throws(MaildirError) -> Delivered {
        try maildir.publish(seal(flags: flags, mtime: mtime))
    }

    /// Finishes the file in tmp/ for publishing (`Maildir.publish`): flush, set atime and mtime
    /// to `mtime` (seconds since the epoch, the message's internal date; nil keeps the current
    /// time), make it durable, close. With a `batch` that covers the file's file system the
    /// durability is left to the batch's one sync; otherwise the file is fsynced here. Either
    /// way a sealed body is complete: a failure here removes the tmp file.
    public func seal(flags: MessageFlags, mtime: Int?, batch: DeliveryBatch? = nil) throws(MaildirError) -> SealedDelivery {
        guard fd >= 0 else { throw .deliveryClosed(path: tmpPath) }
        do throws(MaildirError) {
            try flush()
            FileTrace.note("W", tmpPath, String(size))
            // Times first, so that the sync makes them durable with the data.
            if let mtime {
                var times = [timespec(tv_sec: time_t(mtime), tv_nsec: 0), timespec(tv_sec: time_t(mtime), tv_nsec: 0)]
                if futimens(fd, &times) != 0 {
                    throw MaildirError.from(errno: errno, path: tmpPath, operation: .settingTimes)
                }
            }
            let synced = batch?.covers(fd) != true
            if synced {
                let s = Sys.syncDescriptor(fd)
                if s != 0 { throw MaildirError.from(errno: s, path: tmpPath, operation: .syncing) }
                FileTrace.note("F", tmpPath)
            }
            let c = Sys.closeDescriptor(fd)
            fd = -1
            if c != 0 { throw MaildirError.from(errno: c, path: tmpPath, operation: .closing) }
            fd = -2  // handed over: the sealed delivery now owns the tmp file
            let rel = joinPath(folder, flags.contains(.seen) ? "cur" : "new", Maildir.fileName(unique: unique, flags: flags))
            return SealedDelivery(tmpPath: tmpPath, synced: synced,
                                  delivered: Delivered(relativePath: rel, unique: unique, sha256: hasher.finalizeHex(), size: size))
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
