"""Child processes of a run: started by handle, stopped by handle, never orphaned.

Every process the runner starts goes through :class:`Processes`, which stops
each one by its own handle (SIGTERM, then SIGKILL after STOP_TIMEOUT).
Children also ask the kernel to SIGKILL them should the runner itself die
(PR_SET_PDEATHSIG), so not even a SIGKILLed runner leaves orphans: SIGKILL,
because it is the one signal that acts on a stopped process (the nemesis
pauses children with SIGSTOP; a SIGTERM would wait for a SIGCONT that never
comes). Nothing is lost by it: participants are crash-safe by design.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

logger = logging.getLogger("harness.experiment.processes")

# fork: children start in milliseconds with the runner's modules already
# imported (start-up is part of the experiment). The runner never forks while
# an event loop or a thread of its own is running.
MP = multiprocessing.get_context("fork")

READY_TIMEOUT = 10.0  # seconds for a process to report ready before the run fails
STOP_TIMEOUT = 5.0  # seconds a participant gets to stop on SIGTERM before SIGKILL


class RunError(Exception):
    """The run could not be carried out (a port in use, a process that died)."""


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this child if the runner (pid ``parent``) dies, even
    while it is stopped: no orphans (the module's docstring)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the runner died before prctl took effect
        os._exit(1)


def _child(
    close: list[Any], parent: int, target: Callable[..., None], args: tuple[Any, ...], enter: Callable[[], None] | None
) -> None:
    for held in close:
        held.close()
    # The runner turns SIGTERM into an interruption (runner.interrupted_by_sigterm); a
    # child stops on it. Its own process group: the terminal's Ctrl-C goes to the runner
    # alone, which stops the clients first and gives the participants time to finish.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setpgid(0, 0)
    die_with_parent(parent)
    if enter is not None:
        enter()  # e.g. into the node's network namespace (harness.hosts.placement)
    target(*args)


class Processes:
    """Every child of the run, stopped by handle when the run ends."""

    def __init__(self) -> None:
        self.procs: list[BaseProcess] = []
        # Descriptors of the runner that no child should keep: listening sockets
        # of participants not started yet (or a port would outlive its participant
        # inside another child), the runner's ends of pipes, its own log files.
        # A forked child inherits every descriptor and closes these first.
        self.held: list[Any] = []

    def start(
        self,
        target: Callable[..., None],
        args: tuple[Any, ...],
        name: str,
        keep: socket.socket | None = None,
        enter: Callable[[], None] | None = None,
    ) -> BaseProcess:
        """Fork a child running ``target(*args)``; ``keep`` is the one held
        socket it may keep (its own listening socket); ``enter`` runs in the
        child first (where the child must live)."""
        sys.stdout.flush()
        sys.stderr.flush()
        close = [s for s in self.held if s is not keep]
        proc = MP.Process(target=_child, args=(close, os.getpid(), target, args, enter), name=name, daemon=False)
        proc.start()
        self.procs.append(proc)
        return proc

    def stop(self, procs: list[BaseProcess] | None = None) -> None:
        """SIGTERM, then SIGKILL whatever has not exited in STOP_TIMEOUT."""
        procs = self.procs if procs is None else procs
        for p in procs:
            if p.is_alive() and p.pid is not None:
                p.terminate()
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGCONT)  # a paused child acts on SIGTERM only once resumed
        deadline = time.monotonic() + STOP_TIMEOUT
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                logger.warning("%s did not stop on SIGTERM; killing it", p.name)
                p.kill()
                p.join()


def await_ready(name: str, proc: BaseProcess, conn: multiprocessing.connection.Connection, deadline: float) -> Any:
    """The payload of the child's ("ready", payload) message; RunError if it
    reports an error, exits, or stays silent past ``deadline``."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunError(f"{name} did not report ready within {READY_TIMEOUT}s")
        ready = multiprocessing.connection.wait([conn, proc.sentinel], timeout=left)
        if conn in ready:
            try:
                kind, payload = conn.recv()
            except EOFError:
                raise RunError(f"{name} exited (code {proc.exitcode}) before reporting ready") from None
            if kind == "error":
                raise RunError(f"{name}: {payload}")
            return payload
        if proc.sentinel in ready and not conn.poll():
            proc.join()
            raise RunError(f"{name} exited (code {proc.exitcode}) before reporting ready")
