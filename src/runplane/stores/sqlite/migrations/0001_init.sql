-- Threads and runs. Timestamps are INTEGER microseconds since the Unix epoch (UTC), so they sort
-- and compare exactly in SQL; JSON columns hold UTF-8 JSON text.
-- LangGraph's AsyncSqliteSaver keeps its own tables (checkpoints, writes) in this same file; it
-- creates them itself and never touches ours.

CREATE TABLE threads (
    thread_id    TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('idle', 'busy', 'interrupted', 'error')),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    metadata     TEXT NOT NULL DEFAULT '{}',
    -- `values` is an SQL keyword.
    state_values TEXT,
    interrupts   TEXT NOT NULL DEFAULT '{}'
);

-- Thread search pages through one owner's threads in one of these orders.
CREATE INDEX threads_owner_created ON threads (owner, created_at, thread_id);
CREATE INDEX threads_owner_updated ON threads (owner, updated_at, thread_id);

CREATE TABLE runs (
    -- Admission order. The queue is FIFO by this, never by timestamps (clocks tie and go back).
    seq                INTEGER PRIMARY KEY,
    run_id             TEXT NOT NULL UNIQUE,
    thread_id          TEXT NOT NULL REFERENCES threads (thread_id),
    assistant_id       TEXT NOT NULL,
    owner              TEXT NOT NULL,
    status             TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'success', 'error', 'timeout', 'interrupted')),
    multitask_strategy TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    metadata           TEXT NOT NULL DEFAULT '{}',
    kwargs             TEXT NOT NULL DEFAULT '{}',
    not_before         INTEGER,
    started_at         INTEGER,
    ended_at           INTEGER,
    error              TEXT,
    model_name         TEXT,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    total_tokens       INTEGER NOT NULL DEFAULT 0,
    attempt            INTEGER NOT NULL DEFAULT 0,
    lease_owner        TEXT,
    lease_expires_at   INTEGER,
    cancel_action      TEXT CHECK (cancel_action IN ('interrupt', 'rollback')),
    idempotency_key    TEXT,
    fingerprint        TEXT,
    UNIQUE (owner, idempotency_key)
);

-- A thread's runs, newest first (list_runs) and all of them (delete_thread, usage).
CREATE INDEX runs_thread_seq ON runs (thread_id, seq);
-- The queue: claim walks pending runs in admission order and stops at the first runnable one.
-- (Partial, so it holds only the queue; a full (status, seq) index would be maintained on every
-- status change for no query.)
CREATE INDEX runs_pending_seq ON runs (seq) WHERE status = 'pending';
-- "Is this the first pending run of its thread?" and "does the thread have a pending run?"
CREATE INDEX runs_pending_thread ON runs (thread_id, seq) WHERE status = 'pending';
-- The last guard of "one running run per thread", whatever the code above it does.
CREATE UNIQUE INDEX runs_one_running ON runs (thread_id) WHERE status = 'running';
-- Lease recovery looks for running runs whose lease expired.
CREATE INDEX runs_running_lease ON runs (lease_expires_at) WHERE status = 'running';
