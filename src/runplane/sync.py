"""A blocking facade over the async API, for scripts and tests that are not async.

    with runplane.sync.open(database_url="sqlite:///app.db", graphs={"agent": graph}) as rp:
        thread = rp.threads.create()
        run = rp.runs.create(thread.thread_id, "agent", input={...})
        print(rp.runs.join(run.run_id).status)
        for event in rp.runs.stream(run.run_id):
            ...

The runtime lives on an event loop in a background thread; every call is the async one
(`Runplane.runs`, `Runplane.threads`), run on that loop and waited for. The async API is the
source of truth: this module only forwards, so it never drifts from it. Not for use inside a
running event loop (use `runplane.open` there).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from runplane import embedded
from runplane.embedded import Runplane
from runplane.stores import DEFAULT_DATABASE_URL

T = TypeVar("T")


class _Loop:
    """An event loop running in a daemon thread until closed."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="runplane-sync", daemon=True)
        self.thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.call(anext(iterator))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                self.call(aclose())

    def close(self) -> None:
        """Cancel what is left on the loop (background tasks of closed libraries), then stop it."""
        self.call(_cancel_leftovers())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


async def _cancel_leftovers() -> None:
    leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)


class _Blocking:
    """Forwards attribute calls to an async object: coroutines are awaited on the loop, async
    iterators become iterators, anything else is returned as is."""

    def __init__(self, target: Any, loop: _Loop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._target, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if asyncio.iscoroutine(result):
                return self._loop.call(result)
            if isinstance(result, AsyncIterator):
                return self._loop.iterate(result)
            return result

        return call


class SyncRunplane:
    """`Runplane`, blocking: a context manager whose `runs` and `threads` block until done."""

    def __init__(self, runplane: Runplane) -> None:
        self.runplane = runplane
        self._loop: _Loop | None = None

    def __enter__(self) -> SyncRunplane:
        self._loop = _Loop()
        try:
            self._loop.call(self.runplane.open())
        except BaseException:
            self._loop.close()
            self._loop = None
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            try:
                loop.call(self.runplane.close())
            finally:
                loop.close()

    def _open_loop(self) -> _Loop:
        if self._loop is None:
            raise RuntimeError("runplane is not open: use `with runplane.sync.open(...)` first")
        return self._loop

    @property
    def runs(self) -> Any:
        """`Runplane.runs`, blocking."""
        return _Blocking(self.runplane.runs, self._open_loop())

    @property
    def threads(self) -> Any:
        """`Runplane.threads`, blocking."""
        return _Blocking(self.runplane.threads, self._open_loop())

    def run_until_idle(self) -> None:
        """`Runplane.run_until_idle`, blocking."""
        self._open_loop().call(self.runplane.run_until_idle())


def open(database_url: str = DEFAULT_DATABASE_URL, **options: Any) -> SyncRunplane:
    """`runplane.open(...)` with a blocking API; open it with `with`. Takes the same arguments."""
    return SyncRunplane(embedded.open(database_url, **options))
