"""runplane's tests. A package so that helpers import as `tests._services` from any tier folder."""

from __future__ import annotations
