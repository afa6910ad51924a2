-- A state update's hold on a thread (issue 16): while `reserved_until` is in the future, no run is
-- admitted on the thread, so the update's checkpoint write never interleaves with a run.
ALTER TABLE threads ADD COLUMN reserved_by TEXT;
ALTER TABLE threads ADD COLUMN reserved_until INTEGER;
