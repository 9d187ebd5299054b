#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Lock

/// Tells the live engine, within milliseconds, that something changed in a folder's `cur/` or
/// `new/` (Linux inotify: a rename into or out of it, a new file, an unlink). It says only *that*
/// something changed; the scan finds out what. When inotify is unavailable or the watch limit is
/// reached, `complete` turns false and the engine relies on its periodic scan.
final class LocalWatch: Sendable {
    private struct State {
        var watched: Set<String> = []
        var complete = true
        var stopped = false
    }
    private let state = Mutex(State())
    private let fd: Int32
    private let onChange: @Sendable () -> Void

    /// Nil when the system has no inotify (the periodic scan then does all the work).
    init?(onChange: @escaping @Sendable () -> Void) {
        #if os(Linux)
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { return nil }
        self.fd = fd
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

    /// Watches these directories too (absolute paths of `cur/` and `new/`); already watched and
    /// missing ones are skipped (a folder created later is added by a later call).
    func watch(_ directories: [String]) {
        #if os(Linux)
        let mask = UInt32(IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_CLOSE_WRITE | IN_ONLYDIR)
        for dir in directories {
            if state.withLock({ $0.watched.contains(dir) || $0.stopped }) { continue }
            let wd = inotify_add_watch(fd, dir, mask)
            if wd >= 0 {
                state.withLock { _ = $0.watched.insert(dir) }
            } else if errno == ENOSPC || errno == ENOMEM {
                state.withLock { $0.complete = false }
            }
        }
        #endif
    }

    /// Ends the reading thread within half a second; it closes the descriptor.
    func stop() { state.withLock { $0.stopped = true } }

    private func readLoop() {
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while !state.withLock({ $0.stopped }) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, 500)
            if r < 0 && errno != EINTR { return }
            guard r > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 { onChange() } else if n < 0 && errno != EAGAIN && errno != EINTR { return }
        }
    }
}
