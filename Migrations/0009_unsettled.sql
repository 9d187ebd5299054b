-- A sync of a mailbox is not final when it is made: WildDuck takes a change's modifyIndex step
-- before it writes the change, so a listing (or a journal replay) taken meanwhile shows part of it
-- (see docs/incremental-sync.md). Until a later pass has read the journal from `unsettled_from`
-- and found nothing new for the mailbox, it is unsettled; NULL = settled.
ALTER TABLE mailboxes ADD COLUMN unsettled_from TEXT;   -- journal id (24 hex) the next pass reads from

-- The safety net: when every mailbox was last listed in full and compared with the cache
-- (`--full-check`, and once per `full-check-interval`). Unix seconds; NULL = never.
ALTER TABLE account ADD COLUMN last_full_check INTEGER;
