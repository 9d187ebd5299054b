-- The mass-delete breaker counts what a person does over a window, not what one request holds
-- (docs/two-way.md, "Safety rails").

-- What the breaker did with a pending delete, move to Trash/Junk or T flag:
-- 0 not held; 1 held (nothing sent, the local change stays as it is);
-- 2 released by --allow-mass-delete (sent by the next push, whoever runs it);
-- 3 discarded by --discard-held (the next push drops it and restores the message locally).
ALTER TABLE outbox ADD COLUMN held INTEGER NOT NULL DEFAULT 0;

-- The destructive changes the server confirmed, per mailbox, for the window the breaker counts
-- over (older rows are pruned). Released and exempt ones are not recorded.
CREATE TABLE breaker_window (
    mailbox_id TEXT NOT NULL,
    at         INTEGER NOT NULL,   -- unix seconds, when the server confirmed it
    removed    INTEGER NOT NULL    -- 1: the message left the mailbox (delete, move); 0: a T flag
);
CREATE INDEX breaker_window_mailbox ON breaker_window(mailbox_id, at);
