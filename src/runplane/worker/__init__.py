"""worker."""

from __future__ import annotations
