"""Shared by the SQL stores and the PostgreSQL bus: named queries in `.sql` files and numbered migrations.

A queries file holds blocks that start with `-- name: <query_name>` followed by a description line
(`-- ...`) and the statement. Migrations are files `NNNN_description.sql` in a `migrations` folder,
applied in order inside one transaction each, and recorded in a `runplane_migrations` table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """Parse a queries file of `package` into {name: sql}."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        if name in queries:
            raise ValueError(f"duplicate query name {name!r} in {package}/{filename}")
        queries[name] = "\n".join(lines).strip()
    return queries


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(package: str) -> list[Migration]:
    """The migrations of `package` (a `migrations` sub-package/folder), ordered by version."""
    folder = resources.files(package).joinpath("migrations")
    migrations = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            migrations.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    # Unique and from 1; a gap is allowed so that branches can reserve numbers (the integrator
    # renumbers them when merging).
    if len(set(versions)) != len(versions) or (versions and versions[0] != 1):
        raise ValueError(f"migrations of {package} must be numbered from 1 without duplicates: {versions}")
    return migrations
