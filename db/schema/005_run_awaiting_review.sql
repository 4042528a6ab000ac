-- A run may wait at a review gate: status 'awaiting_review' (agents/review_gates.py).
--
-- SQLite cannot ALTER a CHECK constraint, and rebuilding `runs` is not possible
-- here: migrations run inside a transaction with foreign keys ON, so dropping the
-- old table would cascade-delete every step.  A widened CHECK does not change the
-- on-disk format, which is the case SQLite documents for editing the schema text
-- in place (https://www.sqlite.org/lang_altertable.html, "otheralter"): rewrite
-- the table's SQL, RESET reloads it on this connection, and rebuilding an index
-- bumps the schema cookie so every other connection reloads it too.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
   SET sql = replace(sql, '''failed'', ''interrupted'')', '''failed'', ''interrupted'', ''awaiting_review'')')
 WHERE type = 'table' AND name = 'runs';
PRAGMA writable_schema = RESET;
DROP INDEX runs_by_status;
CREATE INDEX runs_by_status ON runs (status, heartbeat_at);
