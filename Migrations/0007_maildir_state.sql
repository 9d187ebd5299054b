-- Which Maildir this cache last wrote (docs/two-way.md, "Which Maildir"). The Maildir's root holds
-- the same id and generation in `.wdsync-state`; a Maildir whose marker is missing, older, or
-- another cache's is never read as local changes.
CREATE TABLE maildir_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    maildir_id  TEXT NOT NULL,            -- random, shared with the marker
    generation  INTEGER NOT NULL,         -- the marker's generation as last written
    pending     INTEGER,                  -- a generation being written: the marker may already have it
    adopting    INTEGER NOT NULL DEFAULT 0 -- 1 until a pass has matched the Maildir's files to the server's messages
);
