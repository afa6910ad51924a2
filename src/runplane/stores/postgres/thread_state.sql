-- The state-update holds of the PostgreSQL store (`_thread_state.py`).

-- name: lock_owned_thread
-- Lock a thread row (the lock every admission takes too).
SELECT * FROM threads WHERE thread_id = %(thread_id)s FOR UPDATE

-- name: thread_has_active_run
-- Whether a run of the thread is pending or running.
SELECT EXISTS (
    SELECT 1 FROM runs WHERE thread_id = %(thread_id)s AND status IN ('pending', 'running')
) AS active

-- name: reserve_thread
-- Hold the locked thread for a state update until `until`.
UPDATE threads SET reserved_by = %(token)s, reserved_until = %(until)s
WHERE thread_id = %(thread_id)s
RETURNING *

-- name: release_thread
-- End the hold `token`.
UPDATE threads SET reserved_by = NULL, reserved_until = NULL
WHERE thread_id = %(thread_id)s AND reserved_by = %(token)s
RETURNING *

-- name: release_thread_with_state
-- End the hold `token` and record the update's state; the status only while no run is active.
UPDATE threads
SET reserved_by = NULL,
    reserved_until = NULL,
    state_values = %(values)s,
    interrupts = %(interrupts)s,
    status = CASE
        WHEN EXISTS (
            SELECT 1 FROM runs WHERE thread_id = %(thread_id)s AND status IN ('pending', 'running')
        ) THEN 'busy'
        ELSE %(status)s::text
    END,
    updated_at = %(now)s
WHERE thread_id = %(thread_id)s AND reserved_by = %(token)s
RETURNING *

-- name: get_thread
-- One thread by id.
SELECT * FROM threads WHERE thread_id = %(thread_id)s
