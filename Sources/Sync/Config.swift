#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Failures
import Maildir
import WildDuck

/// Everything needed to mirror one account.
public struct AccountConfig: Sendable {
    public var name: String
    public var server: String
    public var username: String
    public var password: PasswordSource
    public var maildir: String
    public var db: String
    public var layout: MaildirLayout
    public var caFile: String?
    public var insecure: Bool
    /// Parallel message downloads.
    public var connections: Int
    /// Settings of the live engine (plain `wdsync`).
    public var live = LiveOptions()
    /// How a failed request is tried again within a run.
    public var retry = Backoff.requests
    /// How long a journal replay may take, in seconds (nil: the journal's default, 30).
    public var journalTimeout: Double?
    /// `--post-sync CMD`: run after a sync that changed the Maildir (see `PostSyncHook`).
    public var postSync: String?
    /// `--dry-run`: nothing is written (no Maildir root is created; the store is a copy).
    public var dryRun = false
    /// Never write to the server: local changes are recorded but neither pushed nor reverted.
    public var pullOnly = false
    /// Let this run delete many messages at once (the mass-delete breaker is off).
    public var allowMassDelete = false
    /// `--adopt-maildir`: a Maildir that is not the one the cache last wrote (restored, empty,
    /// another cache's) is matched to the server's messages instead of refused.
    public var adoptMaildir = false
    /// Say each retry of a failed request at the default level (on a terminal: a minute of
    /// retries must not look like a hang); otherwise only with --verbose.
    public var retriesVisible = false
    /// Mailboxes (paths, or special uses such as `\Trash`) where the breaker counts nothing.
    public var massDeleteExempt = ["\\Trash", "\\Junk"]
    /// The safety net: every mailbox is listed in full and compared with the cache when the last
    /// such check is older than this many seconds (0: only with `fullCheckNow`).
    public var fullCheckInterval: Double = 24 * 3600
    /// `--full-check`: this pass does the full check, whenever the last one was.
    public var fullCheckNow = false
    /// For the crash-state tests only (docs/durability.md): the file that records the Maildir's
    /// operations and the cache's commits (`FileTrace`), and a directory where the cache and the
    /// Maildir are copied after each commit (`CrashRecorder`). The executable reads them from
    /// `WDSYNC_FS_TRACE` and `WDSYNC_FS_TRACE_STATES`; the engine reads no environment.
    public var fileTrace: String?
    public var fileTraceStates: String?

    public init(name: String, server: String, username: String, password: PasswordSource, maildir: String,
                db: String, layout: MaildirLayout = .verbatim, caFile: String? = nil, insecure: Bool = false,
                connections: Int = 4) {
        self.name = name; self.server = server; self.username = username; self.password = password
        self.maildir = maildir; self.db = db; self.layout = layout; self.caFile = caFile
        self.insecure = insecure; self.connections = connections
    }
}

/// Where the password comes from. It is read when wdsync authenticates and never stored.
public enum PasswordSource: Sendable, Equatable {
    case file(String)
    case command(String)

    /// Reads the password. A file readable by group or others is refused.
    public func read() throws -> String {
        switch self {
        case .file(let path):
            var st = stat()
            guard stat(path, &st) == 0 else {
                throw SyncError.config("cannot read the password file \(path): \(String(cString: strerror(errno)))")
            }
            if st.st_mode & 0o077 != 0 {
                throw SyncError.config("the password file \(path) is readable by others (mode \(String(st.st_mode & 0o777, radix: 8))); run: chmod 600 \(path)")
            }
            guard let data = FileManager.default.contents(atPath: path) else {
                throw SyncError.config("cannot read the password file \(path)")
            }
            // An empty password is never sent: the server's refusal would blame the password.
            guard case let password = Self.firstLine(data), !password.isEmpty else {
                throw SyncError.config("the password file \(path) is empty (its first line is the password)")
            }
            return password
        case .command(let command):
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", command]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardInput = FileHandle.nullDevice
            do { try process.run() } catch {
                throw SyncError.config("cannot run the password command: \(error)")
            }
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw SyncError.config("the password command exited with status \(process.terminationStatus)")
            }
            guard case let password = Self.firstLine(data), !password.isEmpty else {
                throw SyncError.config("the password command printed nothing (the first line of its output is the password); run it yourself to check: \(command)")
            }
            return password
        }
    }

    /// The password is the first line (like mbsync's PassCmd); a trailing newline is not part of it.
    static func firstLine(_ data: Data) -> String {
        let text = String(decoding: data, as: UTF8.self)
        return String(text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
            .trimmingCharacters(in: CharacterSet(charactersIn: "\r"))
    }
}

/// Failures that decide the exit code. Descriptions never contain secrets.
public enum SyncError: Error, CustomStringConvertible, Sendable {
    case config(String)
    case locked(String)
    case localIO(String)
    /// A stop was requested (SIGINT/SIGTERM in the daemon); what was done so far is kept.
    case cancelled

    public var description: String {
        switch self {
        case .config(let s), .locked(let s), .localIO(let s): return s
        case .cancelled: return "stopped on request"
        }
    }
}

extension SyncError: ClassifiedError {
    /// `localIO` is a folder or file wdsync could not make (the export skips that one and goes
    /// on); the others end the run.
    public var failure: Failure {
        switch self {
        case .config: Failure(.account, .stop, .usage)
        case .locked: Failure(.account, .stop, .locked)
        case .localIO: Failure(.mailbox, .skip, .local)
        case .cancelled: Failure(.account, .stop, .cancelled)
        }
    }
}

/// Messages for the user, by level.
public protocol SyncLog: Sendable {
    func log(_ level: LogLevel, _ message: String)
}

extension SyncLog {
    /// Runs one phase of a pass and logs how long it took (`--debug`): where a slow run's time
    /// goes, without a profiler.
    @discardableResult
    func timed<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
        let start = ContinuousClock.now
        defer { log(.debug, "\(name) took \((ContinuousClock.now - start).logText)") }
        return try body()
    }
}

public enum LogLevel: Int, Sendable, Comparable {
    case error, warning, info, verbose, debug
    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }

    /// The level of an update stream's line (WildDuck module).
    init(_ level: StreamLogLevel) {
        switch level {
        case .warning: self = .warning
        case .verbose: self = .verbose
        case .debug: self = .debug
        }
    }
}
