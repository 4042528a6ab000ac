-- A queue of films (agents/film_queue.py): runs beyond the profile's max_concurrent_runs
-- wait as 'queued', in queue_seq order; a queued run that is stopped ends 'cancelled'.
-- SQLite cannot change a CHECK constraint in place, so runs is rebuilt (a new column
-- too, which 005's in-place edit of the schema text cannot add); steps and run_events,
-- whose foreign keys point at runs, are rebuilt with it: renamed away first, so
-- dropping the old runs cascades into nothing. Children are dropped first.
ALTER TABLE runs RENAME TO runs_v5;
ALTER TABLE steps RENAME TO steps_v5;
ALTER TABLE run_events RENAME TO run_events_v5;

CREATE TABLE runs (
    run_id        TEXT PRIMARY KEY,
    plan_id       TEXT,
    plan_uri      TEXT,
    mode          TEXT NOT NULL CHECK (mode IN ('dry', 'run')),
    qa_mode       TEXT NOT NULL CHECK (qa_mode IN ('full', 'skip')),
    status        TEXT NOT NULL CHECK (status IN
                  ('pending', 'queued', 'running', 'paused', 'stopped', 'cancelled', 'succeeded', 'failed',
                   'interrupted', 'awaiting_review')),
    current_stage TEXT,
    progress      REAL NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    error         TEXT,
    options       TEXT NOT NULL DEFAULT '{}',
    owner_pid     INTEGER,
    owner_host    TEXT,
    heartbeat_at  TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    -- Place in the queue while status is 'queued' (smaller first); NULL otherwise.
    queue_seq     INTEGER
);

CREATE TABLE steps (
    step_id       TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    stage         TEXT NOT NULL,
    item          TEXT,
    attempt       INTEGER NOT NULL CHECK (attempt >= 1),
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'cached')),
    input_hash    TEXT,
    started_at    TEXT NOT NULL,
    completed_at  TEXT,
    duration_s    REAL CHECK (duration_s IS NULL OR duration_s >= 0),
    artifact_ids  TEXT NOT NULL DEFAULT '[]',
    output        TEXT,
    error         TEXT
);

CREATE TABLE run_events (
    event_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    ts            TEXT NOT NULL,
    level         TEXT NOT NULL CHECK (level IN ('debug', 'info', 'warning', 'error')),
    message       TEXT NOT NULL,
    data          TEXT NOT NULL DEFAULT '{}'
);

INSERT INTO runs (run_id, plan_id, plan_uri, mode, qa_mode, status, current_stage, progress, error, options,
                  owner_pid, owner_host, heartbeat_at, created_at, updated_at, started_at, finished_at)
    SELECT run_id, plan_id, plan_uri, mode, qa_mode, status, current_stage, progress, error, options,
           owner_pid, owner_host, heartbeat_at, created_at, updated_at, started_at, finished_at FROM runs_v5;
INSERT INTO steps (step_id, run_id, stage, item, attempt, status, input_hash, started_at, completed_at,
                   duration_s, artifact_ids, output, error)
    SELECT step_id, run_id, stage, item, attempt, status, input_hash, started_at, completed_at,
           duration_s, artifact_ids, output, error FROM steps_v5;
INSERT INTO run_events (event_id, run_id, ts, level, message, data)
    SELECT event_id, run_id, ts, level, message, data FROM run_events_v5;

DROP TABLE steps_v5;
DROP TABLE run_events_v5;
DROP TABLE runs_v5;

CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_status ON runs (status, heartbeat_at);
CREATE INDEX runs_queue ON runs (status, queue_seq);
CREATE INDEX steps_by_run ON steps (run_id, started_at, step_id);
CREATE INDEX steps_by_input ON steps (input_hash, stage, status, completed_at);
CREATE INDEX run_events_by_run ON run_events (run_id, event_id);
