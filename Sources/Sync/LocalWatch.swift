#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Lock

/// Tells the live engine, within milliseconds, that something changed in a folder's `cur/` or
/// `new/` (Linux inotify: a rename into or out of it, a new file, an unlink), and in which
/// folders — leaving out what wdsync itself did there.
///
/// The exporter's own renames, deliveries and unlinks are reported to `expect` as it makes
/// them, and each event the kernel queues is matched against those as it is read (whichever
/// comes first waits for the other). An event that matches one is wdsync's own and both are
/// consumed, so a long run holds only the writes in flight, not one entry per file; any other
/// event makes its folder "changed", and only changed folders are read by the next scan.
/// `drain`, on the engine's thread, reads what is still queued: every expected write was made
/// before it runs, so its event is queued by then; what is left unmatched is forgotten there.
/// A user's change can hide behind an expected write only by taking its event, which leaves the
/// write's own event unmatched: the folder is changed either way. Writes into a directory that
/// is not watched are not expected (no event will come for them).
///
/// When inotify is unavailable, the watch limit is reached or the kernel's queue overflowed,
/// the engine falls back to the scan's directory mtimes.
final class LocalWatch: Sendable {
    /// What `drain` found.
    struct Changes: Sendable, Equatable {
        /// Folders (as in `mailboxes.folder`) with a change wdsync did not make.
        var changed: Set<String> = []
        /// Folders whose `cur/` and `new/` are both watched: not in `changed` means unchanged.
        var watched: Set<String> = []
        /// Events were lost (the kernel's queue overflowed): nothing is known.
        var overflow = false
    }

    private struct State {
        var byPath: [String: Int32] = [:]   // relative directory ("Work/cur", "cur") → watch
        var byWatch: [Int32: String] = [:]
        var complete = true
        var stopped = false
        /// Folders with a change that cannot be wdsync's (a file closed after writing: wdsync
        /// writes in tmp/).
        var changed: Set<String> = []
        /// Events no expected write matched (yet), by "+path" (appeared) or "-path" (went).
        var unmatched: [String: (dir: String, count: Int)] = [:]
        var changedDirs: Set<String> = []   // watches that went away (folder deleted or renamed)
        var overflow = false
        /// How many events were not wdsync's own: a new one wakes the engine.
        var foreign = 0
        /// The exporter's own changes whose event has not been read yet, by "+path" or "-path".
        var expected: [String: Int] = [:]
        /// Where `readEvents` reads into, allocated once.
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    }
    private let state = Mutex(State())
    private let fd: Int32
    private let root: String
    private let onChange: @Sendable () -> Void

    /// Nil when the system has no inotify (the periodic scan then does all the work). `root` is
    /// the Maildir root: directories and expected paths are relative to it.
    init?(root: String, onChange: @escaping @Sendable () -> Void) {
        #if os(Linux)
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { return nil }
        self.fd = fd
        self.root = root
        self.onChange = onChange
        let thread = Thread { [self] in self.readLoop() }
        thread.stackSize = 1 << 18
        thread.start()
        #else
        return nil
        #endif
    }

    /// Whether every directory asked for is watched (false after the watch limit was reached).
    var complete: Bool { state.withLock { $0.complete } }

    /// Watches these directories too (`cur/` and `new/` of each folder, relative to the root);
    /// already watched and missing ones are skipped (a folder created later is added by a later call).
    func watch(_ directories: [String]) {
        #if os(Linux)
        let mask = UInt32(IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_CLOSE_WRITE | IN_MOVE_SELF | IN_ONLYDIR)
        for dir in directories {
            if state.withLock({ $0.byPath[dir] != nil || $0.stopped }) { continue }
            let wd = inotify_add_watch(fd, root + "/" + dir, mask)
            if wd >= 0 {
                state.withLock { s in
                    // The same directory under an older name (renamed): the watch is the same.
                    if let old = s.byWatch[wd] { s.byPath[old] = nil }
                    s.byPath[dir] = wd
                    s.byWatch[wd] = dir
                }
            } else if errno == ENOSPC || errno == ENOMEM {
                state.withLock { $0.complete = false }
            }
        }
        #endif
    }

    /// The directories watched for a folder: its `cur/` and `new/`, relative to the root.
    static func directories(of folder: String) -> [String] {
        ["cur", "new"].map { folder.isEmpty ? $0 : folder + "/" + $0 }
    }

    /// A folder a pass has just made for a new mailbox, before writing into it: watched from now
    /// on, so that its pass's last scan need not list what it wrote there. Unless it holds no
    /// mail once watched (`isEmpty`, asked after the watch is in place), it is "changed": a
    /// folder that was already there, with someone's mail in it, is read as any other.
    func watchNew(_ folder: String, isEmpty: () -> Bool) {
        watch(Self.directories(of: folder))
        if !isEmpty() { state.withLock { _ = $0.changed.insert(folder) } }
    }

    /// The exporter made `path` (relative to the root) appear, or go away.
    func expect(_ path: String, appeared: Bool) {
        let key = (appeared ? "+" : "-") + path
        state.withLock { s in
            if let u = s.unmatched[key] {
                s.unmatched[key] = u.count > 1 ? (u.dir, u.count - 1) : nil
            } else if let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")), s.byPath[String(path[..<slash])] != nil {
                s.expected[key, default: 0] += 1
            }
        }
    }

    /// Expected writes and events still waiting for their match (for the tests).
    var waiting: Int { state.withLock { s in s.expected.values.reduce(0, +) + s.unmatched.values.reduce(0) { $0 + $1.count } } }

    /// Reads what the kernel has queued and returns the folders changed by others since the last drain.
    func drain() -> Changes {
        state.withLock { s in
            readEvents(&s)
            var changes = Changes()
            changes.overflow = s.overflow
            changes.changed = s.changed
            for dir in s.unmatched.values.map(\.dir) + s.changedDirs { changes.changed.insert(Self.folder(of: dir)) }
            var subdirs: [String: Int] = [:]
            for dir in s.byPath.keys { subdirs[Self.folder(of: dir), default: 0] += 1 }
            changes.watched = Set(subdirs.filter { $0.value == 2 }.keys)
            s.changed.removeAll()
            s.unmatched.removeAll()
            s.changedDirs.removeAll()
            s.expected.removeAll()
            s.overflow = false
            return changes
        }
    }

    /// "Work/cur" → "Work"; "cur" (maildir++ INBOX, the root itself) → "".
    static func folder(of dir: String) -> String {
        guard let slash = dir.utf8.lastIndex(of: UInt8(ascii: "/")) else { return "" }
        return String(dir[..<slash])
    }

    /// Ends the reading thread within half a second; it closes the descriptor.
    func stop() { state.withLock { $0.stopped = true } }

    private func readLoop() {
        defer { close(fd) }
        while !state.withLock({ $0.stopped }) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, 500)
            if r < 0 && errno != EINTR { return }
            guard r > 0 else { continue }
            let got = state.withLock { s in
                let before = s.foreign
                readEvents(&s)
                return s.foreign > before || s.overflow
            }
            if got { onChange() }
            // Events come in bursts (a download or an export writes thousands of files): the
            // first of a burst is read at once, the rest gather for 2 ms between reads instead
            // of waking this thread once per file.
            usleep(2000)
        }
    }

    /// Reads every queued event into `s` (under the lock, so `drain` sees all of them).
    private func readEvents(_ s: inout State) {
        #if os(Linux)
        var buffer: [UInt8] = []
        swap(&buffer, &s.buffer)
        defer { swap(&buffer, &s.buffer) }
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            var offset = 0
            buffer.withUnsafeBytes { raw in
                while offset + 16 <= n {
                    let wd = raw.loadUnaligned(fromByteOffset: offset, as: Int32.self)
                    let mask = raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                    let len = Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                    let nameBytes = raw[(offset + 16)..<min(n, offset + 16 + len)].prefix { $0 != 0 }
                    offset += 16 + len
                    if mask & UInt32(IN_Q_OVERFLOW) != 0 { s.overflow = true; continue }
                    guard let dir = s.byWatch[wd] else { continue }
                    if mask & UInt32(IN_IGNORED | IN_MOVE_SELF) != 0 {
                        // The directory was removed or renamed: watched again under its new
                        // name by the next `watch`; its folder is read meanwhile.
                        s.changedDirs.insert(dir)
                        s.foreign += 1
                        s.byPath[dir] = nil
                        s.byWatch[wd] = nil
                        if mask & UInt32(IN_MOVE_SELF) != 0 { inotify_rm_watch(fd, wd) }
                        continue
                    }
                    guard nameBytes.first != UInt8(ascii: ".") else { continue }   // dot files are never mail
                    if mask & UInt32(IN_CLOSE_WRITE) != 0 {
                        s.changed.insert(Self.folder(of: dir))
                        s.foreign += 1
                        continue
                    }
                    let key = (mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0 ? "+" : "-") + dir + "/" + String(decoding: nameBytes, as: UTF8.self)
                    if let n = s.expected[key] {
                        s.expected[key] = n > 1 ? n - 1 : nil
                    } else {
                        s.unmatched[key, default: (dir, 0)].count += 1
                        s.foreign += 1
                    }
                }
            }
        }
        #endif
    }
}
