"""Logging configuration, applied by the CLI only (library code just calls `getLogger`)."""

from __future__ import annotations

import logging.config


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "plain": {
                    "format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                    "datefmt": "%H:%M:%S",
                }
            },
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
            "root": {"handlers": ["console"], "level": level.upper()},
            "loggers": {
                # Access logs carry headers' effects only, never their values (no auth leaks).
                "uvicorn.access": {"level": "WARNING"},
                "aiosqlite": {"level": "WARNING"},
                "httpx": {"level": "WARNING"},
            },
        }
    )
