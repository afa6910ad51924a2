"""Demo graphs served when no langgraph.json is given: `echo`, `chat`, `slow` and `hitl`."""

from __future__ import annotations
