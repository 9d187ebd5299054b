-- messages_match indexed (message_id, size) of rows without a file, but no query reads it: the
-- matching of moves, uploads and orphans compares trimmed Message-IDs, or uses orphans_match.
-- Every listed message cost an entry in it and every download a removal, each in a page of its
-- own (Message-IDs arrive in no order), so it was about a third of the cache's writes during a
-- first sync.
DROP INDEX IF EXISTS messages_match;
