"""Hints a process sends to its own listeners at once, rather than by way of Redis or PostgreSQL.

A worker and an API in one process are the common case: the wake-up after an admission and the
"done" hint after a finish each went out to the shared bus and came back before anyone in the
process heard them (a round trip, plus the pub/sub reader's turn on the loop). The hubs now hand
such a hint to their local listeners when it is sent, and still publish it for other processes;
`Echoes` remembers it, so that its copy coming back from the bus is dropped instead of heard twice.

A hint is only "look again", so what this can get wrong is benign and bounded:
- an echo that never comes (the publish failed, the connection dropped) leaves a count behind,
  which drops one later identical hint; the hubs clear the counts on every reconnection, and a
  lost hint is what every listener's store-reading fallback is there for;
- an echo expected while the subscription was not confirmed is not counted: it is heard twice.
"""

from __future__ import annotations

from collections import Counter


class Echoes:
    """Copies still to come back from the bus of hints already delivered locally."""

    def __init__(self) -> None:
        self._expected: dict[str, Counter[str]] = {}

    def expect(self, channel: str, message: str) -> None:
        self._expected.setdefault(channel, Counter())[message] += 1

    def forget(self, channel: str, message: str) -> None:
        """One echo fewer expected (its publish failed, or it came)."""
        counts = self._expected.get(channel)
        if counts is None or message not in counts:
            return
        counts[message] -= 1
        if counts[message] <= 0:
            del counts[message]
            if not counts:
                del self._expected[channel]

    def take(self, channel: str, message: str) -> bool:
        """True (and one echo fewer expected) if this message is an echo to drop."""
        counts = self._expected.get(channel)
        if counts is None or message not in counts:
            return False
        self.forget(channel, message)
        return True

    def drop(self, channel: str | None = None) -> None:
        """Expect nothing more on `channel` (unsubscribed), or on any (reconnected)."""
        if channel is None:
            self._expected.clear()
        else:
            self._expected.pop(channel, None)
