#if canImport(Glibc)
import Glibc
#endif
import Failures

/// The wdsync cache: one SQLite database per account, schema from Migrations/*.sql.
///
/// Every write that changes what the Maildir must look like marks the affected message row
/// `dirty` (or records an orphan file / dead folder) in the same transaction, so the exporter
/// can always be re-run and converge. Not thread-safe: one owner at a time.
public final class Store {
    public let db: Database
    public let path: String

    /// The newest schema version this build knows.
    public static var schemaVersion: Int { embeddedMigrations.map(\.version).max() ?? 0 }

    /// Opens (creating mode 0600 if needed) and migrates the database at `path`.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw StoreError.cannotOpen(path: path, reason: String(cString: strerror(errno)))
        }
        fchmod(fd, 0o600)
        close(fd)
        db = try Database(path: path)
        // synchronous=FULL: a commit is durable when it returns (the WAL is fsynced). With NORMAL
        // a power cut can lose commits that the Maildir's later, synced writes already reflect,
        // and the next scan would read that disagreement as the user's changes (docs/durability.md).
        try db.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
        try migrate()
    }

    /// A store over an already opened database, as it is (no migration).
    init(path: String, database: Database) {
        self.path = path
        self.db = database
    }

    /// Applies pending migrations in order, each inside a transaction, and records them.
    /// A database written by a newer wdsync is refused, never downgraded. Every migration not yet
    /// recorded is applied, not only those above the highest recorded one: migrations numbered on
    /// parallel branches may land out of order.
    private func migrate() throws {
        try db.execute("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)
            """)
        let statement = try db.prepare("SELECT version FROM schema_migrations")
        var applied = Set<Int>()
        while try statement.step() { applied.insert(statement.int(0)) }
        let current = applied.max() ?? 0
        let known = Store.schemaVersion
        if current > known {
            throw StoreError.newerSchema(path: path, found: current, supported: known)
        }
        for migration in embeddedMigrations.sorted(by: { $0.version < $1.version }) where !applied.contains(migration.version) {
            try db.transaction {
                do { try db.execute(migration.sql) } catch let error as SQLiteError {
                    throw StoreError.migrationFailed(version: migration.version, name: migration.name, detail: error.description)
                }
                try db.run("INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, strftime('%s','now'))",
                           .int(migration.version), .text(migration.name))
            }
        }
    }

    public func transaction<T>(_ body: () throws -> T) throws -> T { try db.transaction(body) }
}

public enum StoreError: Error, CustomStringConvertible, Sendable {
    case cannotOpen(path: String, reason: String)
    case newerSchema(path: String, found: Int, supported: Int)
    case migrationFailed(version: Int, name: String, detail: String)
    case accountMismatch(path: String, expected: String, found: String)

    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason):
            return "cannot open the cache \(path): \(reason); check the directory exists and is writable"
        case .newerSchema(let path, let found, let supported):
            return "the cache \(path) was written by a newer wdsync (schema \(found), this build knows up to \(supported)); upgrade wdsync or point --db at another file"
        case .migrationFailed(let version, let name, let detail):
            return "cache migration \(version) (\(name)) failed: \(detail); the cache was left unchanged"
        case .accountMismatch(let path, let expected, let found):
            return "the cache \(path) belongs to \(found), not \(expected); use a separate --db per account"
        }
    }
}

extension StoreError: ClassifiedError {
    /// The cache cannot be used: nothing can go on until the person acts.
    public var failure: Failure { Failure(.account, .stop, .local) }
}
