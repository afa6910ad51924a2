"""The PostgreSQL store (`pip install 'runplane[postgres]'`): `postgresql://user@host:port/db`."""

from __future__ import annotations
