-- A run's three transactions on the store, each one statement (issue 18): its admission (in the
-- common case), its claim and its finish. As pipelined transactions (BEGIN, the statements,
-- COMMIT), each took two round trips and 0.6 to 1 ms of the server's CPU in psycopg's client-side
-- steps; a function call takes one round trip and about 0.15 ms. The rules stay in Python where
-- they decide: `runplane_finish` is handed the settlement `lifecycle.finish_plan` computed, and an
-- admission with a multitask strategy to apply is left to the store's transaction.
-- Each statement of a plpgsql function takes a new snapshot (READ COMMITTED), as each statement of
-- the transactions they replace did.

-- Recompute a locked thread's queue head and, when an outcome is given, its status (busy while a
-- run is active, else the outcome), with the values, interrupts and error a settlement leaves; the
-- time is left as it was when `p_now` is NULL. Returns whether that head is claimable at
-- `p_due_at` (`lifecycle.head_is_claimable`: a head is only set while no run of the thread is
-- running); NULL when there is no such thread. The store's `settle_thread` statement and
-- `runplane_finish` both settle through it.
CREATE FUNCTION runplane_settle_thread(
    p_thread_id text, p_outcome text, p_now timestamptz, p_due_at timestamptz,
    p_set_values boolean, p_values jsonb, p_interrupts jsonb, p_set_error boolean, p_error text
)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_claimable boolean;
BEGIN
    UPDATE threads AS t SET
        queue_seq = CASE
            WHEN EXISTS (SELECT 1 FROM runs AS r WHERE r.thread_id = t.thread_id AND r.status = 'running')
                THEN NULL
            ELSE (SELECT min(r.seq) FROM runs AS r WHERE r.thread_id = t.thread_id AND r.status = 'pending')
        END,
        status = CASE
            WHEN p_outcome IS NULL THEN t.status
            WHEN EXISTS (
                SELECT 1 FROM runs AS r WHERE r.thread_id = t.thread_id AND r.status IN ('pending', 'running')
            ) THEN 'busy'
            ELSE p_outcome
        END,
        updated_at = COALESCE(p_now, t.updated_at),
        state_values = CASE WHEN p_set_values THEN p_values ELSE t.state_values END,
        interrupts = COALESCE(p_interrupts, t.interrupts),
        error = CASE WHEN p_set_error THEN p_error ELSE t.error END
    WHERE t.thread_id = p_thread_id
    RETURNING EXISTS (
        SELECT 1 FROM runs AS r
        WHERE r.seq = t.queue_seq AND (r.not_before IS NULL OR r.not_before <= p_due_at)
    ) INTO v_claimable;
    RETURN v_claimable;
END
$$;

-- The locked thread of a run just admitted: busy, its queue head recomputed, and the config
-- (merged by the caller, NULL: unchanged) and metadata keys (merged here, NULL: none) the
-- admission leaves. The store's `settle_admitted` statement and `runplane_admit` both call it.
CREATE FUNCTION runplane_settle_admitted(
    p_thread_id text, p_now timestamptz, p_config jsonb, p_metadata jsonb
)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE threads AS t SET
        queue_seq = CASE
            WHEN EXISTS (SELECT 1 FROM runs AS r WHERE r.thread_id = t.thread_id AND r.status = 'running')
                THEN NULL
            ELSE (SELECT min(r.seq) FROM runs AS r WHERE r.thread_id = t.thread_id AND r.status = 'pending')
        END,
        status = 'busy',
        updated_at = p_now,
        config = COALESCE(p_config, t.config),
        metadata = CASE WHEN p_metadata IS NULL THEN t.metadata ELSE t.metadata || p_metadata END
    WHERE t.thread_id = p_thread_id;
END
$$;

-- `PostgresStore.claim_and_look`: claim the oldest due queue head with a lease (the claim
-- increments the fencing attempt) and settle its thread; `more`: whether another thread's head
-- is due. No run claimed: `contended`, whether a due head was there, passed over because another
-- transaction held its thread (`Claimed.contended`).
CREATE FUNCTION runplane_claim(p_worker_id text, p_lease_expires_at timestamptz, p_now timestamptz)
RETURNS TABLE (claimed_run runs, more boolean, contended boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_thread_id text;
BEGIN
    -- Up to five threads: when the queue changed between the scan and the lock, look again.
    FOR i IN 1..5 LOOP
        -- The thread whose queue head is the oldest due run, locked; threads another claimer or
        -- admission holds are skipped.
        SELECT t.thread_id INTO v_thread_id FROM threads AS t
        JOIN runs AS r ON r.seq = t.queue_seq
        WHERE t.queue_seq IS NOT NULL AND (r.not_before IS NULL OR r.not_before <= p_now)
        ORDER BY t.queue_seq
        LIMIT 1
        FOR UPDATE OF t SKIP LOCKED;
        IF NOT FOUND THEN
            -- A new snapshot: a head another claim took is gone from it once that claim committed,
            -- and a head still there is held by a transaction in progress.
            RETURN QUERY SELECT NULL::runs, false, EXISTS (
                SELECT 1 FROM threads AS t
                JOIN runs AS r ON r.seq = t.queue_seq
                WHERE t.queue_seq IS NOT NULL AND (r.not_before IS NULL OR r.not_before <= p_now)
            );
            RETURN;
        END IF;
        -- A new statement, so it reads the queue head as committed before the thread was locked.
        -- The thread is settled by the same statement: a run of it is running, so it is busy and
        -- has no claimable head.
        RETURN QUERY
        WITH claimed AS (
            UPDATE runs SET
                status = 'running',
                attempt = attempt + 1,
                lease_owner = p_worker_id,
                lease_expires_at = p_lease_expires_at,
                claim_seq = nextval('runs_claim_seq'),
                started_at = COALESCE(started_at, p_now),
                updated_at = p_now
            WHERE seq = (SELECT queue_seq FROM threads WHERE thread_id = v_thread_id)
                AND status = 'pending'
                AND (not_before IS NULL OR not_before <= p_now)
            RETURNING *
        ), settled AS (
            UPDATE threads SET queue_seq = NULL, status = 'busy', updated_at = p_now
            WHERE thread_id = v_thread_id AND EXISTS (SELECT 1 FROM claimed)
        )
        SELECT claimed::runs, (
            -- Not EXISTS: its plan may drop the order and scan every thread; this one walks the
            -- queue index and stops at the first due head. The claimed thread's own head is still
            -- in this statement's snapshot (`settled` is not): it is left out by hand.
            SELECT t.queue_seq FROM threads AS t
            JOIN runs AS r ON r.seq = t.queue_seq
            WHERE t.queue_seq IS NOT NULL AND r.thread_id <> v_thread_id
                AND (r.not_before IS NULL OR r.not_before <= p_now)
            ORDER BY t.queue_seq
            LIMIT 1
        ) IS NOT NULL, false
        FROM claimed;
        IF FOUND THEN
            RETURN;
        END IF;
    END LOOP;
    -- The queue kept changing under the scans: look again shortly.
    RETURN QUERY SELECT NULL::runs, false, true;
END
$$;

-- `PostgresStore.finish_and_look`: end a run the attempt `p_attempt` holds and apply the
-- settlement to its thread. One row, unless the run is gone or no longer held (the lease is lost):
-- `refused_for`, the cancel action a yielding outcome lost to (nothing written);
-- `has_webhook`, the run has a webhook, whose outbox row the store writes in a transaction of
-- its own making (nothing written); else the ended run and whether its thread's next run is
-- claimable (`lifecycle.head_is_claimable`).
CREATE FUNCTION runplane_finish(
    p_run_id text, p_attempt integer, p_now timestamptz,
    p_status text, p_error text, p_model_name text,
    p_input_tokens bigint, p_output_tokens bigint, p_total_tokens bigint,
    p_yields_to_cancel boolean,
    p_thread_status text, p_sets_error boolean, p_thread_error text,
    p_set_values boolean, p_values jsonb, p_interrupts jsonb
)
RETURNS TABLE (ended_run runs, head_claimable boolean, refused_for text, has_webhook boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_thread_id text;
    v_action text;
    v_webhook boolean;
    v_run runs;
BEGIN
    -- The thread's lock first, as every transaction that moves a run takes it (a run never
    -- changes thread, so reading its thread_id first is safe).
    SELECT t.thread_id INTO v_thread_id FROM threads AS t
    WHERE t.thread_id = (SELECT r.thread_id FROM runs AS r WHERE r.run_id = p_run_id)
    FOR UPDATE OF t;
    -- Only a transaction holding the thread's lock changes a cancel request.
    SELECT r.cancel_action, COALESCE(r.kwargs ->> 'webhook', '') <> '' INTO v_action, v_webhook
    FROM runs AS r
    WHERE r.run_id = p_run_id AND r.status = 'running' AND r.attempt = p_attempt;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_action IS NOT NULL AND p_yields_to_cancel THEN
        RETURN QUERY SELECT NULL::runs, NULL::boolean, v_action, v_webhook;
        RETURN;
    END IF;
    IF v_webhook THEN
        RETURN QUERY SELECT NULL::runs, NULL::boolean, NULL::text, true;
        RETURN;
    END IF;
    UPDATE runs SET
        status = p_status,
        error = p_error,
        model_name = COALESCE(p_model_name, model_name),
        input_tokens = COALESCE(p_input_tokens, input_tokens),
        output_tokens = COALESCE(p_output_tokens, output_tokens),
        total_tokens = COALESCE(p_total_tokens, total_tokens),
        ended_at = p_now,
        updated_at = p_now,
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE run_id = p_run_id AND status = 'running' AND attempt = p_attempt
    RETURNING * INTO v_run;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT v_run, runplane_settle_thread(
        v_thread_id, p_thread_status, p_now, p_now,
        p_set_values, p_values, p_interrupts, p_sets_error, p_thread_error
    ), NULL::text, false;
END
$$;

-- A JSON value as an object: `{}` unless it is one (Python's `value or {}` on a mapping).
CREATE FUNCTION runplane_object_or_empty(value jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(value) = 'object' THEN value ELSE '{}'::jsonb END
$$;

-- `PostgresStore.create_run`, when nothing but the run itself is to be decided: no run to cancel,
-- no replay, no hold on the thread. `outcome`: 'admitted' (with the run), 'not_found' (no thread
-- of this owner; nothing written), or 'decide' (an id or idempotency key already used, a hold on the
-- thread, or an active run on it, whose multitask strategy the store applies: nothing written, and
-- the store runs the admission transaction that decides). The thread's config and metadata are
-- merged as `lifecycle.thread_config_after_admission` and `models.metadata_after_admission` merge
-- them (the conformance suite holds both to the in-memory store's).
CREATE FUNCTION runplane_admit(
    p_run_id text, p_thread_id text, p_assistant_id text, p_owner text, p_multitask_strategy text,
    p_now timestamptz, p_metadata jsonb, p_kwargs jsonb, p_not_before timestamptz,
    p_idempotency_key text, p_fingerprint text,
    p_creates boolean, p_thread_metadata jsonb, p_thread_config jsonb, p_thread_metadata_update jsonb
)
RETURNS TABLE (admitted_run runs, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    v_thread threads;
    v_config jsonb;
    v_metadata jsonb;
BEGIN
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
            updated_at, metadata, kwargs, not_before, idempotency_key, fingerprint
        )
        VALUES (
            p_run_id, p_thread_id, p_assistant_id, p_owner, 'pending', p_multitask_strategy, p_now,
            p_now, p_metadata, p_kwargs, p_not_before, p_idempotency_key, p_fingerprint
        )
        RETURNING *
    )
    SELECT admitted::runs, 'admitted'::text FROM admitted;
    -- A new statement, so it sees the run just inserted: the thread is busy, and its queue head
    -- is that run (no other is active).
    PERFORM runplane_settle_admitted(p_thread_id, p_now, v_config, v_metadata);
END
$$;
