"""Timers that all wait the same delay, by key, on one event-loop timer.

Theory of operation. A participant starts a resolve timer at every yes vote
and cancels it at the decision; a client starts a phase timer per phase. One
``loop.call_later`` each costs a handle, a push onto the loop's heap (asyncio
orders it with a Python ``__lt__``, a dozen calls deep once the heap holds
the cancelled handles of the last seconds) and a pass of the loop when a
cancelled one reaches the top; at a few thousand transactions per second that
was a tenth of a node's CPU. But every timer of one node waits the same delay,
so deadlines come due in the order they were set: an insertion-ordered dict
of key -> deadline is already a queue. Starting is a dict insert (a restart
moves the key to the end), cancelling a dict pop, and one loop timer is armed
for the oldest deadline only. When it fires, every deadline due is fired in
order, then the timer is armed again for the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# A deadline this close is fired now: asyncio runs a timer up to its clock's
# resolution early, and waiting out the rest would cost a pass of the loop.
EARLY = 0.001


class Deadlines(Generic[K]):
    """Timers of one fixed ``delay``, by key; ``fire(key)`` when one is due."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, fire: Callable[[K], None]) -> None:
        self._loop = loop
        self.delay = delay
        self._fire = fire
        self._due: dict[K, float] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._firing = False

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def start(self, key: K) -> None:
        """(Re)start ``key``'s timer: it fires ``delay`` seconds from now, unless cancelled."""
        due = self._loop.time() + self.delay
        self._due.pop(key, None)  # a restart goes to the end: deadlines stay in order
        self._due[key] = due
        if self._handle is None and not self._firing:
            self._handle = self._loop.call_at(due, self._expire)

    def cancel(self, key: K) -> None:
        """Cancel ``key``'s timer, if it runs. The loop timer stays armed; it finds nothing due."""
        self._due.pop(key, None)

    def close(self) -> None:
        """Cancel every timer."""
        self._due.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expire(self) -> None:
        self._handle = None
        self._firing = True  # a timer started by fire() must not arm a second handle
        try:
            now = self._loop.time() + EARLY
            while self._due:
                key = next(iter(self._due))
                if self._due[key] > now:
                    break
                del self._due[key]
                self._fire(key)
        finally:
            self._firing = False
        if self._due and self._handle is None:
            self._handle = self._loop.call_at(self._due[next(iter(self._due))], self._expire)
