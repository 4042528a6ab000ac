-- Artifact index: one row per blob under <root>/artifacts/<run_id>/<stage>/.
-- A row is inserted only after its file has been fsynced and renamed into place,
-- so every row has its file; rel_path is relative to the store root so the root
-- can be moved.
CREATE TABLE artifacts (
    artifact_id   TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL,
    stage         TEXT NOT NULL,
    artifact_type TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    rel_path      TEXT NOT NULL UNIQUE,
    sha256        TEXT NOT NULL CHECK (length(sha256) = 64),
    size_bytes    INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at    TEXT NOT NULL,
    duration_s    REAL CHECK (duration_s IS NULL OR duration_s >= 0),
    fps           REAL CHECK (fps IS NULL OR fps > 0),
    width         INTEGER CHECK (width IS NULL OR width > 0),
    height        INTEGER CHECK (height IS NULL OR height > 0),
    sample_rate   INTEGER CHECK (sample_rate IS NULL OR sample_rate > 0),
    metadata      TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX artifacts_by_run ON artifacts (run_id, stage, created_at, artifact_id);
