-- Threads, runs and the run queue. Statuses are the SDK's wire words.

CREATE TABLE threads (
    thread_id    text PRIMARY KEY,
    owner        text NOT NULL,
    status       text NOT NULL CHECK (status IN ('idle', 'busy', 'interrupted', 'error')),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    state_values jsonb,
    interrupts   jsonb NOT NULL DEFAULT '{}',
    -- `runs.seq` of the thread's next claimable run: its oldest pending run, NULL while one of its
    -- runs is running or none waits. Rewritten under the thread's row lock by every transaction that
    -- changes the thread's pending/running runs, so that a claim is one short index scan here
    -- however many blocked runs wait behind running ones.
    queue_seq    bigint
);

CREATE INDEX threads_owner_created_at ON threads (owner, created_at);
CREATE INDEX threads_metadata ON threads USING gin (metadata jsonb_path_ops);
CREATE INDEX threads_queue ON threads (queue_seq) WHERE queue_seq IS NOT NULL;

-- The order of claims (`expired_runs` lists running runs by it, as the in-memory store does).
CREATE SEQUENCE runs_claim_seq AS bigint;

CREATE TABLE runs (
    run_id             text PRIMARY KEY,
    -- Admission order: the queue is FIFO by this, never by timestamps (clocks tie and skew).
    seq                bigint GENERATED ALWAYS AS IDENTITY,
    thread_id          text NOT NULL REFERENCES threads (thread_id) ON DELETE CASCADE,
    assistant_id       text NOT NULL,
    owner              text NOT NULL,
    status             text NOT NULL
        CHECK (status IN ('pending', 'running', 'success', 'error', 'timeout', 'interrupted')),
    multitask_strategy text NOT NULL CHECK (multitask_strategy IN ('reject', 'interrupt', 'rollback', 'enqueue')),
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    metadata           jsonb NOT NULL DEFAULT '{}',
    kwargs             jsonb NOT NULL DEFAULT '{}',
    not_before         timestamptz,
    started_at         timestamptz,
    ended_at           timestamptz,
    error              text,
    model_name         text,
    input_tokens       bigint NOT NULL DEFAULT 0,
    output_tokens      bigint NOT NULL DEFAULT 0,
    total_tokens       bigint NOT NULL DEFAULT 0,
    attempt            integer NOT NULL DEFAULT 0,
    lease_owner        text,
    lease_expires_at   timestamptz,
    claim_seq          bigint,
    cancel_action      text CHECK (cancel_action IN ('interrupt', 'rollback')),
    idempotency_key    text,
    fingerprint        text,
    CONSTRAINT runs_seq_key UNIQUE (seq),
    CONSTRAINT runs_idempotency_key UNIQUE (owner, idempotency_key)
);

-- One running run per thread, whatever the callers do: the last guard under the thread lock.
CREATE UNIQUE INDEX runs_one_running_per_thread ON runs (thread_id) WHERE status = 'running';
CREATE INDEX runs_thread_seq ON runs (thread_id, seq);
CREATE INDEX runs_active_thread_seq ON runs (thread_id, seq) WHERE status IN ('pending', 'running');
CREATE INDEX runs_running_lease ON runs (lease_expires_at) WHERE status = 'running';
