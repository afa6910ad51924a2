-- Crons and the webhook outbox.

CREATE TABLE crons (
    cron_id            text PRIMARY KEY,
    owner              text NOT NULL,
    assistant_id       text NOT NULL,
    -- NULL: stateless (each fire gets a new thread). A thread's crons go with it.
    thread_id          text REFERENCES threads (thread_id) ON DELETE CASCADE,
    schedule           text NOT NULL,
    timezone           text,
    end_time           timestamptz,
    enabled            boolean NOT NULL,
    on_run_completed   text CHECK (on_run_completed IN ('delete', 'keep')),
    payload            jsonb NOT NULL DEFAULT '{}',
    kwargs             jsonb NOT NULL DEFAULT '{}',
    metadata           jsonb NOT NULL DEFAULT '{}',
    multitask_strategy text NOT NULL CHECK (multitask_strategy IN ('reject', 'interrupt', 'rollback', 'enqueue')),
    -- The slot schedulers claim (row lock, FOR UPDATE SKIP LOCKED) and move forward in the
    -- transaction that admits the slot's run.
    next_run_date      timestamptz,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);

CREATE INDEX crons_owner_created ON crons (owner, created_at);
CREATE INDEX crons_next_run ON crons (next_run_date) WHERE enabled AND next_run_date IS NOT NULL;
CREATE INDEX crons_thread ON crons (thread_id) WHERE thread_id IS NOT NULL;

-- Webhooks to POST, written in the transaction that makes their run terminal. No foreign key: the
-- run (and its thread) may be deleted before delivery (stateless runs), the payload is a snapshot.
CREATE TABLE webhook_outbox (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     text NOT NULL UNIQUE,
    run_id          text NOT NULL,
    url             text NOT NULL,
    payload         jsonb NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    last_error      text,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'failed'))
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
