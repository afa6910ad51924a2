-- The state-update holds of the SQLite store (`_thread_state.py`); run inside `BEGIN IMMEDIATE`.

-- name: thread_has_active_run
-- Whether a run of the thread is pending or running (two partial-index probes).
SELECT EXISTS (SELECT 1 FROM runs WHERE thread_id = :thread_id AND status = 'pending')
    OR EXISTS (SELECT 1 FROM runs WHERE thread_id = :thread_id AND status = 'running') AS active;

-- name: reserve_thread
-- Hold the thread for a state update until `:until`.
UPDATE threads SET reserved_by = :token, reserved_until = :until
WHERE thread_id = :thread_id
RETURNING *;

-- name: release_thread
-- End the hold `:token`.
UPDATE threads SET reserved_by = NULL, reserved_until = NULL
WHERE thread_id = :thread_id AND reserved_by = :token
RETURNING *;

-- name: release_thread_with_state
-- End the hold `:token` and record the update's state; the status only while no run is active.
UPDATE threads
SET reserved_by = NULL,
    reserved_until = NULL,
    state_values = :values,
    interrupts = :interrupts,
    status = CASE
        WHEN EXISTS (SELECT 1 FROM runs WHERE thread_id = :thread_id AND status = 'pending')
            OR EXISTS (SELECT 1 FROM runs WHERE thread_id = :thread_id AND status = 'running')
            THEN 'busy'
        ELSE :status
    END,
    updated_at = :now
WHERE thread_id = :thread_id AND reserved_by = :token
RETURNING *;
