#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
@testable import Maildir

/// What a user's programs do to the files of a Maildir: a reader's or `mv`'s rename, `rm`,
/// `cat >`. Failures are the `MaildirError` of the errno, as `Maildir`'s own.
protocol UserFiles {
    /// Writes a file in place; `mtime` (seconds) as `touch -d` then sets it.
    func write(_ relPath: String, bytes: [UInt8], mtime: Int?) throws(MaildirError)
    func rename(_ from: String, to: String) throws(MaildirError)
    func remove(_ relPath: String) throws(MaildirError)
    func makeDirectory(_ relPath: String) throws(MaildirError)
    /// `rm -r`.
    func removeDirectory(_ relPath: String) throws(MaildirError)
}

extension UserFiles {
    func write(_ relPath: String, bytes: [UInt8]) throws(MaildirError) {
        try write(relPath, bytes: bytes, mtime: nil)
    }
}

extension InMemoryFolders: UserFiles {}

/// The same on disk, under a real `Maildir`'s root, with the system calls themselves.
struct DiskFiles: UserFiles {
    let maildir: Maildir

    private func check(_ r: Int32, _ relPath: String, _ operation: MaildirError.Operation) throws(MaildirError) {
        if r != 0 { throw .from(errno: errno, path: maildir.absolutePath(relPath), operation: operation) }
    }

    func write(_ relPath: String, bytes: [UInt8], mtime: Int?) throws(MaildirError) {
        let path = maildir.absolutePath(relPath)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .from(errno: errno, path: path, operation: .writing) }
        defer { close(fd) }
        guard writeAll(fd, bytes) else { throw .from(errno: errno, path: path, operation: .writing) }
        if let mtime {
            var times = [timespec(tv_sec: mtime, tv_nsec: 0), timespec(tv_sec: mtime, tv_nsec: 0)]
            try check(futimens(fd, &times), relPath, .settingTimes)
        }
    }

    func rename(_ from: String, to: String) throws(MaildirError) {
        try check(renamePath(maildir.absolutePath(from), maildir.absolutePath(to)), from, .renaming)
    }

    func remove(_ relPath: String) throws(MaildirError) {
        try check(unlink(maildir.absolutePath(relPath)), relPath, .removing)
    }

    func makeDirectory(_ relPath: String) throws(MaildirError) {
        try check(mkdir(maildir.absolutePath(relPath), 0o700), relPath, .creatingFolder)
    }

    func removeDirectory(_ relPath: String) throws(MaildirError) {
        let path = maildir.absolutePath(relPath)
        var isDirectory: ObjCBool = false
        guard !relPath.isEmpty, FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue,
              (try? FileManager.default.removeItem(atPath: path)) != nil
        else { throw .notADirectory(path: path) }
    }
}

// Outside `DiskFiles`, whose methods of the same names would hide them.
private func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count
}

private func renamePath(_ from: String, _ to: String) -> Int32 { rename(from, to) }

/// The two implementations of `LocalFolders` the engine's tests run against.
enum Backend: String, CaseIterable, Sendable {
    /// A real `Maildir` in a temporary directory.
    case disk
    /// `InMemoryFolders`.
    case memory
}

/// Local folders of one backend, with the user's side of the same files. A temporary
/// directory of the disk's is removed when this goes.
final class TestFolders {
    let folders: any LocalFolders
    let user: any UserFiles
    private let directory: String?

    init(_ backend: Backend, layout: MaildirLayout = .verbatim) throws {
        switch backend {
        case .disk:
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("folders-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: dir + "/mail", withIntermediateDirectories: true)
            let maildir = Maildir(root: dir + "/mail", layout: layout)
            (folders, user, directory) = (maildir, DiskFiles(maildir: maildir), dir)
        case .memory:
            let memory = InMemoryFolders(layout: layout)
            (folders, user, directory) = (memory, memory, nil)
        }
    }

    deinit { if let directory { try? FileManager.default.removeItem(atPath: directory) } }
}
