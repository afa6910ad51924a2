-- Run output streams of `PostgresBus` (runplane.events.postgres), so that a deployment on
-- PostgreSQL alone shares streams across processes. The bus only reads and writes these tables; the
-- store's migrations create them.

-- One row per stream: the per-run sequence and the end marker. Every publish bumps `last_seq` under
-- this row's lock, so ids are dense, strictly increasing, and committed in order. Updated on every
-- publish and never indexed beyond its key, hence the free space for HOT updates.
CREATE TABLE run_streams (
    run_id     text PRIMARY KEY,
    last_seq   bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    -- Set once by end_stream: the stream is complete, later publishes are dropped.
    ended_at   timestamptz
) WITH (fillfactor = 70);

-- The retained events of each stream (older ones are trimmed beyond the bus's max_events).
CREATE TABLE run_events (
    run_id     text NOT NULL,
    seq        bigint NOT NULL,
    event      text NOT NULL,
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT run_events_pkey PRIMARY KEY (run_id, seq)
);
