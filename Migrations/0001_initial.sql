-- wdsync cache, schema version 1.
-- SQLite is authoritative; the Maildir is a projection of it (see docs/architecture.md).

-- The one account this database mirrors. Never holds the password.
CREATE TABLE account (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    server      TEXT NOT NULL,            -- base URL
    username    TEXT NOT NULL,
    user_id     TEXT,                     -- 24-hex id from /authenticate
    maildir     TEXT NOT NULL,            -- export root (absolute)
    layout      TEXT NOT NULL,            -- 'verbatim' | 'maildir++'
    user_json   TEXT,                     -- GET /users/:user, verbatim ("settings")
    autoreply_json TEXT,                  -- GET /users/:user/autoreply, verbatim
    filters_json TEXT,                    -- the filters list response's limits, verbatim
    last_event_id TEXT,                   -- SSE resume point (live sync)
    exporting   INTEGER NOT NULL DEFAULT 0, -- 1 while an export runs: after a crash, look for unrecorded files
    synced_at   INTEGER                   -- unix time of the last complete sync
);

CREATE TABLE mailboxes (
    id            TEXT PRIMARY KEY,       -- server id, stable across renames
    path          TEXT NOT NULL,
    special_use   TEXT,
    modify_index  INTEGER NOT NULL,       -- as last listed by the server
    synced_index  INTEGER,                -- modifyIndex up to which messages are mirrored; NULL = never
    highest_uid   INTEGER NOT NULL DEFAULT 0,
    total         INTEGER,
    unseen        INTEGER,
    json          TEXT NOT NULL,          -- the server's mailbox object, verbatim
    folder        TEXT                    -- exported directory relative to the Maildir root; NULL = not yet
) WITHOUT ROWID;

-- One row per message the server lists. (mailbox_id, uid) is the server's identity.
CREATE TABLE messages (
    mailbox_id  TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid         INTEGER NOT NULL,
    message_id  TEXT,
    size        INTEGER NOT NULL,
    idate       INTEGER,                  -- internal date, unix seconds (file mtime)
    flags       INTEGER NOT NULL,         -- Maildir flag bits, see Store.Flags
    json        TEXT NOT NULL,            -- the list item, verbatim
    uniq        TEXT NOT NULL UNIQUE,     -- unique part of the Maildir file name, fixed at creation
    sha256      TEXT,                     -- of the raw bytes; NULL until delivered
    file        TEXT,                     -- path of the file relative to the Maildir root; NULL until delivered
    dirty       INTEGER NOT NULL DEFAULT 1, -- the exporter has work to do for this row
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX messages_dirty ON messages(mailbox_id, uid) WHERE dirty = 1;
CREATE INDEX messages_match ON messages(message_id, size) WHERE file IS NULL;

-- Files whose message left the server listing. Kept until the exporter either re-uses the file
-- for the same message arriving elsewhere (a move) or unlinks it.
CREATE TABLE orphans (
    file        TEXT PRIMARY KEY,         -- relative to the Maildir root
    uniq        TEXT NOT NULL,
    message_id  TEXT,
    size        INTEGER NOT NULL,
    sha256      TEXT,
    orphaned_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))  -- unix ms
) WITHOUT ROWID;
CREATE INDEX orphans_match ON orphans(message_id, size);

-- Mailbox folders whose mailbox is gone from the server, to be removed by the exporter.
CREATE TABLE dead_folders (
    folder      TEXT PRIMARY KEY
) WITHOUT ROWID;

CREATE TABLE filters (
    id          TEXT PRIMARY KEY,
    json        TEXT NOT NULL
) WITHOUT ROWID;
