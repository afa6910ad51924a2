"""Logging configuration, applied by the CLI only (library code just calls `getLogger`).

Two formats: `text` for people (the default) and `json`, one object per line for log pipelines.
Every JSON record written while a worker executes a run carries `run_id`, `thread_id`, `attempt` and
`worker_id`, taken from the context the worker binds to the run's task (`core.observe.CURRENT_RUN`),
so even the graph's own log lines can be joined to their run.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from runplane.core.observe import CURRENT_RUN

LOG_FORMATS = ("text", "json")

#: Attributes every `LogRecord` has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the run being executed (if any),
    the record's `extra` fields and the formatted exception."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        run = CURRENT_RUN.get()
        if run is not None:
            payload.update(
                run_id=run.run_id, thread_id=run.thread_id, attempt=run.attempt, worker_id=run.worker_id
            )
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr at `level`, as `text` or `json` (one object per line)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {fmt!r}")
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "text": {
                    "format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                    "datefmt": "%H:%M:%S",
                },
                "json": {"()": JsonFormatter},
            },
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": fmt}},
            "root": {"handlers": ["console"], "level": level.upper()},
            "loggers": {
                # Access logs carry headers' effects only, never their values (no auth leaks).
                "uvicorn.access": {"level": "WARNING"},
                "aiosqlite": {"level": "WARNING"},
                "httpx": {"level": "WARNING"},
            },
        }
    )
