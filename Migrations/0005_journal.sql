-- The journal position of `--once` (account.last_event_id holds the position itself): the ids of
-- journal entries already applied that lie in the overlap the next replay reads again, so they
-- are neither applied nor counted twice (see docs/incremental-sync.md).
CREATE TABLE journal_seen (
    id TEXT PRIMARY KEY                  -- journal entry _id, 24 lowercase hex
) WITHOUT ROWID;
