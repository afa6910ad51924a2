-- Two run-path statements made cheaper for PostgreSQL (issues 14 and 18).
--
-- 1. A run admitted only while the assistant it was built from is current. The API builds a run
--    from this process's copy of its assistant (`ResourceUseCases.assistant_for_run`), so that a
--    run's creation needs no read of it; the admission checks, in its own statement, that this is
--    still the assistant's current version (`lifecycle.check_assistant_unchanged`). `outcome`
--    'assistant_changed': nothing written (the caller reads the assistant again).
--    `p_assistant_version` NULL: no check. Otherwise `runplane_admit` is migration 0018's.
--
-- 2. `runplane_check_hold`: the lease check of a transaction sent whole (`check_hold`). As a plain
--    statement in a simple query it was planned on every call (0.15 ms of PostgreSQL's CPU each,
--    twice per run, in `pg_sql_trace.sh`: the planner weighs every index of `runs`); a function's
--    statement keeps its plan for the session.

DROP FUNCTION runplane_admit(
    text, text, text, text, text, timestamptz, jsonb, jsonb, timestamptz, text, text,
    boolean, jsonb, jsonb, jsonb, text, timestamptz
);

CREATE FUNCTION runplane_admit(
    p_run_id text, p_thread_id text, p_assistant_id text, p_owner text, p_multitask_strategy text,
    p_now timestamptz, p_metadata jsonb, p_kwargs jsonb, p_not_before timestamptz,
    p_idempotency_key text, p_fingerprint text,
    p_creates boolean, p_thread_metadata jsonb, p_thread_config jsonb, p_thread_metadata_update jsonb,
    p_worker_id text, p_lease_expires_at timestamptz,
    p_assistant_version integer, p_assistant_created_at timestamptz
)
RETURNS TABLE (admitted_run runs, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    v_thread threads;
    v_config jsonb;
    v_metadata jsonb;
BEGIN
    -- `lifecycle.check_assistant_unchanged`: versions are immutable, and an assistant deleted and
    -- created again has a new `created_at`, so the pair names the content the run was built from.
    IF p_assistant_version IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM assistants AS a
        WHERE a.assistant_id = p_assistant_id
            AND a.version = p_assistant_version
            AND a.created_at = p_assistant_created_at
    ) THEN
        RETURN QUERY SELECT NULL::runs, 'assistant_changed'::text;
        RETURN;
    END IF;
    PERFORM 1 FROM runs AS r
    WHERE r.run_id = p_run_id OR (r.owner = p_owner AND r.idempotency_key = p_idempotency_key);
    IF FOUND THEN
        RETURN QUERY SELECT NULL::runs, 'decide'::text;
        RETURN;
    END IF;
    IF p_creates THEN
        INSERT INTO threads (thread_id, owner, status, created_at, updated_at, metadata)
        VALUES (p_thread_id, p_owner, 'idle', p_now, p_now, p_thread_metadata)
        ON CONFLICT (thread_id) DO NOTHING;
    END IF;
    -- Every change to the pending and running runs of a thread happens under its lock.
    SELECT * INTO v_thread FROM threads AS t WHERE t.thread_id = p_thread_id FOR UPDATE;
    IF NOT FOUND OR v_thread.owner <> p_owner THEN
        RETURN QUERY SELECT NULL::runs, 'not_found'::text;
        RETURN;
    END IF;
    -- A new statement, so the runs are read as committed once the thread's lock is held.
    IF (v_thread.reserved_until IS NOT NULL AND v_thread.reserved_until > p_now) OR EXISTS (
        SELECT 1 FROM runs AS r WHERE r.thread_id = p_thread_id AND r.status IN ('pending', 'running')
    ) THEN
        -- Nothing is written in this case: a thread this statement created has neither.
        RETURN QUERY SELECT NULL::runs, 'decide'::text;
        RETURN;
    END IF;
    IF p_thread_config IS NOT NULL THEN
        -- The run's keys over the thread's, except `configurable`, where the thread's own win.
        v_config := v_thread.config || p_thread_config || jsonb_build_object(
            'configurable',
            runplane_object_or_empty(p_thread_config -> 'configurable')
                || runplane_object_or_empty(v_thread.config -> 'configurable')
        );
    END IF;
    -- Written (and the thread's metadata bumped) only when a key changes.
    IF EXISTS (
        SELECT 1 FROM jsonb_each(p_thread_metadata_update) AS u(key, value)
        WHERE v_thread.metadata -> u.key IS DISTINCT FROM u.value
    ) THEN
        v_metadata := p_thread_metadata_update;
    END IF;
    RETURN QUERY
    WITH admitted AS (
        INSERT INTO runs (
            run_id, thread_id, assistant_id, owner, status, multitask_strategy, created_at,
            updated_at, metadata, kwargs, not_before, idempotency_key, fingerprint,
            attempt, lease_owner, lease_expires_at, claim_seq, started_at
        )
        VALUES (
            p_run_id, p_thread_id, p_assistant_id, p_owner,
            CASE WHEN p_worker_id IS NULL THEN 'pending' ELSE 'running' END, p_multitask_strategy, p_now,
            p_now, p_metadata, p_kwargs, p_not_before, p_idempotency_key, p_fingerprint,
            CASE WHEN p_worker_id IS NULL THEN 0 ELSE 1 END, p_worker_id,
            CASE WHEN p_worker_id IS NULL THEN NULL ELSE p_lease_expires_at END,
            CASE WHEN p_worker_id IS NULL THEN NULL ELSE nextval('runs_claim_seq') END,
            CASE WHEN p_worker_id IS NULL THEN NULL ELSE p_now END
        )
        RETURNING *
    )
    SELECT admitted::runs, 'admitted'::text FROM admitted;
    -- A new statement, so it sees the run just inserted: the thread is busy, and its queue head
    -- is that run (no other is active), or none when the run was claimed.
    PERFORM runplane_settle_admitted(p_thread_id, p_now, v_config, v_metadata);
END
$$;


-- Share-lock the run while `p_attempt` still holds it (its recovery, a cancel request and any later
-- claim wait until the transaction ends), else fail the transaction, so that nothing after it
-- commits: SQLSTATE RPL01, which the store reads as a lost lease.
CREATE FUNCTION runplane_check_hold(p_run_id text, p_attempt integer)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM runs AS r
    WHERE r.run_id = p_run_id AND r.status = 'running' AND r.attempt = p_attempt
    FOR SHARE OF r;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % attempt % does not hold its lease', p_run_id, p_attempt
            USING ERRCODE = 'RPL01';
    END IF;
END
$$;
