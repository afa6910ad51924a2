"""Executes runs: claims them from the queue, runs their graphs, streams their output."""

from __future__ import annotations

from runplane.worker.worker import Worker

__all__ = ["Worker"]
