-- Crons and the webhook outbox. Timestamps are INTEGER microseconds since the Unix epoch (UTC).

CREATE TABLE crons (
    cron_id            TEXT PRIMARY KEY,
    owner              TEXT NOT NULL,
    assistant_id       TEXT NOT NULL,
    -- NULL: stateless (each fire gets a new thread). A thread's crons go with it.
    thread_id          TEXT REFERENCES threads (thread_id) ON DELETE CASCADE,
    schedule           TEXT NOT NULL,
    timezone           TEXT,
    end_time           INTEGER,
    enabled            INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    on_run_completed   TEXT CHECK (on_run_completed IN ('delete', 'keep')),
    payload            TEXT NOT NULL DEFAULT '{}',
    kwargs             TEXT NOT NULL DEFAULT '{}',
    metadata           TEXT NOT NULL DEFAULT '{}',
    multitask_strategy TEXT NOT NULL,
    -- The slot schedulers claim: moved forward by a conditional UPDATE in the transaction that
    -- admits the slot's run.
    next_run_date      INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

CREATE INDEX crons_owner_created ON crons (owner, created_at);
-- The scheduler's "what is due, and when is the next slot".
CREATE INDEX crons_next_run ON crons (next_run_date) WHERE enabled = 1 AND next_run_date IS NOT NULL;
CREATE INDEX crons_thread ON crons (thread_id) WHERE thread_id IS NOT NULL;

-- Webhooks to POST, written in the transaction that makes their run terminal. No foreign key: the
-- run (and its thread) may be deleted before delivery (stateless runs), the payload is a snapshot.
CREATE TABLE webhook_outbox (
    seq             INTEGER PRIMARY KEY,
    delivery_id     TEXT NOT NULL UNIQUE,
    run_id          TEXT NOT NULL,
    url             TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    last_error      TEXT,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'failed'))
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
