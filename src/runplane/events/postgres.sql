-- Queries of `PostgresBus` (runplane.events.postgres). Tables: stores/postgres/migrations/0002_events.sql.

-- name: publish
-- Append an event unless the stream ended (then nothing is returned), announce it at commit, and
-- every `trim_every` events delete those beyond `max_events`. One statement, one round trip.
WITH stream AS (
    INSERT INTO run_streams AS s (run_id, last_seq, updated_at)
    VALUES (%(run_id)s, 1, now())
    ON CONFLICT (run_id) DO UPDATE SET last_seq = s.last_seq + 1, updated_at = now()
    WHERE s.ended_at IS NULL
    RETURNING last_seq
), appended AS (
    INSERT INTO run_events (run_id, seq, event, data, created_at)
    SELECT %(run_id)s, last_seq, %(event)s, %(data)s, now() FROM stream
    RETURNING seq
), trimmed AS (
    DELETE FROM run_events
    WHERE run_id = %(run_id)s
      AND seq <= (SELECT last_seq FROM stream) - %(max_events)s
      AND (SELECT last_seq FROM stream) %% %(trim_every)s = 0
)
SELECT seq, pg_notify(%(channel)s, %(wake)s) FROM appended

-- name: publish_many
-- Append the events of several runs and end the streams marked `ends`, all in one statement: one
-- round trip and one commit for a whole batch. Per run, like `publish` and `end_stream`: the stream
-- row's upsert bumps `last_seq` by the run's event count (taking the row lock to commit, so ids stay
-- dense and committed in order) unless the stream ended, the events take the ids below it in batch
-- order, old events are trimmed when the batch crosses a multiple of `trim_every`, and one wake-up
-- per run is announced at commit, then the `hints` given (payloads), in that order. Runs are locked
-- in run id order (no deadlock between batches). Event arrays are parallel (`event_runs` holds each
-- event's run id); run arrays too.
WITH batch AS (
    SELECT run_id, event, data, ord
    FROM unnest(%(event_runs)s::text[], %(events)s::text[], %(datas)s::bytea[])
        WITH ORDINALITY AS b (run_id, event, data, ord)
), runs AS (
    SELECT r.run_id, r.ends, r.wake, coalesce(c.n, 0) AS n
    FROM unnest(%(run_ids)s::text[], %(ends)s::boolean[], %(wakes)s::text[]) AS r (run_id, ends, wake)
    LEFT JOIN (SELECT run_id, count(*) AS n FROM batch GROUP BY run_id) AS c USING (run_id)
), streams AS (
    INSERT INTO run_streams AS s (run_id, last_seq, updated_at, ended_at)
    SELECT run_id, n, now(), CASE WHEN ends THEN now() END FROM runs ORDER BY run_id
    ON CONFLICT (run_id) DO UPDATE
    SET last_seq = s.last_seq + excluded.last_seq, updated_at = now(), ended_at = excluded.ended_at
    WHERE s.ended_at IS NULL
    RETURNING s.run_id, s.last_seq
), appended AS (
    INSERT INTO run_events (run_id, seq, event, data, created_at)
    SELECT b.run_id, st.last_seq - r.n + row_number() OVER (PARTITION BY b.run_id ORDER BY b.ord),
           b.event, b.data, now()
    FROM batch AS b JOIN streams AS st USING (run_id) JOIN runs AS r USING (run_id)
    RETURNING seq
), trimmed AS (
    DELETE FROM run_events AS e
    USING streams AS st JOIN runs AS r USING (run_id)
    WHERE e.run_id = st.run_id
      AND e.seq <= st.last_seq - %(max_events)s
      AND st.last_seq / %(trim_every)s > (st.last_seq - r.n) / %(trim_every)s
), woken AS (
    SELECT pg_notify(%(channel)s, r.wake) FROM streams AS st JOIN runs AS r USING (run_id)
), hinted AS (
    SELECT pg_notify(%(channel)s, h.payload) FROM unnest(%(hints)s::text[]) WITH ORDINALITY AS h (payload, ord)
)
-- One row whatever the batch holds, so both run: the wake-ups first, then the hints.
SELECT (SELECT count(*) FROM woken), (SELECT count(*) FROM hinted), (SELECT count(*) FROM appended)

-- name: last_seq
-- The id a dropped publish returns: the stream's last event.
SELECT last_seq FROM run_streams WHERE run_id = %(run_id)s

-- name: end_stream
-- Mark the stream ended (creating it if no event was published) and wake its subscribers.
WITH ended AS (
    INSERT INTO run_streams AS s (run_id, last_seq, updated_at, ended_at)
    VALUES (%(run_id)s, 0, now(), now())
    ON CONFLICT (run_id) DO UPDATE SET updated_at = now(), ended_at = now()
    WHERE s.ended_at IS NULL
    RETURNING run_id
)
SELECT pg_notify(%(channel)s, %(wake)s) FROM ended

-- name: read_events
-- Up to `limit` events after `after` and the stream's state, from one snapshot: when it shows the
-- stream ended, every event of the stream is committed (publish and end_stream lock its row).
-- Always one row at least; `seq` is NULL when no event follows `after`.
SELECT s.run_id IS NULL AS missing, s.ended_at IS NOT NULL AS ended, e.seq, e.event, e.data
FROM (VALUES (1)) AS one (x)
LEFT JOIN run_streams AS s ON s.run_id = %(run_id)s
LEFT JOIN LATERAL (
    SELECT seq, event, data FROM run_events
    WHERE run_id = %(run_id)s AND seq > %(after)s
    ORDER BY seq
    LIMIT %(limit)s
) AS e ON true
ORDER BY e.seq

-- name: notify
-- A hint, a wake-up or a barrier on the bus's one notification channel.
SELECT pg_notify(%(channel)s, %(payload)s)

-- name: expire_streams
-- Delete up to `batch` streams that ended `retention` seconds ago or saw no write for `idle` seconds
-- (their worker vanished), with their events. Streams another process is expiring are skipped.
WITH gone AS (
    DELETE FROM run_streams
    WHERE run_id IN (
        SELECT run_id FROM run_streams
        WHERE ended_at < now() - make_interval(secs => %(retention)s)
           OR updated_at < now() - make_interval(secs => %(idle)s)
        LIMIT %(batch)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING run_id
), events AS (
    DELETE FROM run_events WHERE run_id IN (SELECT run_id FROM gone)
)
SELECT count(*) AS streams FROM gone
