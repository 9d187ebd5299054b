#if canImport(Glibc)
import Glibc
#endif
import CSQLite

/// What changed on disk in a sync or a batch.
public struct ChangeCounts: Sendable, Equatable {
    public var new = 0          // messages downloaded
    public var bytes = 0        // bytes downloaded
    public var changed = 0      // files renamed: flags, moves, folders
    public var removed = 0      // files removed
    public init(new: Int = 0, bytes: Int = 0, changed: Int = 0, removed: Int = 0) {
        self.new = new; self.bytes = bytes; self.changed = changed; self.removed = removed
    }
    public var isEmpty: Bool { new == 0 && changed == 0 && removed == 0 }
}

/// The `status` row (migration 0003): what wdsync last did, for `wdsync --status`.
public struct StatusRecord: Sendable, Equatable {
    public var syncAt: Int?            // unix ms
    public var syncMilliseconds: Int?
    public var sync = ChangeCounts()
    public var error: String?
    public var errorAt: Int?
    public var daemonPid: Int?
    public var daemonStartedAt: Int?
    public var transport: String?
    public var transportSince: Int?
    public var batchAt: Int?
    public var batchEvents: Int?
    public var batch = ChangeCounts()
    public init() {}
}

/// What the cache holds, for `wdsync --status`.
public struct CacheCounts: Sendable, Equatable {
    public var mailboxes = 0
    public var messages = 0
    public var bytes = 0                // of the messages with a file
    public var pendingDownloads = 0     // messages without a file yet
    public var pendingBytes = 0
    /// Local changes waiting to be pushed to the server; nil when this cache has no outbox.
    public var pendingPushes: Int?
    public init() {}
}

extension Store {
    /// Opens an existing cache read-only, without migrating: a running daemon is not disturbed
    /// (WAL lets a reader see the last committed state while it writes).
    public convenience init(readOnlyPath path: String) throws {
        self.init(path: path, database: try Database(path: path, readOnly: true))
    }

    static func nowMilliseconds() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int(ts.tv_sec) * 1000 + Int(ts.tv_nsec) / 1_000_000
    }

    /// Whether the cache has the status table (a cache written by an older wdsync may not).
    public func hasTable(_ name: String) throws -> Bool {
        let s = try db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?")
        try s.bind([.text(name)])
        return try s.step()
    }

    public func status() throws -> StatusRecord? {
        guard try hasTable("status") else { return nil }
        let s = try db.prepare("""
            SELECT sync_at, sync_ms, sync_new, sync_bytes, sync_changed, sync_removed, error, error_at,
                   daemon_pid, daemon_started_at, transport, transport_since,
                   batch_at, batch_events, batch_new, batch_changed, batch_removed
            FROM status WHERE id = 1
            """)
        guard try s.step() else { return StatusRecord() }
        var r = StatusRecord()
        r.syncAt = s.optionalInt(0)
        r.syncMilliseconds = s.optionalInt(1)
        r.sync = ChangeCounts(new: s.int(2), bytes: s.int(3), changed: s.int(4), removed: s.int(5))
        r.error = s.text(6)
        r.errorAt = s.optionalInt(7)
        r.daemonPid = s.optionalInt(8)
        r.daemonStartedAt = s.optionalInt(9)
        r.transport = s.text(10)
        r.transportSince = s.optionalInt(11)
        r.batchAt = s.optionalInt(12)
        r.batchEvents = s.optionalInt(13)
        r.batch = ChangeCounts(new: s.int(14), bytes: 0, changed: s.int(15), removed: s.int(16))
        return r
    }

    /// A complete sync ended now after `milliseconds`, having changed `counts`.
    public func recordSync(milliseconds: Int, counts: ChangeCounts) throws {
        try db.run("""
            UPDATE status SET sync_at = ?, sync_ms = ?, sync_new = ?, sync_bytes = ?, sync_changed = ?, sync_removed = ?
            WHERE id = 1
            """, .int(Store.nowMilliseconds()), .int(milliseconds), .int(counts.new), .int(counts.bytes),
                   .int(counts.changed), .int(counts.removed))
    }

    /// The last error (one line, no secrets: the same text the user sees).
    public func recordError(_ message: String) throws {
        try db.run("UPDATE status SET error = ?, error_at = ? WHERE id = 1", .text(message), .int(Store.nowMilliseconds()))
    }

    /// The daemon started (pid) or stopped (nil).
    public func recordDaemon(pid: Int?) throws {
        if let pid {
            try db.run("UPDATE status SET daemon_pid = ?, daemon_started_at = ?, transport = NULL, transport_since = NULL WHERE id = 1",
                       .int(pid), .int(Store.nowMilliseconds()))
        } else {
            try db.run("UPDATE status SET daemon_pid = NULL, transport = NULL, transport_since = NULL WHERE id = 1")
        }
    }

    public func recordTransport(_ transport: String) throws {
        try db.run("UPDATE status SET transport = ?, transport_since = ? WHERE id = 1",
                   .text(transport), .int(Store.nowMilliseconds()))
    }

    public func recordBatch(events: Int, counts: ChangeCounts) throws {
        try db.run("""
            UPDATE status SET batch_at = ?, batch_events = ?, batch_new = ?, batch_changed = ?, batch_removed = ? WHERE id = 1
            """, .int(Store.nowMilliseconds()), .int(events), .int(counts.new), .int(counts.changed), .int(counts.removed))
    }

    /// Mailboxes, messages and sizes in the cache, and what is still to be downloaded or pushed.
    public func counts() throws -> CacheCounts {
        var c = CacheCounts()
        let m = try db.prepare("SELECT COUNT(*) FROM mailboxes")
        if try m.step() { c.mailboxes = m.int(0) }
        let s = try db.prepare("""
            SELECT COUNT(*), COALESCE(SUM(CASE WHEN file IS NOT NULL THEN size END), 0),
                   COALESCE(SUM(file IS NULL), 0), COALESCE(SUM(CASE WHEN file IS NULL THEN size END), 0)
            FROM messages
            """)
        if try s.step() {
            c.messages = s.int(0); c.bytes = s.int(1); c.pendingDownloads = s.int(2); c.pendingBytes = s.int(3)
        }
        // Pending pushes: the rows of the two-way outbox (migration 0002); nil means "no outbox".
        if try hasTable("outbox") {
            let o = try db.prepare("SELECT COUNT(*) FROM outbox")
            if try o.step() { c.pendingPushes = o.int(0) }
        }
        return c
    }
}
