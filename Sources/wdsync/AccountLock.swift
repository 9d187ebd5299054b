#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Sync

/// An exclusive lock per account (a `flock` on `<db>.lock`), shared by `--once` and the daemon.
final class AccountLock {
    private let fd: Int32

    init(dbPath: String) throws {
        // The cache's folder may not exist yet (the XDG default on a first run).
        let dir = (dbPath as NSString).deletingLastPathComponent
        if !dir.isEmpty { try AccountSync.makeDirectory(dir) }
        let path = dbPath + ".lock"
        // O_NOFOLLOW: a link planted at the lock's path must not make wdsync open (and write
        // to) some other file. The file is never truncated, and must be the user's own.
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            if errno == ELOOP {
                throw SyncError.localIO("the lock file \(path) is a symbolic link; wdsync does not follow it: remove the link and re-run")
            }
            throw SyncError.localIO("cannot create the lock file \(path): \(String(cString: strerror(errno)))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid() else {
            close(fd)
            throw SyncError.localIO("the lock file \(path) is not a regular file of this user (uid \(st.st_uid)); remove it and re-run")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw SyncError.locked("another wdsync is already syncing this account (lock \(path) is held); wait for it or stop it")
        }
        // The holder's pid, for people who look; written over the start without truncating
        // (a fixed width, so a shorter pid leaves nothing of a longer one behind).
        let pid = String(getpid())
        let text = pid + String(repeating: " ", count: max(0, 11 - pid.utf8.count)) + "\n"
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    deinit { close(fd) }
}
