#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Lock
import Sync

/// Standard error, shared by log lines and the progress line. When stderr is a terminal (and
/// not `-q`), a long sync shows one line updated in place — mailbox, messages done/total and
/// MB, msg/s and ETA — at most 10 times a second; a log line first erases it, and it is drawn
/// again on the next update. Without a terminal (cron, systemd) nothing extra is written.
final class Terminal: Sendable {
    static let shared = Terminal()

    private struct State {
        var enabled = false
        var showing = false
        var lastDraw: ContinuousClock.Instant?
        var phaseStart: ContinuousClock.Instant?
        var phaseKey = ""
    }
    private let state = Mutex(State())
    private static let minimumInterval: Duration = .milliseconds(100)

    /// Turns the progress line on when standard error is a terminal.
    func enableProgress() {
        let tty = isatty(STDERR_FILENO) == 1
        state.withLock { $0.enabled = tty }
    }

    var progressEnabled: Bool { state.withLock { $0.enabled } }

    /// Writes a log line, erasing the progress line first.
    func write(_ text: String) {
        state.withLock { s in
            let prefix = s.showing ? "\r\u{1B}[K" : ""
            s.showing = false
            FileHandle.standardError.write(Data((prefix + text).utf8))
        }
    }

    /// Erases the progress line, if one is showing.
    func clear() { write("") }

    /// Shows `progress` (of `account`, when there are several), throttled; the first update of a
    /// phase and the last one are always drawn.
    func show(_ progress: SyncProgress, account: String?) {
        state.withLock { s in
            guard s.enabled else { return }
            let now = ContinuousClock.now
            let key = "\(progress.phase)/\(progress.phase == .listing ? progress.mailbox : String(progress.total))/\(account ?? "")"
            let first = key != s.phaseKey
            if first {
                s.phaseKey = key
                s.phaseStart = now
            }
            let last = progress.done >= progress.total
            if !first && !last, let previous = s.lastDraw, now - previous < Terminal.minimumInterval { return }
            s.lastDraw = now
            let elapsed = s.phaseStart.map { now - $0 } ?? .zero
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let line = Terminal.format(progress, account: account, seconds: seconds, width: Terminal.columns())
            FileHandle.standardError.write(Data(("\r" + line + "\u{1B}[K").utf8))
            s.showing = true
        }
    }

    static func columns() -> Int {
        var size = winsize()
        guard ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return 80 }
        return Int(size.ws_col)
    }

    /// One line: `INBOX  1234/10000 msgs  12.3/98.7 MB  812 msg/s  ETA 0:11`, the mailbox cut
    /// so the line never wraps (a wrapped line cannot be redrawn in place).
    static func format(_ p: SyncProgress, account: String?, seconds: Double, width: Int) -> String {
        var tail: String
        let lead: String
        switch p.phase {
        case .listing:
            lead = "listing "
            tail = "  \(p.done)/\(p.total) msgs"
        case .downloading, .uploading:
            lead = p.phase == .uploading ? "restoring " : ""
            tail = String(format: "  %d/%d msgs  %.1f/%.1f MB", p.done, p.total,
                          Double(p.bytes) / 1_000_000, Double(p.totalBytes) / 1_000_000)
            let rate = seconds > 0 ? Double(p.done) / seconds : 0
            tail += String(format: "  %.0f msg/s", rate)
            if rate > 0 {
                let eta = Int((Double(p.total - p.done) / rate).rounded())
                tail += eta >= 3600 ? String(format: "  ETA %d:%02d:%02d", eta / 3600, eta % 3600 / 60, eta % 60)
                    : String(format: "  ETA %d:%02d", eta / 60, eta % 60)
            } else {
                tail += "  ETA -"
            }
        }
        var name = (account.map { "[\($0)] " } ?? "") + lead + p.mailbox
        let room = max(8, width - 1 - tail.count)
        if name.count > room { name = String(name.prefix(room - 1)) + "…" }
        return name + tail
    }
}
