#if canImport(Glibc)
import Glibc
#endif
import CSQLite
import Failures

/// A SQLite error with the statement that caused it.
public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    public var code: Int32
    public var message: String
    public var sql: String?
    public var description: String {
        var text = "SQLite error \(code): \(message)"
        if let sql { text += " (in: \(sql.prefix(120)))" }
        if code == SQLITE_FULL { text += " — the disk is full; free space and re-run" }
        return text
    }
}

private let SQLITE_TRANSIENT = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One SQLite connection. Not thread-safe by itself: one owner at a time.
public final class Database {
    let handle: OpaquePointer
    private var cache: [String: Statement] = [:]
    private var commitObserver: CommitObserver?

    /// Opens (creating) `path`; `readOnly` opens an existing file for reading only.
    /// A symbolic link, or a file owned by another user, is refused: the cache is written as
    /// the user running wdsync and must be that user's own file (SQLITE_OPEN_NOFOLLOW as well).
    public init(path: String, readOnly: Bool = false) throws {
        try Database.checkOwnFile(path)
        var db: OpaquePointer?
        let flags = (readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX
            | SQLITE_OPEN_NOFOLLOW
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            if let db { sqlite3_close(db) }
            throw SQLiteError(code: rc, message: "\(message): \(path)", sql: nil)
        }
        handle = db
        sqlite3_busy_timeout(db, 5000)
        sqlite3_extended_result_codes(db, 1)
    }

    /// Refuses a symbolic link or another user's file at `path` (nothing there is fine).
    static func checkOwnFile(_ path: String) throws {
        guard !path.isEmpty, path != ":memory:", !path.hasPrefix("file:") else { return }
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if st.st_mode & S_IFMT == S_IFLNK {
            throw SQLiteError(code: SQLITE_CANTOPEN, message: "\(path) is a symbolic link; wdsync does not follow links for its cache: replace it with the file itself", sql: nil)
        }
        if st.st_uid != geteuid() {
            throw SQLiteError(code: SQLITE_CANTOPEN, message: "\(path) belongs to another user (uid \(st.st_uid)); wdsync only opens a cache of its own user", sql: nil)
        }
    }

    deinit {
        cache.removeAll()
        sqlite3_close_v2(handle)
    }

    func error(_ rc: Int32, _ sql: String?) -> SQLiteError {
        SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(handle)), sql: sql)
    }

    /// Runs one or more statements without results.
    public func execute(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? "error"
            sqlite3_free(message)
            throw SQLiteError(code: rc, message: text, sql: sql)
        }
    }

    /// A prepared statement, cached by its text.
    public func prepare(_ sql: String) throws -> Statement {
        if let statement = cache[sql] {
            statement.reset()
            return statement
        }
        var raw: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &raw, nil)
        guard rc == SQLITE_OK, let raw else { throw error(rc, sql) }
        let statement = Statement(raw, db: self, sql: sql)
        cache[sql] = statement
        return statement
    }

    /// Runs a statement with bindings, discarding rows.
    public func run(_ sql: String, _ values: SQLValue...) throws {
        let statement = try prepare(sql)
        try statement.bind(values)
        while try statement.step() {}
    }

    /// Runs `body` inside BEGIN IMMEDIATE … COMMIT, rolling back if it throws.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    public var changes: Int { Int(sqlite3_changes(handle)) }

    /// Calls `body` after every commit of this connection, once the commit is in the write-ahead
    /// log (the crash-state tests record the cache's state there). One observer; it replaces
    /// the automatic checkpoint (`sqlite3_wal_hook`), so it is for recording runs only.
    public func observeCommits(_ body: @escaping @Sendable () -> Void) {
        let box = CommitObserver(body)
        commitObserver = box
        sqlite3_wal_hook(handle, { context, _, _, _ in
            guard let context else { return SQLITE_OK }
            Unmanaged<CommitObserver>.fromOpaque(context).takeUnretainedValue().body()
            return SQLITE_OK
        }, Unmanaged.passUnretained(box).toOpaque())
    }
}

private final class CommitObserver: Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

public enum SQLValue: Sendable {
    case int(Int)
    case text(String)
    case blob([UInt8])
    case null
}

extension SQLValue {
    public init(_ value: String?) { self = value.map { .text($0) } ?? .null }
    public init(_ value: Int?) { self = value.map { .int($0) } ?? .null }
}

public final class Statement {
    let raw: OpaquePointer
    unowned let db: Database
    let sql: String

    init(_ raw: OpaquePointer, db: Database, sql: String) {
        self.raw = raw
        self.db = db
        self.sql = sql
    }

    deinit { sqlite3_finalize(raw) }

    func reset() {
        sqlite3_reset(raw)
        sqlite3_clear_bindings(raw)
    }

    public func bind(_ values: [SQLValue]) throws {
        for (i, value) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value {
            case .int(let v): rc = sqlite3_bind_int64(raw, index, Int64(v))
            case .text(let s): rc = sqlite3_bind_text(raw, index, s, -1, SQLITE_TRANSIENT)
            case .blob(let b):
                rc = b.withUnsafeBytes { sqlite3_bind_blob(raw, index, $0.baseAddress, Int32($0.count), SQLITE_TRANSIENT) }
            case .null: rc = sqlite3_bind_null(raw, index)
            }
            guard rc == SQLITE_OK else { throw db.error(rc, sql) }
        }
    }

    /// Advances; true while a row is available.
    public func step() throws -> Bool {
        let rc = sqlite3_step(raw)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let err = db.error(rc, sql)
            sqlite3_reset(raw)
            throw err
        }
    }

    public func int(_ column: Int32) -> Int { Int(sqlite3_column_int64(raw, column)) }
    public func optionalInt(_ column: Int32) -> Int? {
        sqlite3_column_type(raw, column) == SQLITE_NULL ? nil : int(column)
    }
    public func text(_ column: Int32) -> String? {
        guard let p = sqlite3_column_text(raw, column) else { return nil }
        return String(cString: p)
    }
    public func blob(_ column: Int32) -> [UInt8]? {
        guard sqlite3_column_type(raw, column) != SQLITE_NULL else { return nil }
        let count = Int(sqlite3_column_bytes(raw, column))
        guard count > 0, let p = sqlite3_column_blob(raw, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: count))
    }
}

extension Database {
    /// Copies this database, as of one consistent moment, into a new file at `path` (SQLite's
    /// online backup API: a read of this database, which a writer elsewhere does not notice).
    public func backup(to path: String) throws {
        let destination = try Database(path: path)
        guard let backup = sqlite3_backup_init(destination.handle, "main", handle, "main") else {
            throw destination.error(sqlite3_errcode(destination.handle), "backup")
        }
        let rc = sqlite3_backup_step(backup, -1)
        sqlite3_backup_finish(backup)
        guard rc == SQLITE_DONE else { throw SQLiteError(code: rc, message: "backup of the cache failed", sql: nil) }
    }
}

extension SQLiteError: ClassifiedError {
    /// The cache failed (a full disk, I/O, a busy lock held too long): the run stops with what
    /// it committed kept.
    public var failure: Failure { Failure(.account, .stop, .local) }
}
