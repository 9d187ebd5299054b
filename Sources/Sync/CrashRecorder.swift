import Foundation
import Maildir
import Store
import Lock

/// For the crash-state tests (docs/durability.md): with a file trace (`AccountConfig.fileTrace`),
/// every commit of the cache is marked in it (`C <id>`), and with `fileTraceStates` naming a
/// directory, the cache (database and write-ahead log) and the Maildir are copied there after
/// each commit, as `<id>/cache.sqlite` and `<id>/mail`. The tests build from these copies and
/// the trace every state a power cut could leave. Nothing of this runs without the settings.
enum CrashRecorder {
    /// Starts the file trace the config names, if any, before the account's first operation.
    static func startTrace(_ config: AccountConfig) {
        if let path = config.fileTrace { FileTrace.start(path: path) }
    }

    static func start(store: Store, db: String, maildir: String, states: String?) {
        let states = states.flatMap { $0.isEmpty ? nil : $0 }
        let prefix = String(getpid())
        let counter = Mutex(0)
        store.db.observeCommits {
            let id = "\(prefix)-\(counter.withLock { n -> Int in n += 1; return n })"
            FileTrace.note("C", id)
            guard let states else { return }
            let fm = FileManager.default
            let target = states + "/" + id
            try? fm.createDirectory(atPath: target, withIntermediateDirectories: true)
            for suffix in ["", "-wal"] where fm.fileExists(atPath: db + suffix) {
                try? fm.copyItem(atPath: db + suffix, toPath: target + "/cache.sqlite" + suffix)
            }
            if fm.fileExists(atPath: maildir) { try? copyTree(maildir, to: target + "/mail") }
        }
    }

    /// Copies a tree with its files' times: FileManager's copy dates every file now, and the
    /// scan waits for a young file the user wrote to stop changing before it uploads it.
    /// Directories keep the copy's times (the scan then reads every folder).
    static func copyTree(_ from: String, to: String) throws {
        let fm = FileManager.default
        try fm.copyItem(atPath: from, toPath: to)
        guard let e = fm.enumerator(atPath: from) else { return }
        while let rel = e.nextObject() as? String {
            var st = stat()
            guard lstat(from + "/" + rel, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            var times = [st.st_atim, st.st_mtim]
            _ = utimensat(AT_FDCWD, to + "/" + rel, &times, AT_SYMLINK_NOFOLLOW)
        }
    }
}
