-- Every statement PostgresStore runs. Parameters are named (%(name)s); timestamps always come from
-- the store's clock as parameters, never from now(), so tests can move time.

-- name: migration_lock
-- Serialize migrations of every process on this database until the transaction ends.
SELECT pg_advisory_xact_lock(%(key)s)

-- name: create_migrations_table
-- The version table; created under the migration lock.
CREATE TABLE IF NOT EXISTS runplane_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL
)

-- name: migration_applied
-- Whether one migration is recorded.
SELECT 1 AS applied FROM runplane_migrations WHERE version = %(version)s

-- name: record_migration
-- Record an applied migration.
INSERT INTO runplane_migrations (version, name, applied_at) VALUES (%(version)s, %(name)s, %(now)s)

-- name: applied_migrations
-- The recorded migrations, oldest first.
SELECT version, name FROM runplane_migrations ORDER BY version

-- name: insert_thread
-- Create a thread unless its id exists (then nothing is returned).
INSERT INTO threads (thread_id, owner, status, created_at, updated_at, metadata)
VALUES (%(thread_id)s, %(owner)s, 'idle', %(now)s, %(now)s, %(metadata)s)
ON CONFLICT (thread_id) DO NOTHING
RETURNING *

-- name: get_thread
-- A thread by id, whoever owns it.
SELECT * FROM threads WHERE thread_id = %(thread_id)s

-- name: lock_thread
-- Lock a thread row: every change to the pending/running runs of a thread happens under it.
SELECT * FROM threads WHERE thread_id = %(thread_id)s FOR UPDATE

-- name: lock_thread_of_run
-- Lock the thread of a run (a run never changes thread, so reading its thread_id first is safe).
SELECT t.thread_id FROM threads AS t
WHERE t.thread_id = (SELECT r.thread_id FROM runs AS r WHERE r.run_id = %(run_id)s)
FOR UPDATE OF t

-- name: update_thread_metadata
-- Merge metadata into a thread's (top-level keys, like a dict update).
UPDATE threads SET metadata = metadata || %(metadata)s, updated_at = %(now)s
WHERE thread_id = %(thread_id)s AND owner = %(owner)s
RETURNING *

-- name: set_thread_state
-- Store graph values and interrupts; the status only when the thread has no active run.
UPDATE threads AS t SET
    state_values = %(values)s,
    interrupts = %(interrupts)s,
    status = CASE
        WHEN %(status)s::text IS NULL THEN t.status
        WHEN EXISTS (
            SELECT 1 FROM runs AS r WHERE r.thread_id = t.thread_id AND r.status IN ('pending', 'running')
        ) THEN t.status
        ELSE %(status)s::text
    END,
    updated_at = %(now)s
WHERE t.thread_id = %(thread_id)s
RETURNING *

-- name: settle_thread
-- Recompute a locked thread's queue head and, when an outcome is given, its status (busy while a
-- run is active), in one statement (`runplane_settle_thread`, migration 0017). Returns whether that
-- head is claimable at `due_at` (`lifecycle.head_is_claimable`).
SELECT s.head_claimable
FROM runplane_settle_thread(
    %(thread_id)s, %(outcome)s, %(now)s, %(due_at)s,
    %(set_values)s, %(values)s, %(interrupts)s, %(set_error)s, %(error)s
) AS s(head_claimable)

-- name: settle_admitted
-- The locked thread of a run just admitted: busy, its queue head recomputed, and the config (merged
-- by the caller) and metadata (merged here) the admission leaves (`runplane_settle_admitted`,
-- migration 0017).
SELECT * FROM runplane_settle_admitted(%(thread_id)s, %(now)s, %(config)s, %(metadata)s)

-- name: delete_thread_runs
-- Delete every run of a thread, returning them.
DELETE FROM runs WHERE thread_id = %(thread_id)s RETURNING *

-- name: delete_thread
-- Delete a thread (its runs are already gone).
DELETE FROM threads WHERE thread_id = %(thread_id)s

-- name: search_threads
-- A page of an owner's threads; metadata matches when every wanted top-level key is present and equal.
SELECT * FROM threads
WHERE owner = %(owner)s
    AND (%(ids)s::text[] IS NULL OR thread_id = ANY(%(ids)s::text[]))
    AND (%(status)s::text IS NULL OR status = %(status)s::text)
    AND metadata @> %(metadata)s::jsonb
    AND NOT EXISTS (
        SELECT 1 FROM jsonb_each(%(metadata)s::jsonb) AS wanted (key, value)
        WHERE threads.metadata -> wanted.key IS DISTINCT FROM wanted.value
    )
ORDER BY __ORDER_BY__
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_threads
-- How many of an owner's threads match (same filter as search_threads).
SELECT count(*) AS n FROM threads
WHERE owner = %(owner)s
    AND (%(ids)s::text[] IS NULL OR thread_id = ANY(%(ids)s::text[]))
    AND (%(status)s::text IS NULL OR status = %(status)s::text)
    AND metadata @> %(metadata)s::jsonb
    AND NOT EXISTS (
        SELECT 1 FROM jsonb_each(%(metadata)s::jsonb) AS wanted (key, value)
        WHERE threads.metadata -> wanted.key IS DISTINCT FROM wanted.value
    )

-- name: thread_usage
-- Token usage summed over the runs of a thread.
SELECT
    COALESCE(sum(input_tokens), 0)::bigint AS input_tokens,
    COALESCE(sum(output_tokens), 0)::bigint AS output_tokens,
    COALESCE(sum(total_tokens), 0)::bigint AS total_tokens
FROM runs WHERE thread_id = %(thread_id)s

-- name: admission_probe
-- The run with this id and the owner's run with this idempotency key, if any.
SELECT *, (owner = %(owner)s AND idempotency_key = %(idempotency_key)s) IS TRUE AS idempotent
FROM runs
WHERE run_id = %(run_id)s OR (owner = %(owner)s AND idempotency_key = %(idempotency_key)s)

-- name: active_runs
-- The pending and running runs of a thread, in admission order.
SELECT * FROM runs
WHERE thread_id = %(thread_id)s AND status IN ('pending', 'running')
ORDER BY seq

-- name: insert_run
-- Admit a run: pending, at the end of the queue; or, with a `worker_id`, claimed by that worker
-- (`NewRun.claim_for`), as `runplane_admit` (migration 0018) inserts it.
INSERT INTO runs (
    run_id, thread_id, assistant_id, owner, status, multitask_strategy, created_at, updated_at,
    metadata, kwargs, not_before, idempotency_key, fingerprint,
    attempt, lease_owner, lease_expires_at, claim_seq, started_at
)
VALUES (
    %(run_id)s, %(thread_id)s, %(assistant_id)s, %(owner)s,
    CASE WHEN %(worker_id)s::text IS NULL THEN 'pending' ELSE 'running' END,
    %(multitask_strategy)s, %(now)s, %(now)s,
    %(metadata)s, %(kwargs)s, %(not_before)s, %(idempotency_key)s, %(fingerprint)s,
    CASE WHEN %(worker_id)s::text IS NULL THEN 0 ELSE 1 END, %(worker_id)s,
    CASE WHEN %(worker_id)s::text IS NULL THEN NULL ELSE %(lease_expires_at)s::timestamptz END,
    CASE WHEN %(worker_id)s::text IS NULL THEN NULL ELSE nextval('runs_claim_seq') END,
    CASE WHEN %(worker_id)s::text IS NULL THEN NULL ELSE %(now)s::timestamptz END
)
RETURNING *

-- name: get_run
-- A run of an owner, optionally only on one thread.
SELECT * FROM runs
WHERE run_id = %(run_id)s AND owner = %(owner)s AND (%(thread_id)s::text IS NULL OR thread_id = %(thread_id)s::text)

-- name: get_run_for_update
-- A run by id, locked for the rest of the transaction.
SELECT * FROM runs WHERE run_id = %(run_id)s FOR UPDATE

-- name: hold_attempt
-- Share-lock the run while `attempt` still holds it: its recovery, a cancel request and any later
-- claim wait until the transaction ends (several writes of one attempt share the lock). The fenced
-- checkpoint is written in this transaction (`PostgresStore.hold_attempt`), so its commit waits for
-- the WAL flush like any other. In the same round trip, end this session if it stays idle in its
-- transaction for longer than `timeout_ms` (a stalled holder must not keep the run's lock for
-- ever); the volatile CTE runs once.
WITH idle_limit AS (
    SELECT set_config('idle_in_transaction_session_timeout', %(timeout_ms)s, true)
)
SELECT r.attempt FROM runs AS r CROSS JOIN idle_limit
WHERE r.run_id = %(run_id)s AND r.status = 'running' AND r.attempt = %(attempt)s
FOR SHARE OF r

-- name: check_hold
-- `hold_attempt` for a transaction sent whole (BEGIN, this, the fenced checkpoint's statements,
-- COMMIT: one round trip): share-lock the run while `attempt` still holds it, else fail the
-- transaction (SQLSTATE RPL01, `runplane_check_hold`, migration 0019), so that nothing after it
-- commits.
SELECT runplane_check_hold(%(run_id)s, %(attempt)s)

-- name: list_runs
-- A page of a thread's runs, newest first.
SELECT * FROM runs
WHERE thread_id = %(thread_id)s AND (%(status)s::text IS NULL OR status = %(status)s::text)
ORDER BY seq DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: request_cancel
-- Record a cancel request on a running run; a rollback request is never downgraded.
UPDATE runs SET cancel_action = %(action)s, updated_at = %(now)s
WHERE run_id = ANY(%(run_ids)s::text[]) AND cancel_action IS DISTINCT FROM 'rollback'

-- name: interrupt_pending
-- Cancel pending runs before they start.
UPDATE runs SET status = 'interrupted', cancel_action = %(action)s, ended_at = %(now)s, updated_at = %(now)s
WHERE run_id = ANY(%(run_ids)s::text[]) AND status = 'pending'
RETURNING *

-- name: get_runs
-- Runs by id.
SELECT * FROM runs WHERE run_id = ANY(%(run_ids)s::text[])

-- name: delete_runs
-- Delete runs by id, returning them as they were.
DELETE FROM runs WHERE run_id = ANY(%(run_ids)s::text[]) RETURNING *

-- name: admit
-- Admit a run on a thread with no active run and no hold, in one statement (`runplane_admit`,
-- migrations 0017 and 0018); `outcome` 'decide' leaves the admission to the store's transaction.
-- With a `worker_id`, the run is admitted claimed by that worker. With an `assistant_version`,
-- only if that is still the assistant's (migration 0019; else `outcome` 'assistant_changed').
SELECT (a.admitted_run).*, a.outcome
FROM runplane_admit(
    %(run_id)s, %(thread_id)s, %(assistant_id)s, %(owner)s, %(multitask_strategy)s,
    %(now)s, %(metadata)s, %(kwargs)s, %(not_before)s,
    %(idempotency_key)s, %(fingerprint)s,
    %(creates)s, %(thread_metadata)s, %(thread_config)s, %(thread_metadata_update)s,
    %(worker_id)s, %(lease_expires_at)s,
    %(assistant_version)s, %(assistant_created_at)s
) AS a

-- name: claim
-- Claim the oldest due queue head with a lease and settle its thread, in one statement
-- (`runplane_claim`, migration 0017); `more`: whether another thread's queue head is due;
-- `contended`, with no run: whether a due head was passed over, its thread held by another
-- transaction.
SELECT (c.claimed_run).*, c.more, c.contended
FROM runplane_claim(%(worker_id)s, %(lease_expires_at)s, %(now)s) AS c

-- name: finish
-- End a held run and settle its thread with the settlement given, in one statement
-- (`runplane_finish`, migration 0017). No row: the lease is lost.
SELECT (f.ended_run).*, f.head_claimable, f.refused_for, f.has_webhook
FROM runplane_finish(
    %(run_id)s, %(attempt)s, %(now)s,
    %(status)s, %(error)s, %(model_name)s,
    %(input_tokens)s, %(output_tokens)s, %(total_tokens)s,
    %(yields_to_cancel)s,
    %(thread_status)s, %(sets_error)s, %(thread_error)s,
    %(set_values)s, %(values)s, %(interrupts)s
) AS f

-- name: renew_lease
-- Extend the lease of the claim (fenced by attempt and worker); returns the requested cancel action.
UPDATE runs SET lease_expires_at = %(lease_expires_at)s
WHERE run_id = %(run_id)s AND status = 'running' AND attempt = %(attempt)s AND lease_owner = %(worker_id)s
RETURNING cancel_action

-- name: record_progress
-- Store the model name and token usage seen so far (fenced by attempt).
UPDATE runs SET
    model_name = COALESCE(%(model_name)s::text, model_name),
    input_tokens = COALESCE(%(input_tokens)s::bigint, input_tokens),
    output_tokens = COALESCE(%(output_tokens)s::bigint, output_tokens),
    total_tokens = COALESCE(%(total_tokens)s::bigint, total_tokens),
    updated_at = %(now)s
WHERE run_id = %(run_id)s AND status = 'running' AND attempt = %(attempt)s
RETURNING run_id

-- name: end_run
-- Give a held run its final status and drop its lease (fenced by attempt).
UPDATE runs SET
    status = %(status)s,
    error = %(error)s,
    model_name = COALESCE(%(model_name)s::text, model_name),
    input_tokens = COALESCE(%(input_tokens)s::bigint, input_tokens),
    output_tokens = COALESCE(%(output_tokens)s::bigint, output_tokens),
    total_tokens = COALESCE(%(total_tokens)s::bigint, total_tokens),
    ended_at = %(now)s,
    updated_at = %(now)s,
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE run_id = %(run_id)s AND status = 'running' AND attempt = %(attempt)s
RETURNING *

-- name: requeue_run
-- Hand a held run back to the queue; it keeps its place (seq) and attempt.
UPDATE runs SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = %(now)s
WHERE run_id = %(run_id)s AND status = 'running' AND attempt = %(attempt)s
RETURNING *

-- name: queue_stats
-- Pending and running runs and the workers holding them, over every owner (operators' metrics).
SELECT
    COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending,
    COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0) AS running,
    COUNT(DISTINCT CASE WHEN status = 'running' THEN lease_owner END) AS busy_workers
FROM runs
WHERE status IN ('pending', 'running')

-- name: expired_runs
-- Running runs whose lease has expired, in claim order.
SELECT * FROM runs
WHERE status = 'running' AND lease_expires_at < %(now)s
ORDER BY claim_seq
LIMIT %(limit)s

-- name: insert_cron
-- A new cron (nothing returned when the id exists).
INSERT INTO crons (
    cron_id, owner, assistant_id, thread_id, schedule, timezone, end_time, enabled, on_run_completed,
    payload, kwargs, metadata, multitask_strategy, next_run_date, created_at, updated_at
) VALUES (
    %(cron_id)s, %(owner)s, %(assistant_id)s, %(thread_id)s, %(schedule)s, %(timezone)s, %(end_time)s,
    %(enabled)s, %(on_run_completed)s, %(payload)s, %(kwargs)s, %(metadata)s, %(multitask_strategy)s,
    %(next_run_date)s, %(now)s, %(now)s
)
ON CONFLICT (cron_id) DO NOTHING
RETURNING *

-- name: get_cron
-- A cron by id, whoever owns it.
SELECT * FROM crons WHERE cron_id = %(cron_id)s

-- name: lock_cron
-- A cron by id, locked for an update.
SELECT * FROM crons WHERE cron_id = %(cron_id)s FOR UPDATE

-- name: update_cron
-- Replace a cron's fields (the caller merged them).
UPDATE crons SET
    schedule = %(schedule)s,
    timezone = %(timezone)s,
    end_time = %(end_time)s,
    enabled = %(enabled)s,
    on_run_completed = %(on_run_completed)s,
    payload = %(payload)s,
    kwargs = %(kwargs)s,
    metadata = %(metadata)s,
    next_run_date = %(next_run_date)s,
    updated_at = %(now)s
WHERE cron_id = %(cron_id)s
RETURNING *

-- name: delete_cron
-- Remove an owner's cron; nothing returned when there is none.
DELETE FROM crons WHERE cron_id = %(cron_id)s AND owner = %(owner)s RETURNING cron_id

-- name: search_crons
-- A page of an owner's crons (metadata: every wanted top-level key present and equal).
SELECT * FROM crons
WHERE owner = %(owner)s
    AND (%(assistant_id)s::text IS NULL OR assistant_id = %(assistant_id)s::text)
    AND (%(thread_id)s::text IS NULL OR thread_id = %(thread_id)s::text)
    AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s::boolean)
    AND metadata @> %(metadata)s::jsonb
    AND NOT EXISTS (
        SELECT 1 FROM jsonb_each(%(metadata)s::jsonb) AS wanted (key, value)
        WHERE crons.metadata -> wanted.key IS DISTINCT FROM wanted.value
    )
ORDER BY __ORDER_BY__
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_crons
-- How many of an owner's crons match (same filter as search_crons).
SELECT count(*) AS n FROM crons
WHERE owner = %(owner)s
    AND (%(assistant_id)s::text IS NULL OR assistant_id = %(assistant_id)s::text)
    AND (%(thread_id)s::text IS NULL OR thread_id = %(thread_id)s::text)
    AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s::boolean)
    AND metadata @> %(metadata)s::jsonb
    AND NOT EXISTS (
        SELECT 1 FROM jsonb_each(%(metadata)s::jsonb) AS wanted (key, value)
        WHERE crons.metadata -> wanted.key IS DISTINCT FROM wanted.value
    )

-- name: due_crons
-- Crons with a slot to fire now (lifecycle.cron_is_due), oldest slot first.
SELECT * FROM crons
WHERE enabled AND next_run_date IS NOT NULL AND next_run_date <= %(now)s
    AND (end_time IS NULL OR next_run_date <= end_time)
ORDER BY next_run_date, cron_id COLLATE "C"
LIMIT %(limit)s

-- name: next_cron_slot
-- The earliest slot an enabled cron will fire (not past its end).
SELECT min(next_run_date) AS slot FROM crons
WHERE enabled AND next_run_date IS NOT NULL AND (end_time IS NULL OR next_run_date <= end_time)

-- name: lock_cron_slot
-- Lock a cron still waiting for `slot`; a cron another scheduler holds is skipped (no row), so the
-- loser of a race neither waits nor fires.
SELECT cron_id FROM crons
WHERE cron_id = %(cron_id)s AND enabled AND next_run_date = %(slot)s
FOR UPDATE SKIP LOCKED

-- name: move_cron_slot
-- Move a locked cron to its next slot.
UPDATE crons SET next_run_date = %(next_run_date)s, updated_at = %(now)s WHERE cron_id = %(cron_id)s

-- name: thread_values
-- A thread's last values (the webhook payload of a run ending on it).
SELECT state_values FROM threads WHERE thread_id = %(thread_id)s

-- name: insert_webhook
-- A delivery in the outbox, due now.
INSERT INTO webhook_outbox (delivery_id, run_id, url, payload, attempts, next_attempt_at, created_at)
VALUES (%(delivery_id)s, %(run_id)s, %(url)s, %(payload)s, 0, %(now)s, %(now)s)

-- name: claim_webhooks
-- Take due deliveries (others' claims skipped): one more attempt each, hidden until the lease ends.
UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = %(lease_until)s
WHERE seq IN (
    SELECT seq FROM webhook_outbox
    WHERE status = 'pending' AND next_attempt_at <= %(now)s
    ORDER BY next_attempt_at, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING *

-- name: delete_webhook
-- A delivered webhook leaves the outbox.
DELETE FROM webhook_outbox WHERE delivery_id = %(delivery_id)s

-- name: fail_webhook
-- A failed attempt: due again at retry_at, or `failed` for good when it is NULL.
UPDATE webhook_outbox SET
    last_error = %(error)s,
    status = CASE WHEN %(retry_at)s::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
    next_attempt_at = COALESCE(%(retry_at)s::timestamptz, next_attempt_at)
WHERE delivery_id = %(delivery_id)s

-- name: next_webhook_due
-- When the earliest pending delivery is due.
SELECT min(next_attempt_at) AS due FROM webhook_outbox WHERE status = 'pending'

-- name: list_webhooks
-- The outbox, oldest first.
SELECT * FROM webhook_outbox ORDER BY created_at, seq LIMIT %(limit)s


-- name: get_assistant
-- One assistant by id, whoever owns it (callers check visibility).
SELECT * FROM assistants WHERE assistant_id = %(assistant_id)s

-- name: assistant_seen
-- Which version of an assistant is current (an admission checks the one its run was built from).
SELECT version, created_at FROM assistants WHERE assistant_id = %(assistant_id)s

-- name: lock_assistant
-- One assistant by id, locked until the transaction ends (versions are numbered under it).
SELECT * FROM assistants WHERE assistant_id = %(assistant_id)s FOR UPDATE

-- name: insert_assistant
-- A new assistant at version 1, unless its id exists (then nothing is returned).
INSERT INTO assistants (assistant_id, owner, system, graph_id, name, description, config, context,
                        metadata, version, created_at, updated_at)
VALUES (%(assistant_id)s, %(owner)s, %(system)s, %(graph_id)s, %(name)s, %(description)s, %(config)s,
        %(context)s, %(metadata)s, 1, %(now)s, %(now)s)
ON CONFLICT (assistant_id) DO NOTHING
RETURNING *

-- name: insert_assistant_version
-- An immutable version of an assistant.
INSERT INTO assistant_versions (assistant_id, version, graph_id, name, description, config, context,
                                metadata, created_at)
VALUES (%(assistant_id)s, %(version)s, %(graph_id)s, %(name)s, %(description)s, %(config)s, %(context)s,
        %(metadata)s, %(now)s)

-- name: next_assistant_version
-- The number of an assistant's next version (under the assistant's row lock).
SELECT coalesce(max(version), 0) + 1 AS version FROM assistant_versions WHERE assistant_id = %(assistant_id)s

-- name: get_assistant_version
-- One version of an assistant.
SELECT * FROM assistant_versions WHERE assistant_id = %(assistant_id)s AND version = %(version)s

-- name: set_assistant_current
-- Make a version the assistant's current one.
UPDATE assistants
SET graph_id = %(graph_id)s, name = %(name)s, description = %(description)s, config = %(config)s,
    context = %(context)s, metadata = %(metadata)s, version = %(version)s, updated_at = %(now)s
WHERE assistant_id = %(assistant_id)s
RETURNING *

-- name: delete_assistant
-- Delete an assistant (its versions go by cascade).
DELETE FROM assistants WHERE assistant_id = %(assistant_id)s

-- name: active_runs_of_assistant
-- Pending and running runs of an assistant, in admission order.
SELECT * FROM runs WHERE assistant_id = %(assistant_id)s AND status IN ('pending', 'running') ORDER BY seq

-- name: assistant_versions
-- One page of an assistant's versions matching a metadata filter (top-level keys equal), newest first.
SELECT * FROM assistant_versions
WHERE assistant_id = %(assistant_id)s
    AND metadata @> %(metadata)s::jsonb
    AND NOT EXISTS (
        SELECT 1 FROM jsonb_each(%(metadata)s::jsonb) AS wanted (key, value)
        WHERE assistant_versions.metadata -> wanted.key IS DISTINCT FROM wanted.value
    )
ORDER BY version DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: search_assistants
-- One page of the assistants an owner sees; __ORDER_BY__ is a whitelisted column and direction.
SELECT * FROM assistants
WHERE (owner = %(owner)s OR system)
    AND (%(graph_id)s::text IS NULL OR graph_id = %(graph_id)s::text)
    AND (%(graph_ids)s::text[] IS NULL OR graph_id = ANY(%(graph_ids)s::text[]))
    AND (%(name)s::text IS NULL OR strpos(lower(name), lower(%(name)s::text)) > 0)
    AND metadata @> %(metadata)s::jsonb
    AND NOT EXISTS (
        SELECT 1 FROM jsonb_each(%(metadata)s::jsonb) AS wanted (key, value)
        WHERE assistants.metadata -> wanted.key IS DISTINCT FROM wanted.value
    )
ORDER BY __ORDER_BY__
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_assistants
-- How many assistants an owner sees match.
SELECT count(*) AS count FROM assistants
WHERE (owner = %(owner)s OR system)
    AND (%(graph_id)s::text IS NULL OR graph_id = %(graph_id)s::text)
    AND (%(graph_ids)s::text[] IS NULL OR graph_id = ANY(%(graph_ids)s::text[]))
    AND (%(name)s::text IS NULL OR strpos(lower(name), lower(%(name)s::text)) > 0)
    AND metadata @> %(metadata)s::jsonb
    AND NOT EXISTS (
        SELECT 1 FROM jsonb_each(%(metadata)s::jsonb) AS wanted (key, value)
        WHERE assistants.metadata -> wanted.key IS DISTINCT FROM wanted.value
    )

-- name: set_thread_ttl
-- Set a thread's TTL.
INSERT INTO thread_ttls (thread_id, ttl, strategy)
VALUES (%(thread_id)s, make_interval(secs => %(seconds)s), %(strategy)s)
ON CONFLICT (thread_id) DO UPDATE SET ttl = excluded.ttl, strategy = excluded.strategy

-- name: clear_thread_ttl
-- Remove a thread's TTL.
DELETE FROM thread_ttls WHERE thread_id = %(thread_id)s

-- name: expired_threads
-- Threads whose TTL ran out and that have no active run, oldest expiry first.
SELECT t.* FROM thread_ttls x JOIN threads t ON t.thread_id = x.thread_id
WHERE t.updated_at + x.ttl <= %(now)s
    AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = t.thread_id AND r.status IN ('pending', 'running'))
ORDER BY t.updated_at + x.ttl, t.thread_id
LIMIT %(limit)s

-- name: thread_expired
-- The thread if its TTL ran out and it has no active run (the caller holds the thread's lock).
SELECT t.thread_id FROM thread_ttls x JOIN threads t ON t.thread_id = x.thread_id
WHERE t.thread_id = %(thread_id)s
    AND t.updated_at + x.ttl <= %(now)s
    AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = t.thread_id AND r.status IN ('pending', 'running'))
