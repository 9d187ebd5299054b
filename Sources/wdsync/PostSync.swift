#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Lock
import Sync

/// The `--post-sync CMD` hook (e.g. `notmuch new`). It runs through `/bin/sh -c` with the
/// counts in its environment: WDSYNC_ACCOUNT, WDSYNC_MAILDIR, WDSYNC_NEW, WDSYNC_CHANGED,
/// WDSYNC_REMOVED and WDSYNC_RESULT (`ok`, or `failed` after a sync that failed part-way).
/// Its output goes where wdsync's goes; a failing command is logged and changes nothing else.
///
/// In the daemon, `schedule` returns at once: the command runs on its own thread, at most once
/// every `minimumInterval` seconds and never twice at once; changes that arrive meanwhile are
/// added up into the next run.
final class PostSyncHook: Sendable {
    let command: String
    let account: String
    let maildir: String
    let log: SyncLog
    let minimumInterval: Double

    private struct State {
        var pending: ChangeCounts?
        var lastStart: ContinuousClock.Instant?
        var worker = false
        var stopping = false
    }
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    init(command: String, account: String, maildir: String, log: SyncLog, minimumInterval: Double = 2) {
        self.command = command
        self.account = account
        self.maildir = maildir
        self.log = log
        self.minimumInterval = minimumInterval
    }

    /// Runs the command now and waits for it (`--once`).
    func run(_ counts: ChangeCounts, failed: Bool = false) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        var environment = ProcessInfo.processInfo.environment
        environment["WDSYNC_ACCOUNT"] = account
        environment["WDSYNC_MAILDIR"] = maildir
        environment["WDSYNC_NEW"] = String(counts.new)
        environment["WDSYNC_CHANGED"] = String(counts.changed)
        environment["WDSYNC_REMOVED"] = String(counts.removed)
        environment["WDSYNC_RESULT"] = failed ? "failed" : "ok"
        process.environment = environment
        process.standardInput = FileHandle.nullDevice
        log.log(.verbose, "running the post-sync command (\(counts.new) new, \(counts.changed) changed, \(counts.removed) removed)")
        do {
            try process.run()
            process.waitUntilExit()
            if process.terminationReason == .uncaughtSignal {
                log.log(.warning, "the post-sync command was killed by signal \(process.terminationStatus)")
            } else if process.terminationStatus != 0 {
                log.log(.warning, "the post-sync command exited with status \(process.terminationStatus)")
            }
        } catch {
            log.log(.warning, "cannot run the post-sync command: \(error)")
        }
    }

    /// Queues a run for these changes (the daemon); returns at once.
    func schedule(_ counts: ChangeCounts) {
        guard !counts.isEmpty else { return }
        let start = state.withLock { s -> Bool in
            guard !s.stopping else { return false }
            var total = s.pending ?? ChangeCounts()
            total.new += counts.new; total.bytes += counts.bytes
            total.changed += counts.changed; total.removed += counts.removed
            s.pending = total
            defer { s.worker = true }
            return !s.worker
        }
        if start {
            let thread = Thread { [self] in work() }
            thread.start()
        }
        wake.signal()
    }

    /// Runs what is still pending (without waiting for the interval) and waits for the worker.
    func finish() {
        let worker = state.withLock { s -> Bool in
            s.stopping = true
            return s.worker
        }
        guard worker else { return }
        wake.signal()
        finished.wait()
    }

    private func work() {
        while true {
            // Wait for changes (or the end).
            let next: (ChangeCounts?, Double) = state.withLock { s in
                guard s.pending != nil else { return (nil, 0) }
                guard !s.stopping, let last = s.lastStart else { return (s.pending, 0) }
                let due = last + .seconds(minimumInterval)
                let wait = ContinuousClock.now.duration(to: due)
                return (s.pending, wait > .zero ? Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18 : 0)
            }
            if next.0 == nil {
                if state.withLock({ $0.stopping }) { break }
                wake.wait()
                continue
            }
            if next.1 > 0 {
                _ = wake.wait(timeout: .now() + next.1)
                continue
            }
            guard let counts = state.withLock({ s -> ChangeCounts? in
                defer { s.pending = nil; s.lastStart = .now }
                return s.pending
            }) else { continue }
            run(counts)
        }
        finished.signal()
    }
}
