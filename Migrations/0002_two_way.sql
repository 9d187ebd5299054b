-- wdsync cache, schema version 2: two-way sync.
-- What the user's programs change in the Maildir is recorded here before anything is sent to
-- the server (docs/two-way.md).

-- The server's flags as last seen, or as last confirmed after a push: the base of the
-- three-way flag merge. `flags` stays the state the file on disk must have.
ALTER TABLE messages ADD COLUMN base_flags INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET base_flags = flags;

-- The mtimes (ns) of each folder's cur/ and new/ when it was last scanned for local changes;
-- a folder whose directories still have them is not read again.
ALTER TABLE mailboxes ADD COLUMN scanned_cur INTEGER;
ALTER TABLE mailboxes ADD COLUMN scanned_new INTEGER;

-- Pending mutations of the server. A row is written before its request is sent and removed
-- only when the server confirmed it. One row per message (the latest intent: a move carries
-- the message's flag changes, a delete supersedes both), or per new file for an upload.
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('flags', 'move', 'delete', 'upload')),
    mailbox_id  TEXT NOT NULL,          -- the message's mailbox; for an upload, the target
    uid         INTEGER,                -- the message; NULL for an upload
    target      TEXT,                   -- move: the target mailbox
    file        TEXT,                   -- move, upload: the local file, relative to the Maildir root
    uniq        TEXT,                   -- move, upload: the unique part of `file`
    sha256      TEXT,                   -- upload: of the file's bytes
    size        INTEGER,                -- upload: of the file
    message_id  TEXT,                   -- upload: Message-ID header (NULL if it has none)
    subject     TEXT,                   -- upload: Subject header
    date        INTEGER,                -- upload: internal date sent (the file's mtime), unix seconds
    flags       INTEGER,                -- upload: the file's Maildir flags
    after_uid   INTEGER,                -- upload: highest uid of the target known when the intent was recorded
    state       INTEGER NOT NULL DEFAULT 0, -- 0 queued; 1 sent, answer not received (look before resending)
    created_at  INTEGER NOT NULL DEFAULT (strftime('%s','now'))
);
CREATE UNIQUE INDEX outbox_message ON outbox(mailbox_id, uid) WHERE uid IS NOT NULL;
CREATE UNIQUE INDEX outbox_uniq ON outbox(uniq) WHERE uniq IS NOT NULL;
