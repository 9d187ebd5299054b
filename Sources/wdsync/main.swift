#if canImport(Glibc)
import Glibc
#endif
import Config
import Foundation
import Failures
import Maildir
import Lock
import Store
import Sync
import WildDuck

// Before anything else, and before any thread exists (see `StopSignals`).
StopSignals.block()

/// Writes log lines to standard error. Every message goes through `LogText.clean`: secrets
/// are redacted and control characters from server strings escaped here, in one place.
struct StderrLog: SyncLog {
    let level: LogLevel
    let timestamps: Bool
    let account: String?

    func log(_ level: LogLevel, _ message: String) {
        guard level <= self.level else { return }
        var line = ""
        if timestamps { line += ISO8601DateFormatter.string(from: Date(), timeZone: .current, formatOptions: [.withInternetDateTime, .withFractionalSeconds]) + " " }
        if let account { line += "[\(account)] " }
        switch level {
        case .error: line += "error: "
        case .warning: line += "warning: "
        default: break
        }
        line += LogText.clean(message) + "\n"
        Terminal.shared.write(line)
    }
}

/// Once per run and account: what makes the connection unsafe.
func warnAboutTransport(_ account: AccountConfig, log: StderrLog) {
    if account.insecure { log.log(.warning, "--insecure: TLS certificates are not verified") }
    if let server = ServerURL(account.server), !server.tls, !server.isLoopback {
        log.log(.warning, "--server \(account.server) is plain http:// to another host: the password and the access token cross the network unencrypted; use https://")
    }
}

/// Maps a failure to its exit code and one line for the user.
func classify(_ error: Error) -> (ExitCode, String) {
    switch error {
    case let e as UsageError: return (.usage, e.description)
    case let e as ConfigFileError: return (.usage, e.description)
    case let e as SQLiteError: return (.localIO, "the cache failed: \(e.description)")
    default:
        // Every other error says what it is (`Failure`): the exit code follows from its origin.
        switch Failure(of: error).origin {
        case .credentials: return (.auth, "\(error)")
        case .network: return (.unreachable, "\(error)")
        case .server: return (.server, "\(error)")
        case .local: return (.localIO, "\(error)")
        case .usage: return (.usage, "\(error)")
        case .locked: return (.locked, "\(error)")
        case .cancelled: return (.ok, "\(error)")
        case .unknown: return (.software, "unexpected error: \(error)")
        }
    }
}

func run() -> ExitCode {
    let args: CommandLineArgs
    do { args = try CommandLineArgs(Array(CommandLine.arguments.dropFirst())) } catch {
        FileHandle.standardError.write(Data("wdsync: \(error)\n".utf8))
        return .usage
    }
    if args.flags.contains("help") { print(helpText()); return .ok }
    if args.flags.contains("version") { print(version); return .ok }
    if let shell = args.values["completions"] {
        guard let script = completionScript(for: shell) else {
            FileHandle.standardError.write(Data("wdsync: --completions takes bash, zsh or fish\n".utf8))
            return .usage
        }
        print(script, terminator: "")
        return .ok
    }
    // Everything but the daemon stops on a signal as any program does (see `StopSignals`).
    let live = !["once", "allow-mass-delete", "discard-held", "status", "json", "restore", "verify", "dry-run"].contains { args.flags.contains($0) }
    if !live { StopSignals.release() }
    let level: LogLevel = args.flags.contains("debug") ? .debug : args.flags.contains("verbose") ? .verbose
        : args.flags.contains("quiet") ? .error : .info
    let environment = ProcessInfo.processInfo.environment
    var accounts: [AccountConfig]
    do {
        accounts = try resolveAccounts(args, environment: environment,
                                       credentials: !args.flags.contains("status"))
    } catch {
        FileHandle.standardError.write(Data("wdsync: \(error)\n".utf8))
        return .usage
    }
    let configPath = configFilePath(args, environment: environment)
    StderrLog(level: level, timestamps: true, account: nil).log(.verbose,
        (FileManager.default.fileExists(atPath: configPath) ? "read the config file \(configPath)" : "no config file at \(configPath)")
        + "; accounts: " + accounts.map(\.name).joined(separator: ", "))
    if !args.flags.contains("quiet") { Terminal.shared.enableProgress() }
    if args.flags.contains("status") { return showStatus(accounts, json: args.flags.contains("json")) }
    if args.flags.contains("json") {
        FileHandle.standardError.write(Data("wdsync: --json goes with --status\n".utf8))
        return .usage
    }
    // For the test suite only: seconds between the tries of a failed request, comma-separated
    // (the default is 1,4,15,40; see Backoff.requests).
    if let text = environment["WDSYNC_RETRY_DELAYS"] {
        let delays = text.split(separator: ",").compactMap { Double($0) }.filter { $0 >= 0 }
        for i in accounts.indices { accounts[i].retry = .fixed(delays) }
    }
    // For the test suite only: how long a journal replay may take, in seconds.
    if let t = environment["WDSYNC_JOURNAL_TIMEOUT"].flatMap(Double.init), t > 0 {
        for i in accounts.indices { accounts[i].journalTimeout = t }
    }
    // For the crash-state tests only (docs/durability.md): the file trace, and where the cache and
    // the Maildir are copied after each commit.
    for i in accounts.indices {
        accounts[i].fileTrace = environment["WDSYNC_FS_TRACE"].flatMap { $0.isEmpty ? nil : $0 }
        accounts[i].fileTraceStates = environment["WDSYNC_FS_TRACE_STATES"].flatMap { $0.isEmpty ? nil : $0 }
    }
    if !args.flags.contains("quiet") && isatty(STDERR_FILENO) == 1 {
        for i in accounts.indices { accounts[i].retriesVisible = true }
    }
    if args.flags.contains("restore") {
        guard !args.flags.contains("once"), !args.flags.contains("verify") else {
            FileHandle.standardError.write(Data("wdsync: --restore goes alone (or with --dry-run)\n".utf8))
            return .usage
        }
        return restore(accounts, level: level, dryRun: args.flags.contains("dry-run"))
    }
    if args.flags.contains("verify") { return verify(accounts, level: level) }
    if args.flags.contains("dry-run") { return dryRun(accounts, level: level) }
    // Deciding about what the mass-delete breaker holds is a one-off: it never starts a daemon.
    let release = args.flags.contains("allow-mass-delete"), discard = args.flags.contains("discard-held")
    if release && discard {
        FileHandle.standardError.write(Data("wdsync: give only one of --allow-mass-delete and --discard-held\n".utf8))
        return .usage
    }
    if live { return runLive(accounts, level: level) }
    var result = ExitCode.ok
    for account in accounts {
        let log = StderrLog(level: level, timestamps: level >= .verbose,
                            account: accounts.count > 1 ? account.name : nil)
        warnAboutTransport(account, log: log)
        let hook = account.postSync.map { PostSyncHook(command: $0, account: account.name, maildir: account.maildir, log: log) }
        var started: AccountSync?
        do {
            let lock: AccountLock
            do { lock = try AccountLock(dbPath: account.db) } catch SyncError.locked(_) where release || discard {
                try handOffHeld(account, discard: discard, log: log)
                continue
            }
            let mirror = try AccountSync(config: account, log: log)
            started = mirror
            if discard { try mirror.store.decideHeld(.discarded) }
            if Terminal.shared.progressEnabled {
                let name = accounts.count > 1 ? account.name : nil
                mirror.onProgress = { Terminal.shared.show($0, account: name) }
            }
            defer { Terminal.shared.clear() }
            let start = Date()
            let summary = try mirror.syncOnce()
            let seconds = Date().timeIntervalSince(start)
            try mirror.store.recordSync(milliseconds: Int(seconds * 1000), counts: summary.changes)
            withExtendedLifetime(lock) {}
            log.log(.info, String(format: "synced %d mailboxes (%d changed): %d downloaded (%.1f MB), %d moved, %d renamed, %d removed in %.2f s",
                                  summary.mailboxesListed, summary.mailboxesChanged, summary.downloaded,
                                  Double(summary.bytesDownloaded) / 1_000_000, summary.moved, summary.renamed,
                                  summary.removed, seconds))
            if summary.pushRequests > 0 || summary.pending > 0 {
                log.log(.info, "pushed \(summary.pushedFlags) flag changes, \(summary.pushedMoves) moves, \(summary.pushedDeletes) deletes, \(summary.uploaded) uploads in \(summary.pushRequests) requests; \(summary.pending) pending\(account.pullOnly ? " (pull-only)" : "")")
            }
            if !summary.heldDeletes.isEmpty && !account.pullOnly && result == .ok { result = .massDelete }
            if summary.failed > 0 {
                // Everything else is mirrored; the refused messages are tried again next run.
                log.log(.error, "\(summary.failed) message(s) could not be downloaded (see above); everything else is in place")
                if result == .ok { result = .server }
            }
            hook?.run(summary.changes)
        } catch {
            let (code, message) = classify(error)
            log.log(.error, message)
            if result == .ok { result = code }
            if let mirror = started {
                try? mirror.store.recordError(message)
                // What did arrive is in the Maildir: let the hook index it.
                if !mirror.summary.changes.isEmpty { hook?.run(mirror.summary.changes, failed: true) }
            }
        }
    }
    return result
}

/// `--verify`: the cache and the Maildir agree, checked without the network.
func verify(_ accounts: [AccountConfig], level: LogLevel) -> ExitCode {
    var result = ExitCode.ok
    for account in accounts {
        let log = StderrLog(level: level, timestamps: level >= .verbose, account: accounts.count > 1 ? account.name : nil)
        do {
            let lock = try AccountLock(dbPath: account.db)
            let report = try AccountSync(config: account, log: log).verify()
            withExtendedLifetime(lock) {}
            for problem in report.problems { log.log(.error, problem) }
            if report.localChanges > 0 {
                log.log(.info, "\(report.localChanges) files were renamed or moved by a mail program (read, flagged, moved); the next sync sends these changes")
            }
            if report.problems.isEmpty { log.log(.info, "the Maildir matches the cache") } else {
                log.log(.error, "\(report.problems.count) problems; run wdsync --once to download the queued messages again")
                if result == .ok { result = .dataErr }
            }
        } catch {
            let (code, message) = classify(error)
            log.log(.error, message)
            if result == .ok { result = code }
        }
    }
    return result
}

/// `--restore`: each account's backup (`--maildir`, `--db`) onto its server and user.
func restore(_ accounts: [AccountConfig], level: LogLevel, dryRun: Bool) -> ExitCode {
    var result = ExitCode.ok
    for account in accounts {
        let log = StderrLog(level: level, timestamps: level == .debug, account: accounts.count > 1 ? account.name : nil)
        warnAboutTransport(account, log: log)
        do {
            let restore = try Restore(config: account, log: log)
            if Terminal.shared.progressEnabled && !dryRun {
                let name = accounts.count > 1 ? account.name : nil
                restore.onProgress = { Terminal.shared.show($0, account: name) }
            }
            let start = Date()
            let summary: Restore.Summary
            do {
                defer { Terminal.shared.clear() }
                summary = try restore.run(dryRun: dryRun)
            }
            let seconds = Date().timeIntervalSince(start)
            let target = "\(account.username) on \(account.server)"
            if dryRun {
                for path in summary.mailboxesCreated { log.log(.info, "would create mailbox \(path)") }
                if !summary.settings.isEmpty { log.log(.info, "would set \(summary.settings.joined(separator: ", "))") }
                for name in summary.filtersCreated { log.log(.info, "would create filter \"\(name)\"") }
                for (path, planned) in summary.planned.sorted(by: { $0.key < $1.key }) {
                    log.log(.info, String(format: "would upload %d messages (%.1f MB) into %@", planned.count,
                                          Double(planned.bytes) / 1_000_000, path))
                }
                let count = summary.planned.values.reduce(0) { $0 + $1.count }
                log.log(.info, "dry run: \(summary.messages) messages in the backup, \(summary.present) already in \(target), \(count) to upload, \(summary.mailboxesCreated.count) mailboxes to create; nothing was changed")
            } else {
                log.log(.info, String(format: "restored into %@: %d mailboxes created, %d messages uploaded (%.1f MB) in %.1f s (%.0f msg/s), %d already there",
                                      target, summary.mailboxesCreated.count, summary.uploaded, Double(summary.bytes) / 1_000_000,
                                      seconds, seconds > 0 ? Double(summary.uploaded) / seconds : 0, summary.present))
                if !summary.settings.isEmpty { log.log(.info, "set \(summary.settings.joined(separator: ", "))") }
                for name in summary.filtersCreated { log.log(.info, "created filter \"\(name)\"") }
            }
            if summary.filtersPresent > 0 { log.log(.info, "\(summary.filtersPresent) filter(s) of the backup already there") }
            for (what, count) in summary.notRestored.sorted(by: { $0.key < $1.key }) {
                log.log(.warning, "not restored: \(what): \(count)")
            }
            for (what, count) in summary.notCarried.sorted(by: { $0.key < $1.key }) {
                log.log(.warning, "not carried (the API cannot set it): \(what): \(count)")
            }
            for failure in summary.failed { log.log(.error, "not restored: \(failure)") }
            if !summary.failed.isEmpty {
                log.log(.error, "\(summary.failed.count) message(s), mailbox(es) or filter(s) could not be restored (see above); everything else is in place")
                if result == .ok { result = .server }
            }
        } catch {
            let (code, message) = classify(error)
            log.log(.error, message + (dryRun ? "" : "; what was uploaded stays, and running the same command again adds only what is missing"))
            if result == .ok { result = code }
        }
    }
    return result
}

/// The daemon: one engine thread per account; signals stop or nudge them all.
func runLive(_ accounts: [AccountConfig], level: LogLevel) -> ExitCode {
    let notifier = SystemdNotifier()
    let states = Mutex(accounts.map { _ in DaemonState() })
    @Sendable func report(_ index: Int, _ event: LiveEvent) {
        if case .ready = event { Terminal.shared.clear() }
        guard let notifier else { return }
        let (becameReady, status) = states.withLock { s -> (Bool, String) in
            let wasReady = s.allSatisfy(\.ready)
            switch event {
            case .ready:
                s[index].ready = true
                if s[index].offline { s[index].transport = nil; s[index].offline = false }
            case .transport(let t): s[index].transport = "\(t.rawValue) since \(clock())"
            case .disconnected(let kind, let since):
                // Running and retrying is ready for systemd: a server down at start must not
                // hold `systemctl start` until it answers.
                s[index].ready = true
                s[index].offline = kind == .offline
                s[index].transport = "\(kind.rawValue) since \(clock(since))" + (kind == .offline ? ", retrying" : "")
            case .changed(let c): s[index].lastBatch = "last change \(clock()): \(c.new) new, \(c.changed) changed, \(c.removed) removed"
            }
            let status = zip(accounts, s).map { account, state in
                (accounts.count > 1 ? account.name + ": " : "") + state.description
            }.joined(separator: "; ")
            return (!wasReady && s.allSatisfy(\.ready), status)
        }
        notifier.send((becameReady ? "READY=1\n" : "") + "STATUS=\(status)")
    }
    let hooks = accounts.map { account in
        account.postSync.map {
            PostSyncHook(command: $0, account: account.name, maildir: account.maildir,
                         log: StderrLog(level: level, timestamps: level >= .verbose, account: accounts.count > 1 ? account.name : nil))
        }
    }
    let engines = accounts.enumerated().map { (index: Int, account: AccountConfig) -> LiveSync in
        let log = StderrLog(level: level, timestamps: level >= .verbose, account: accounts.count > 1 ? account.name : nil)
        let name = accounts.count > 1 ? account.name : nil
        var progress: (@Sendable (SyncProgress) -> Void)?
        if Terminal.shared.progressEnabled { progress = { Terminal.shared.show($0, account: name) } }
        let hook = hooks[index]
        return LiveSync(config: account, log: log, progress: progress, observer: { event in
            if case .changed(let counts) = event { hook?.schedule(counts) }
            report(index, event)
        })
    }
    notifier?.send("STATUS=initial sync")
    // The watchdog pings come from their own thread: they show the process is alive and
    // scheduled; a stalled network operation is bounded by wdsync's own timeouts.
    notifier?.startWatchdog { true }
    let reload = Mutex(false), hangup = Mutex(false)
    // On a terminal, SIGHUP is the terminal going away: stop. Without one (systemd, nohup) it
    // asks for the config file to be read again.
    let hangupStops = isatty(STDIN_FILENO) == 1 || isatty(STDERR_FILENO) == 1
    StopSignals.take { sig in
        if sig == SIGHUP { hangup.withLock { $0 = true } }
        if sig == SIGHUP && !hangupStops {
            reload.withLock { $0 = true }
            notifier?.send("RELOADING=1")
        } else if sig != SIGUSR1 {
            notifier?.send("STOPPING=1")
        }
        for engine in engines { sig == SIGUSR1 ? engine.reconcileNow() : engine.stop() }
    }
    let results = Mutex<[ExitCode]>([])
    let group = DispatchGroup()
    for ((engine, account), hook) in zip(zip(engines, accounts), hooks) {
        group.enter()
        let thread = Thread {
            defer { group.leave() }
            // The hook's last run (changes of the engine's last steps) ends before the daemon.
            defer { hook?.finish() }
            let log = StderrLog(level: level, timestamps: level >= .verbose, account: accounts.count > 1 ? account.name : nil)
            warnAboutTransport(account, log: log)
            do {
                let lock = try AccountLock(dbPath: account.db)
                log.log(.info, "keeping \(account.maildir) in sync with \(account.username) at \(account.server) (cache \(account.db)); SIGTERM or Ctrl-C stops")
                try engine.run()
                withExtendedLifetime(lock) {}
                log.log(.info, reload.withLock { $0 } ? "stopped to read the configuration again" : hangup.withLock { $0 } ? "stopped: the terminal hung up (SIGHUP)" : "stopped")
                results.withLock { $0.append(.ok) }
            } catch {
                let (code, message) = classify(error)
                log.log(.error, message)
                results.withLock { $0.append(code) }
            }
        }
        thread.start()
    }
    group.wait()
    if reload.withLock({ $0 }) { restart() }
    return results.withLock { $0.first { $0 != .ok } ?? .ok }
}

/// SIGHUP: every engine has stopped and released its lock; the same program starts again with
/// the same arguments (and pid, which systemd keeps following), reading the config file anew.
/// A config that became invalid ends it with its error, as at any start.
func restart() {
    let args = CommandLine.arguments.map { strdup($0) } + [nil]
    defer { for arg in args { free(arg) } }
    // The signal mask survives exec: a signal sent meanwhile waits for the new process's
    // signal thread (see `StopSignals`).
    execv("/proc/self/exe", args)
    FileHandle.standardError.write(Data("wdsync: cannot start again after SIGHUP (\(String(cString: strerror(errno)))); stopped\n".utf8))
}

/// One account of the daemon, as told to systemd in `STATUS=`.
struct DaemonState: CustomStringConvertible {
    /// READY=1 may be sent: the first sync is done, or the engine runs offline and retries.
    var ready = false
    /// Running without a first sync: `transport` says since when.
    var offline = false
    var transport: String?
    var lastBatch: String?
    var description: String {
        guard ready else { return "initial sync" }
        if offline, let transport { return transport }
        return [transport ?? "connecting", lastBatch ?? "no change yet"].joined(separator: ", ")
    }
}

func clock(_ date: Date = Date()) -> String {
    let formatter = DateFormatter()
    formatter.dateFormat = "HH:mm:ss"
    return formatter.string(from: date)
}

exit(run().rawValue)
