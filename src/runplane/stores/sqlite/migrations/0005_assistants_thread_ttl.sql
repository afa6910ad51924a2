-- Assistants with their immutable versions, and thread time-to-live.
-- (0005: after the 0003 and 0004 of the branches merged before this one.)

CREATE TABLE assistants (
    assistant_id TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    -- A graph's own assistant: every owner may read it (only its owner may change it).
    system       INTEGER NOT NULL DEFAULT 0,
    graph_id     TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    config       TEXT NOT NULL DEFAULT '{}',
    context      TEXT NOT NULL DEFAULT '{}',
    metadata     TEXT NOT NULL DEFAULT '{}',
    -- The current version (PATCH adds one; `latest` may point back to an older one).
    version      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE INDEX assistants_owner_created ON assistants (owner, created_at);

CREATE TABLE assistant_versions (
    assistant_id TEXT NOT NULL REFERENCES assistants (assistant_id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    graph_id     TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    config       TEXT NOT NULL,
    context      TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (assistant_id, version)
);

-- Deleting an assistant cancels its active runs: find them without a scan of every run.
CREATE INDEX runs_assistant_active ON runs (assistant_id) WHERE status IN ('pending', 'running');

-- Threads with a TTL only (most threads have none): the sweeper reads this table, not `threads`.
CREATE TABLE thread_ttls (
    thread_id TEXT PRIMARY KEY REFERENCES threads (thread_id) ON DELETE CASCADE,
    -- Counted from the thread's `updated_at`, in microseconds.
    ttl_micros INTEGER NOT NULL CHECK (ttl_micros >= 0),
    strategy  TEXT NOT NULL DEFAULT 'delete' CHECK (strategy IN ('delete'))
);
