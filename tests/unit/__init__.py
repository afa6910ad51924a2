"""Unit tests: one component at a time, no external services."""

from __future__ import annotations
