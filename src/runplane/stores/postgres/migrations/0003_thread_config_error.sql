-- What LangGraph's server shows on a thread besides its state: the config its runs were admitted
-- with and why its last run failed (the run's error text, NULL unless it failed).
ALTER TABLE threads ADD COLUMN config jsonb NOT NULL DEFAULT '{}', ADD COLUMN error text;
