-- Every statement the SQLite store runs. Parameters are named (:name); `{...}` placeholders are
-- filled by store.py from fixed whitelists only, never from caller input.

-- name: migrations_table
-- The version table of applied migrations.
CREATE TABLE IF NOT EXISTS runplane_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
);

-- name: applied_migrations
-- Versions already applied.
SELECT version FROM runplane_migrations ORDER BY version;

-- name: record_migration
-- Mark a migration applied (inside its own transaction).
INSERT INTO runplane_migrations (version, name, applied_at) VALUES (:version, :name, :applied_at);

-- name: begin_immediate
-- Take the database's write lock now, so that read-check-write sequences serialize across
-- connections and processes (a deferred transaction could fail to upgrade under contention).
BEGIN IMMEDIATE;

-- name: get_thread
-- One thread by id, whoever owns it (callers check the owner).
SELECT * FROM threads WHERE thread_id = :thread_id;

-- name: insert_thread
-- A new thread.
INSERT INTO threads (thread_id, owner, status, created_at, updated_at, metadata, interrupts)
VALUES (:thread_id, :owner, :status, :now, :now, :metadata, '{}')
RETURNING *;

-- name: update_thread_metadata
-- Replace the (already merged) metadata.
UPDATE threads SET metadata = :metadata, updated_at = :now WHERE thread_id = :thread_id RETURNING *;

-- name: set_thread_state
-- Values and interrupts from a state update; the status only when no run is active.
UPDATE threads
SET state_values = :values,
    interrupts = :interrupts,
    status = CASE
        WHEN :status IS NULL THEN status
        WHEN EXISTS (SELECT 1 FROM runs WHERE thread_id = :thread_id AND status = 'pending')
            OR EXISTS (SELECT 1 FROM runs WHERE thread_id = :thread_id AND status = 'running')
            THEN status
        ELSE :status
    END,
    updated_at = :now
WHERE thread_id = :thread_id
RETURNING *;

-- name: settle_thread
-- A run of the thread ended or left the queue: busy while another run is active, else `outcome`.
-- Two indexed EXISTS probes (partial indexes), never a scan of the thread's runs.
UPDATE threads
SET status = CASE
        WHEN EXISTS (SELECT 1 FROM runs WHERE thread_id = :thread_id AND status = 'pending')
            OR EXISTS (SELECT 1 FROM runs WHERE thread_id = :thread_id AND status = 'running')
            THEN 'busy'
        ELSE :outcome
    END,
    updated_at = :now
WHERE thread_id = :thread_id;

-- name: finish_thread
-- Like settle_thread, also recording the graph's last values (kept when NULL) and interrupts.
UPDATE threads
SET status = CASE
        WHEN EXISTS (SELECT 1 FROM runs WHERE thread_id = :thread_id AND status = 'pending')
            OR EXISTS (SELECT 1 FROM runs WHERE thread_id = :thread_id AND status = 'running')
            THEN 'busy'
        ELSE :outcome
    END,
    state_values = COALESCE(:values, state_values),
    interrupts = :interrupts,
    error = :error,
    updated_at = :now
WHERE thread_id = :thread_id;

-- name: set_thread_config
-- The config a newly admitted run leaves on its thread (merged by the caller).
UPDATE threads SET config = :config WHERE thread_id = :thread_id;

-- name: set_thread_error
-- Why the thread's last run failed; NULL when it did not.
UPDATE threads SET error = :error WHERE thread_id = :thread_id;

-- name: mark_thread_busy
-- A run was admitted or claimed on the thread.
UPDATE threads SET status = 'busy', updated_at = :now WHERE thread_id = :thread_id;

-- name: delete_thread_runs
-- Every run of a thread, returned so the caller can tell which were still active.
DELETE FROM runs WHERE thread_id = :thread_id RETURNING *;

-- name: delete_thread
-- The thread itself (after its runs).
DELETE FROM threads WHERE thread_id = :thread_id;

-- name: search_threads
-- One page of an owner's threads; `{order}` is a whitelisted column and direction.
SELECT * FROM threads
WHERE owner = :owner
  AND (:status IS NULL OR status = :status)
  AND (:ids IS NULL OR thread_id IN (SELECT value FROM json_each(:ids)))
  AND (:metadata IS NULL OR runplane_metadata_matches(metadata, :metadata))
ORDER BY {order}
LIMIT :limit OFFSET :offset;

-- name: count_threads
-- How many of an owner's threads match.
SELECT count(*) FROM threads
WHERE owner = :owner
  AND (:status IS NULL OR status = :status)
  AND (:ids IS NULL OR thread_id IN (SELECT value FROM json_each(:ids)))
  AND (:metadata IS NULL OR runplane_metadata_matches(metadata, :metadata));

-- name: thread_usage
-- Token usage summed over a thread's runs; no row when the thread is unknown or not the owner's.
SELECT total(r.input_tokens) AS input_tokens,
       total(r.output_tokens) AS output_tokens,
       total(r.total_tokens) AS total_tokens
FROM threads AS t LEFT JOIN runs AS r ON r.thread_id = t.thread_id
WHERE t.thread_id = :thread_id AND t.owner = :owner
GROUP BY t.thread_id;

-- name: get_run
-- One run by id, whoever owns it (callers check owner and thread).
SELECT * FROM runs WHERE run_id = :run_id;

-- name: run_exists
-- Run ids are global.
SELECT 1 FROM runs WHERE run_id = :run_id;

-- name: get_run_by_idempotency_key
-- The run an idempotency key was first used for.
SELECT * FROM runs WHERE owner = :owner AND idempotency_key = :idempotency_key;

-- name: active_runs
-- A thread's pending and running runs in admission order, through the partial indexes.
SELECT * FROM (
    SELECT * FROM runs WHERE thread_id = :thread_id AND status = 'running'
    UNION ALL
    SELECT * FROM runs WHERE thread_id = :thread_id AND status = 'pending'
)
ORDER BY seq;

-- name: insert_run
-- A new pending run at the end of the queue.
INSERT INTO runs (
    run_id, thread_id, assistant_id, owner, status, multitask_strategy, created_at, updated_at,
    metadata, kwargs, not_before, idempotency_key, fingerprint
) VALUES (
    :run_id, :thread_id, :assistant_id, :owner, 'pending', :multitask_strategy, :now, :now,
    :metadata, :kwargs, :not_before, :idempotency_key, :fingerprint
);

-- name: request_cancel_running
-- Record a cancel request on a running run; a rollback request is never downgraded.
UPDATE runs SET cancel_action = :action, updated_at = :now
WHERE run_id = :run_id AND (cancel_action IS NULL OR cancel_action != 'rollback')
RETURNING *;

-- name: interrupt_pending
-- Settle a pending run that was cancelled before it started.
UPDATE runs SET status = 'interrupted', cancel_action = :action, ended_at = :now, updated_at = :now
WHERE run_id = :run_id AND status = 'pending'
RETURNING *;

-- name: delete_run
-- Remove a run.
DELETE FROM runs WHERE run_id = :run_id RETURNING *;

-- name: list_runs
-- One page of a thread's runs, newest first.
SELECT * FROM runs WHERE thread_id = :thread_id ORDER BY seq DESC LIMIT :limit OFFSET :offset;

-- name: list_runs_by_status
-- One page of a thread's runs in one status, newest first.
SELECT * FROM runs INDEXED BY runs_thread_seq WHERE thread_id = :thread_id AND status = :status
ORDER BY seq DESC LIMIT :limit OFFSET :offset;

-- name: claimable_run
-- The oldest runnable run: pending, the first pending run of its thread, its thread has no running
-- run, and it is due. Walks the pending index in admission order; each step is two index probes.
SELECT r.seq FROM runs AS r INDEXED BY runs_pending_seq
WHERE r.status = 'pending'
  AND NOT EXISTS (
      SELECT 1 FROM runs AS p WHERE p.thread_id = r.thread_id AND p.status = 'pending' AND p.seq < r.seq
  )
  AND NOT EXISTS (SELECT 1 FROM runs AS x WHERE x.thread_id = r.thread_id AND x.status = 'running')
  AND (r.not_before IS NULL OR r.not_before <= :now)
ORDER BY r.seq
LIMIT 1;

-- name: thread_head_claimable
-- Whether the oldest pending run of a thread may be claimed now (`lifecycle.head_is_claimable`): no
-- run of the thread is running and it is due. No row: the thread has no pending run.
SELECT (r.not_before IS NULL OR r.not_before <= :now)
   AND NOT EXISTS (SELECT 1 FROM runs AS x WHERE x.thread_id = r.thread_id AND x.status = 'running')
   AS claimable
FROM runs AS r INDEXED BY runs_pending_thread
WHERE r.thread_id = :thread_id AND r.status = 'pending'
ORDER BY r.seq
LIMIT 1;

-- name: claim_run
-- Take a lease on the run at `:seq` if it is still pending; the attempt becomes the fencing token.
UPDATE runs
SET status = 'running',
    attempt = attempt + 1,
    lease_owner = :worker_id,
    lease_expires_at = :lease_expires_at,
    started_at = COALESCE(started_at, :now),
    updated_at = :now
WHERE seq = :seq AND status = 'pending'
RETURNING *;

-- name: get_held_run
-- The run if `attempt` still holds it.
SELECT * FROM runs WHERE run_id = :run_id AND status = 'running' AND attempt = :attempt;

-- name: renew_lease
-- Extend the lease of the current attempt; returns the pending cancel request, if any.
UPDATE runs SET lease_expires_at = :lease_expires_at
WHERE run_id = :run_id AND status = 'running' AND attempt = :attempt AND lease_owner = :worker_id
RETURNING cancel_action;

-- name: record_progress
-- Model name and usage so far, fenced by attempt; NULL keeps the stored value.
UPDATE runs
SET model_name = COALESCE(:model_name, model_name),
    input_tokens = COALESCE(:input_tokens, input_tokens),
    output_tokens = COALESCE(:output_tokens, output_tokens),
    total_tokens = COALESCE(:total_tokens, total_tokens),
    updated_at = :now
WHERE run_id = :run_id AND status = 'running' AND attempt = :attempt
RETURNING seq;

-- name: finish_run
-- End the run held by `attempt`, unless a cancel request must win (the worker then takes the
-- cancel path). No row: the caller re-reads to tell which.
UPDATE runs
SET status = :status,
    error = :error,
    model_name = COALESCE(:model_name, model_name),
    input_tokens = COALESCE(:input_tokens, input_tokens),
    output_tokens = COALESCE(:output_tokens, output_tokens),
    total_tokens = COALESCE(:total_tokens, total_tokens),
    ended_at = :now,
    updated_at = :now,
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE run_id = :run_id AND status = 'running' AND attempt = :attempt
  AND (cancel_action IS NULL OR :status = 'interrupted')
RETURNING *;

-- name: discard_run
-- Delete the run held by `attempt` (its worker rolled the thread back).
DELETE FROM runs WHERE run_id = :run_id AND status = 'running' AND attempt = :attempt RETURNING *;

-- name: release_run
-- Hand the run held by `attempt` back to the queue; it keeps its place (seq) and attempt count.
UPDATE runs
SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE run_id = :run_id AND status = 'running' AND attempt = :attempt
RETURNING *;

-- name: queue_stats
-- Pending and running runs and the workers holding them, over every owner (operators' metrics).
SELECT
    COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending,
    COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0) AS running,
    COUNT(DISTINCT CASE WHEN status = 'running' THEN lease_owner END) AS busy_workers
FROM runs
WHERE status IN ('pending', 'running');

-- name: expired_runs
-- Running runs whose lease ran out, soonest-expired first.
SELECT * FROM runs INDEXED BY runs_running_lease
WHERE status = 'running' AND lease_expires_at < :now
ORDER BY lease_expires_at, seq
LIMIT :limit;

-- name: recover_run
-- Settle an expired run as `core.lifecycle.recovery_plan` says: interrupted, error or pending
-- (which keeps ended_at).
UPDATE runs
SET status = :status,
    error = :error,
    ended_at = COALESCE(:ended_at, ended_at),
    lease_owner = NULL,
    lease_expires_at = NULL,
    updated_at = :now
WHERE run_id = :run_id AND status = 'running' AND attempt = :attempt
RETURNING *;

-- name: insert_cron
-- A new cron.
INSERT INTO crons (
    cron_id, owner, assistant_id, thread_id, schedule, timezone, end_time, enabled, on_run_completed,
    payload, kwargs, metadata, multitask_strategy, next_run_date, created_at, updated_at
) VALUES (
    :cron_id, :owner, :assistant_id, :thread_id, :schedule, :timezone, :end_time, :enabled,
    :on_run_completed, :payload, :kwargs, :metadata, :multitask_strategy, :next_run_date, :now, :now
)
RETURNING *;

-- name: get_cron
-- One cron by id, whoever owns it (callers check the owner).
SELECT * FROM crons WHERE cron_id = :cron_id;

-- name: update_cron
-- Replace a cron's fields (the caller merged them).
UPDATE crons
SET schedule = :schedule,
    timezone = :timezone,
    end_time = :end_time,
    enabled = :enabled,
    on_run_completed = :on_run_completed,
    payload = :payload,
    kwargs = :kwargs,
    metadata = :metadata,
    next_run_date = :next_run_date,
    updated_at = :now
WHERE cron_id = :cron_id
RETURNING *;

-- name: delete_cron
-- Remove a cron.
DELETE FROM crons WHERE cron_id = :cron_id;

-- name: search_crons
-- One page of an owner's crons; `{order}` is a whitelisted column and direction.
SELECT * FROM crons
WHERE owner = :owner
  AND (:assistant_id IS NULL OR assistant_id = :assistant_id)
  AND (:thread_id IS NULL OR thread_id = :thread_id)
  AND (:enabled IS NULL OR enabled = :enabled)
  AND (:metadata IS NULL OR runplane_metadata_matches(metadata, :metadata))
ORDER BY {order}
LIMIT :limit OFFSET :offset;

-- name: count_crons
-- How many of an owner's crons match.
SELECT count(*) FROM crons
WHERE owner = :owner
  AND (:assistant_id IS NULL OR assistant_id = :assistant_id)
  AND (:thread_id IS NULL OR thread_id = :thread_id)
  AND (:enabled IS NULL OR enabled = :enabled)
  AND (:metadata IS NULL OR runplane_metadata_matches(metadata, :metadata));

-- name: due_crons
-- Crons with a slot to fire now (lifecycle.cron_is_due), oldest slot first.
SELECT * FROM crons INDEXED BY crons_next_run
WHERE enabled = 1 AND next_run_date IS NOT NULL AND next_run_date <= :now
  AND (end_time IS NULL OR next_run_date <= end_time)
ORDER BY next_run_date, cron_id
LIMIT :limit;

-- name: next_cron_slot
-- The earliest slot an enabled cron will fire (not past its end).
SELECT min(next_run_date) AS slot FROM crons
WHERE enabled = 1 AND next_run_date IS NOT NULL AND (end_time IS NULL OR next_run_date <= end_time);

-- name: claim_cron_slot
-- Move a cron from the slot being fired to its next one, only if it still waits for that slot:
-- the conditional update that lets exactly one scheduler fire it.
UPDATE crons SET next_run_date = :next_run_date, updated_at = :now
WHERE cron_id = :cron_id AND enabled = 1 AND next_run_date = :slot
RETURNING cron_id;

-- name: thread_values
-- A thread's last values (the webhook payload of a run ending on it).
SELECT state_values FROM threads WHERE thread_id = :thread_id;

-- name: insert_webhook
-- A delivery in the outbox, due now.
INSERT INTO webhook_outbox (delivery_id, run_id, url, payload, attempts, next_attempt_at, created_at)
VALUES (:delivery_id, :run_id, :url, :payload, 0, :now, :now);

-- name: due_webhooks
-- Pending deliveries that are due, oldest first.
SELECT seq FROM webhook_outbox INDEXED BY webhook_outbox_due
WHERE status = 'pending' AND next_attempt_at <= :now
ORDER BY next_attempt_at, seq
LIMIT :limit;

-- name: claim_webhook
-- Take one due delivery: one more attempt, hidden until the lease ends.
UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = :lease_until
WHERE seq = :seq AND status = 'pending' AND next_attempt_at <= :now
RETURNING *;

-- name: delete_webhook
-- A delivered webhook leaves the outbox.
DELETE FROM webhook_outbox WHERE delivery_id = :delivery_id;

-- name: fail_webhook
-- A failed attempt: due again at :retry_at, or `failed` for good when it is NULL.
UPDATE webhook_outbox
SET last_error = :error,
    status = CASE WHEN :retry_at IS NULL THEN 'failed' ELSE 'pending' END,
    next_attempt_at = COALESCE(:retry_at, next_attempt_at)
WHERE delivery_id = :delivery_id;

-- name: next_webhook_due
-- When the earliest pending delivery is due.
SELECT min(next_attempt_at) AS due FROM webhook_outbox WHERE status = 'pending';

-- name: list_webhooks
-- The outbox, oldest first.
SELECT * FROM webhook_outbox ORDER BY created_at, seq LIMIT :limit;


-- name: get_assistant
-- One assistant by id, whoever owns it (callers check visibility).
SELECT * FROM assistants WHERE assistant_id = :assistant_id;

-- name: assistant_seen
-- Which version of an assistant is current (an admission checks the one its run was built from).
SELECT version, created_at FROM assistants WHERE assistant_id = :assistant_id;

-- name: insert_assistant
-- A new assistant at version 1.
INSERT INTO assistants (assistant_id, owner, system, graph_id, name, description, config, context,
                        metadata, version, created_at, updated_at)
VALUES (:assistant_id, :owner, :system, :graph_id, :name, :description, :config, :context, :metadata,
        1, :now, :now)
RETURNING *;

-- name: insert_assistant_version
-- An immutable version of an assistant.
INSERT INTO assistant_versions (assistant_id, version, graph_id, name, description, config, context,
                                metadata, created_at)
VALUES (:assistant_id, :version, :graph_id, :name, :description, :config, :context, :metadata, :now);

-- name: next_assistant_version
-- The number of an assistant's next version.
SELECT coalesce(max(version), 0) + 1 AS version FROM assistant_versions WHERE assistant_id = :assistant_id;

-- name: get_assistant_version
-- One version of an assistant.
SELECT * FROM assistant_versions WHERE assistant_id = :assistant_id AND version = :version;

-- name: set_assistant_current
-- Make a version the assistant's current one.
UPDATE assistants
SET graph_id = :graph_id, name = :name, description = :description, config = :config,
    context = :context, metadata = :metadata, version = :version, updated_at = :now
WHERE assistant_id = :assistant_id
RETURNING *;

-- name: delete_assistant
-- Delete an assistant (its versions go by cascade).
DELETE FROM assistants WHERE assistant_id = :assistant_id;

-- name: active_runs_of_assistant
-- Pending and running runs of an assistant, in admission order.
SELECT * FROM runs WHERE assistant_id = :assistant_id AND status IN ('pending', 'running') ORDER BY seq;

-- name: assistant_versions
-- One page of an assistant's versions matching a metadata filter, newest first.
SELECT * FROM assistant_versions
WHERE assistant_id = :assistant_id
  AND (:metadata IS NULL OR runplane_metadata_matches(metadata, :metadata))
ORDER BY version DESC
LIMIT :limit OFFSET :offset;

-- name: search_assistants
-- One page of the assistants an owner sees; `{order}` is a whitelisted column and direction.
SELECT * FROM assistants
WHERE (owner = :owner OR system = 1)
  AND (:graph_id IS NULL OR graph_id = :graph_id)
  AND (:graph_ids IS NULL OR graph_id IN (SELECT value FROM json_each(:graph_ids)))
  AND (:name IS NULL OR instr(lower(name), lower(:name)) > 0)
  AND (:metadata IS NULL OR runplane_metadata_matches(metadata, :metadata))
ORDER BY {order}
LIMIT :limit OFFSET :offset;

-- name: count_assistants
-- How many assistants an owner sees match.
SELECT count(*) FROM assistants
WHERE (owner = :owner OR system = 1)
  AND (:graph_id IS NULL OR graph_id = :graph_id)
  AND (:graph_ids IS NULL OR graph_id IN (SELECT value FROM json_each(:graph_ids)))
  AND (:name IS NULL OR instr(lower(name), lower(:name)) > 0)
  AND (:metadata IS NULL OR runplane_metadata_matches(metadata, :metadata));

-- name: set_thread_ttl
-- Set a thread's TTL.
INSERT INTO thread_ttls (thread_id, ttl_micros, strategy) VALUES (:thread_id, :ttl_micros, :strategy)
ON CONFLICT (thread_id) DO UPDATE SET ttl_micros = excluded.ttl_micros, strategy = excluded.strategy;

-- name: clear_thread_ttl
-- Remove a thread's TTL.
DELETE FROM thread_ttls WHERE thread_id = :thread_id;

-- name: expired_threads
-- Threads whose TTL ran out and that have no active run, oldest expiry first.
SELECT t.* FROM thread_ttls x JOIN threads t ON t.thread_id = x.thread_id
WHERE t.updated_at + x.ttl_micros <= :now
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = t.thread_id AND r.status = 'pending')
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = t.thread_id AND r.status = 'running')
ORDER BY t.updated_at + x.ttl_micros, t.thread_id
LIMIT :limit;

-- name: thread_expired
-- The thread if its TTL ran out and it has no active run (checked in the deleting transaction).
SELECT t.thread_id FROM thread_ttls x JOIN threads t ON t.thread_id = x.thread_id
WHERE t.thread_id = :thread_id
  AND t.updated_at + x.ttl_micros <= :now
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = t.thread_id AND r.status = 'pending')
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = t.thread_id AND r.status = 'running');
