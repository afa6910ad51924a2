"""`PostgresStore`: threads and runs in PostgreSQL, shared safely by many processes.

The in-memory reference gets its atomicity from one lock; here the database provides it:

- Every transaction that changes which runs of a thread are pending or running first locks the
  thread row (`SELECT ... FOR UPDATE`). Admissions, claims, cancels and settlements of one thread are
  therefore serialized across processes, and they always lock the thread before its runs, so they
  cannot deadlock. A partial unique index (one `running` run per thread) is the last guard.
- `threads.queue_seq` is the admission sequence of the thread's next claimable run (its oldest
  pending run; NULL while one of its runs is running). It is rewritten under the thread lock by
  every such transaction, so a claim is one short index scan over threads in queue order that skips
  threads another claimer or admission holds (`FOR UPDATE SKIP LOCKED`), however many runs wait
  behind running ones.
- Worker writes are fenced in SQL by `status = 'running' AND attempt = %s`.
- A run's admission (in the common case), claim and end are each one call of a plpgsql function
  (migration 0017): one round trip, the same locks in the same order, and the rules still decided
  in Python (`lifecycle`), which hands the function its plan.
- Times come from the injected clock as parameters, never from `now()`.

The store is assembled from one mixin per concept over `PostgresBase` (`_base.py`: pool, migrations,
transactions): threads (`_threads.py`), runs (`_runs.py`), the worker side (`_leases.py`), crons and
webhooks (`_crons.py`), assistants and TTLs (`_resources.py`).
"""

from __future__ import annotations

from runplane.core.clock import Clock
from runplane.db.postgres import PoolSettings, parse_url
from runplane.stores.postgres._base import MIGRATION_LOCK_KEY, MIGRATIONS, QUERIES
from runplane.stores.postgres._crons import PostgresCronsAndWebhooks
from runplane.stores.postgres._leases import PostgresLeases
from runplane.stores.postgres._resources import PostgresResources
from runplane.stores.postgres._runs import PostgresRuns
from runplane.stores.postgres._thread_state import PostgresThreadState
from runplane.stores.postgres._threads import PostgresThreads

__all__ = ["MIGRATIONS", "MIGRATION_LOCK_KEY", "QUERIES", "PostgresStore"]


class PostgresStore(
    PostgresThreads,
    PostgresRuns,
    PostgresLeases,
    PostgresCronsAndWebhooks,
    PostgresResources,
    PostgresThreadState,
):
    """Threads, runs and the run queue in PostgreSQL (psycopg 3, async pool).

    Args:
        conninfo: a libpq connection string or `postgresql://` URL (no runplane parameters).
        clock: time source for every timestamp the store writes.
        pool: pool size and checkout timeout.
    """

    @classmethod
    def from_url(
        cls, url: str, *, clock: Clock | None = None, min_size: int | None = None, max_size: int | None = None
    ) -> PostgresStore:
        """A store for `postgresql://user@host:port/db?pool_min_size=1&pool_max_size=10` (not opened).

        Keyword sizes override the URL's.
        """
        conninfo, settings = parse_url(url)
        if min_size is not None or max_size is not None:
            settings = PoolSettings(
                min_size=settings.min_size if min_size is None else min_size,
                max_size=settings.max_size if max_size is None else max_size,
                timeout=settings.timeout,
            )
        return cls(conninfo, clock=clock, pool=settings)
