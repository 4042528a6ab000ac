-- Run registry: runs, their step executions (StepExecutionRecord) and a log.
CREATE TABLE runs (
    run_id        TEXT PRIMARY KEY,
    plan_id       TEXT,
    plan_uri      TEXT,
    mode          TEXT NOT NULL CHECK (mode IN ('dry', 'run')),
    qa_mode       TEXT NOT NULL CHECK (qa_mode IN ('full', 'skip')),
    status        TEXT NOT NULL CHECK (status IN
                  ('pending', 'running', 'paused', 'stopped', 'succeeded', 'failed', 'interrupted')),
    current_stage TEXT,
    progress      REAL NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    error         TEXT,              -- JSON object or NULL
    options       TEXT NOT NULL DEFAULT '{}',
    -- Which process drives the run, and when it last proved it is alive; used to
    -- mark runs left 'running' by a crashed process as 'interrupted'.
    owner_pid     INTEGER,
    owner_host    TEXT,
    heartbeat_at  TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);

CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_status ON runs (status, heartbeat_at);

CREATE TABLE steps (
    step_id       TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    stage         TEXT NOT NULL,
    shot_id       TEXT,
    attempt       INTEGER NOT NULL CHECK (attempt >= 1),
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'cached')),
    input_hash    TEXT,
    started_at    TEXT NOT NULL,
    completed_at  TEXT,
    duration_s    REAL CHECK (duration_s IS NULL OR duration_s >= 0),
    artifact_ids  TEXT NOT NULL DEFAULT '[]',   -- JSON array of artifact ids
    output        TEXT,                         -- JSON or NULL
    error         TEXT                          -- JSON object or NULL
);

CREATE INDEX steps_by_run ON steps (run_id, started_at, step_id);
-- Cache lookups: latest succeeded step of a stage/shot with the same input hash.
CREATE INDEX steps_by_input ON steps (input_hash, stage, status, completed_at);

CREATE TABLE run_events (
    event_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    ts            TEXT NOT NULL,
    level         TEXT NOT NULL CHECK (level IN ('debug', 'info', 'warning', 'error')),
    message       TEXT NOT NULL,
    data          TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX run_events_by_run ON run_events (run_id, event_id);
