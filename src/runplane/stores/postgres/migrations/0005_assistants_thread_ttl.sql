-- Assistants with their immutable versions, and thread time-to-live.
-- (0005: after the 0003 and 0004 of the branches merged before this one.)

CREATE TABLE assistants (
    assistant_id text PRIMARY KEY,
    owner        text NOT NULL,
    -- A graph's own assistant: every owner may read it (only its owner may change it).
    system       boolean NOT NULL DEFAULT false,
    graph_id     text NOT NULL,
    name         text NOT NULL,
    description  text,
    config       jsonb NOT NULL DEFAULT '{}',
    context      jsonb NOT NULL DEFAULT '{}',
    metadata     jsonb NOT NULL DEFAULT '{}',
    -- The current version (PATCH adds one; `latest` may point back to an older one).
    version      integer NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

CREATE INDEX assistants_owner_created ON assistants (owner, created_at);
CREATE INDEX assistants_metadata ON assistants USING gin (metadata jsonb_path_ops);

CREATE TABLE assistant_versions (
    assistant_id text NOT NULL REFERENCES assistants (assistant_id) ON DELETE CASCADE,
    version      integer NOT NULL,
    graph_id     text NOT NULL,
    name         text NOT NULL,
    description  text,
    config       jsonb NOT NULL,
    context      jsonb NOT NULL,
    metadata     jsonb NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (assistant_id, version)
);

-- Deleting an assistant cancels its active runs: find them without a scan of every run.
CREATE INDEX runs_assistant_active ON runs (assistant_id) WHERE status IN ('pending', 'running');

-- Threads with a TTL only (most threads have none): the sweeper reads this table, not `threads`.
CREATE TABLE thread_ttls (
    thread_id text PRIMARY KEY REFERENCES threads (thread_id) ON DELETE CASCADE,
    -- Counted from the thread's `updated_at`.
    ttl       interval NOT NULL CHECK (ttl >= interval '0'),
    strategy  text NOT NULL DEFAULT 'delete' CHECK (strategy IN ('delete'))
);
