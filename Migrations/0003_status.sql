-- What wdsync last did, for `wdsync --status`, which reads it without the network or the lock.
-- One row. Times are unix milliseconds.
CREATE TABLE status (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    sync_at           INTEGER,            -- end of the last complete sync (--once or the daemon's)
    sync_ms           INTEGER,            -- how long it took
    sync_new          INTEGER,            -- messages downloaded
    sync_bytes        INTEGER,            -- bytes downloaded
    sync_changed      INTEGER,            -- files renamed: flags, moves, folders
    sync_removed      INTEGER,            -- files removed
    error             TEXT,               -- the last error (kept; compare error_at with sync_at)
    error_at          INTEGER,
    daemon_pid        INTEGER,            -- the daemon, while it runs (cleared when it stops)
    daemon_started_at INTEGER,
    transport         TEXT,               -- 'WebSocket' | 'SSE' | 'REST polling'
    transport_since   INTEGER,
    batch_at          INTEGER,            -- the daemon's last batch that changed the Maildir
    batch_events      INTEGER,
    batch_new         INTEGER,
    batch_changed     INTEGER,
    batch_removed     INTEGER
);
INSERT INTO status (id) VALUES (1);
