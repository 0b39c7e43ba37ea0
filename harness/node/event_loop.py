"""Which event loop the nodes run on: asyncio's own, or uvloop where it is asked for and installed.

One home for the choice: the environment variable HARNESS_LOOP (``asyncio``,
the default, or ``uvloop``), which ``--loop`` on the command lines sets and
forked children inherit, so a participant, a client, the runner and the
benchmark's floor all run on the same loop. uvloop is an extra (``pip install
'.[fast]'``): asyncio's loop stays the default, because the harness must run
on a bare Python and its figures are compared with an asyncio floor; the
benchmark measures both when uvloop is installed.
"""

from __future__ import annotations

import asyncio
import enum
import importlib.util
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

ENV = "HARNESS_LOOP"
T = TypeVar("T")


class LoopKind(enum.StrEnum):
    ASYNCIO = "asyncio"
    UVLOOP = "uvloop"


class LoopUnavailable(Exception):
    """The loop asked for is not installed (the environment's problem)."""


def available(kind: LoopKind) -> bool:
    return kind is LoopKind.ASYNCIO or importlib.util.find_spec("uvloop") is not None


def chosen() -> LoopKind:
    """The loop HARNESS_LOOP names; LoopUnavailable if it names one that cannot be had."""
    name = os.environ.get(ENV, LoopKind.ASYNCIO.value)
    try:
        kind = LoopKind(name)
    except ValueError:
        raise LoopUnavailable(f"{ENV}={name!r}: the loop must be one of {', '.join(LoopKind)}") from None
    if not available(kind):
        raise LoopUnavailable(f"{ENV}=uvloop but uvloop is not installed (pip install '.[fast]')")
    return kind


def choose(kind: LoopKind) -> None:
    """Run this process and the children it forks on ``kind`` (LoopUnavailable if it is not installed)."""
    if not available(kind):
        raise LoopUnavailable("uvloop is not installed (pip install '.[fast]')")
    os.environ[ENV] = kind.value


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on the chosen loop."""
    if chosen() is LoopKind.UVLOOP:
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)
