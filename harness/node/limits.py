"""Bounded resources for a participant: how many connections, for how long, doing how much.

Theory of operation (docs/security.md). Whatever a peer sends, a participant
spends a bounded amount on it:

* at most ``max_connections`` connections at once, and never more than its
  descriptor limit allows with RESERVED_FDS to spare (storage, log, peers): one
  more is accepted and closed at once, so the listening socket never stalls on
  EMFILE, and the participant writes one ``overload`` line per episode;
* a connection that sends nothing for ``idle_timeout`` seconds, with nothing
  owed to it, is closed; a partial line older than ``line_timeout`` seconds (a
  slow sender holding a line open) is refused with ERROR ``slow-line``; a TLS
  handshake gets HANDSHAKE_TIMEOUT (harness.node.tls);
* a connection may have at most MAX_PIPELINE requests waiting for their
  replies; more is refused (ERROR ``too-many``). Reading pauses earlier, at
  harness.node.inbound.MAX_QUEUED, while the peer does not read.

Should the descriptor limit still be hit (another part of the process holding
descriptors), asyncio's own "socket.accept() out of system resource" error,
logged with a traceback for every attempt, is cut to its first occurrence by
:func:`quiet_accept_errors`.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

MAX_CONNECTIONS = 512
IDLE_TIMEOUT = 300.0  # seconds: far above any client's --timeout, and a person's pause at a terminal
LINE_TIMEOUT = 10.0  # seconds a line may take to arrive whole
MAX_PIPELINE = 256  # requests queued on one connection, answered or not
RESERVED_FDS = 48  # descriptors kept for everything but inbound connections


@dataclass(frozen=True)
class Limits:
    """The bounds one participant applies (the module's docstring)."""

    max_connections: int = MAX_CONNECTIONS
    idle_timeout: float = IDLE_TIMEOUT
    line_timeout: float = LINE_TIMEOUT

    def connection_cap(self) -> int:
        """max_connections, lowered to fit the process's descriptor limit."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - RESERVED_FDS))


class _OnceFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("socket.accept() out of system resource"):
            return True
        if self.seen:
            return False
        self.seen = True
        record.exc_info = None  # one line, not a traceback
        return True


def quiet_accept_errors() -> None:
    """Let asyncio report running out of descriptors on accept once, in one line."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _OnceFilter) for f in logger.filters):
        logger.addFilter(_OnceFilter())
