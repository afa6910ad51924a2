-- A run admitted only while the assistant it was built from is current (issues 14 and 18). The
-- API builds a run from an assistant it may have read earlier (`ResourceUseCases.assistant_for_run`
-- keeps them), so that a run's admission needs no read of its assistant; the admission checks
-- that this is still the assistant's current version (`lifecycle.check_assistant_unchanged`),
-- in the admission's statement, and leaves the rest to `runplane_admit` (migrations 0017, 0018).
-- `outcome` 'assistant_changed': nothing written (the caller reads the assistant again).
-- `p_assistant_version` NULL: no check.
CREATE FUNCTION runplane_admit_built_from(
    p_assistant_version integer, p_assistant_created_at timestamptz,
    p_run_id text, p_thread_id text, p_assistant_id text, p_owner text, p_multitask_strategy text,
    p_now timestamptz, p_metadata jsonb, p_kwargs jsonb, p_not_before timestamptz,
    p_idempotency_key text, p_fingerprint text,
    p_creates boolean, p_thread_metadata jsonb, p_thread_config jsonb, p_thread_metadata_update jsonb,
    p_worker_id text, p_lease_expires_at timestamptz
)
RETURNS TABLE (admitted_run runs, outcome text)
LANGUAGE plpgsql AS $$
BEGIN
    -- Versions are immutable and a deleted assistant created again has a new `created_at`: the
    -- pair names the content the run was built from.
    IF p_assistant_version IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM assistants AS a
        WHERE a.assistant_id = p_assistant_id
            AND a.version = p_assistant_version
            AND a.created_at = p_assistant_created_at
    ) THEN
        RETURN QUERY SELECT NULL::runs, 'assistant_changed'::text;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM runplane_admit(
        p_run_id, p_thread_id, p_assistant_id, p_owner, p_multitask_strategy,
        p_now, p_metadata, p_kwargs, p_not_before,
        p_idempotency_key, p_fingerprint,
        p_creates, p_thread_metadata, p_thread_config, p_thread_metadata_update,
        p_worker_id, p_lease_expires_at
    );
END
$$;
