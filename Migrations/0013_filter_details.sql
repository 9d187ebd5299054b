-- The whole filter as GET /users/:user/filters/:filter gives it: query and action as the
-- objects POST /users/:user/filters takes (the listing shows them only in words), so that
-- wdsync --restore can create it again. NULL until fetched; kept while the listing is unchanged.
ALTER TABLE filters ADD COLUMN detail_json TEXT;
