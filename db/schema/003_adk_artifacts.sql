-- Versions of ADK artifacts (google-adk BaseArtifactService) stored through the
-- artifact store.  scope is the session id, or '' for user-scoped artifacts.
-- filename is kept verbatim and never used as a path.  Inline and text payloads
-- live in the artifact store (artifact_id); file references keep only file_uri.
CREATE TABLE adk_artifact_versions (
    app_name        TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    scope           TEXT NOT NULL,
    filename        TEXT NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 0),
    kind            TEXT NOT NULL CHECK (kind IN ('inline', 'text', 'file')),
    artifact_id     TEXT REFERENCES artifacts (artifact_id) ON DELETE CASCADE,
    mime_type       TEXT,
    display_name    TEXT,
    file_uri        TEXT,
    custom_metadata TEXT NOT NULL DEFAULT '{}',
    create_time     REAL NOT NULL,
    PRIMARY KEY (app_name, user_id, scope, filename, version),
    CHECK ((kind = 'file') = (artifact_id IS NULL))
);

CREATE INDEX adk_artifact_versions_by_artifact ON adk_artifact_versions (artifact_id);
