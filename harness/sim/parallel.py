"""A second core for the explorer: the tail of each large breadth-first level expanded by a forked worker.

Theory of operation. The explorer (harness.sim.explore) expands the states of
one BFS level in their order, and for each successor finds its class's
packed representative in the store, adding it if new. Expanding a state (its
steps, their successors, their canonical forms) is the costly part and reads
the store not at all: only the interned tables (harness.sim.interned), whose
ids are given in order of first use. So a worker process, forked once at the
first level of at least MIN_LEVEL states, is sent the packed states of each
such level's tail while the explorer expands its head itself; it sends back,
per state, each successor's packed representative, its class size and its
healing rank (:func:`expand`), which the explorer merges into the store in
order, exactly as if it had computed them. The head's share follows the two
sides' measured speeds, so that both finish together; it changes no result.

Why the merged result is the serial one (same states in the same order, so
the same counts, depths, violations and traces): the worker's tables are
always a prefix of the explorer's. With each batch, the explorer sends the
snapshots, entries and blurred keys it gave ids since the last one
(Interned.ids_since), and the worker gives them the same ids, in the same
order (Interned.adopt). A state whose expansion gives no new id reads only
ids both hold, and every computation on them is a pure function of their
contents, memoised or not: the explorer would compute the same. A state whose
expansion needs a new id (tens per level, out of tens of thousands) might
number it differently, so the worker rolls its tables back to before that
state (Interned.rollback) and leaves it to the explorer, which expands it
itself when the merge reaches it: ids are then given in the serial order. So
is a state with a violation (the explorer rebuilds the trace from its own
tables).

What crosses the pipe: states as packed bytes (marshal); new snapshots and
entries pickled, except core classes, which go by their number in the list
of classes both processes held at the fork (a broken variant's class is made
at run time and cannot be pickled by name). A class first met after the fork
must be importable; if not, pickling fails and the explorer goes on alone.
The explorer kills the worker by its pid when it stops and reaps it.
"""

from __future__ import annotations

import io
import marshal
import multiprocessing
import os
import pickle
import signal
import time
import traceback
from multiprocessing.connection import Connection
from typing import IO

from harness.sim.moves import Moves

# Per state: None (the explorer expands it itself), or the number of
# transitions and, per successor that is not the state itself, its packed
# representative, the size of its class, and its healing rank.
Expanded = tuple[int, list[tuple[bytes, int, int]]] | None

MIN_LEVEL = 4_000  # a smaller level is expanded by the explorer alone: sharing it would cost more than it saves


def expand(ex: Moves, order: list[bytes], lo: int, hi: int) -> list[Expanded]:
    """Expand the states ``order[lo:hi]`` with no new id given (see the module docstring)."""
    successors, ids_given, checkpoint = ex.successors, ex.ids_given, ex.checkpoint
    out: list[Expanded] = []
    for i in range(lo, hi):
        point = checkpoint()
        ids = ids_given()
        found = successors(order[i])  # None: a step breaks a property
        if ids_given() != ids:
            ex.rollback(point)
            found = None
        out.append(found)
    return out


class Worker:
    """A forked child that expands, level after level, the states the
    explorer sends it (see :func:`expand`). Before each batch, the explorer
    sends it the ids it gave since the last one (Interned.ids_since), which
    the child gives in the same order (Interned.adopt): the child's tables
    are always a prefix of the explorer's, as :func:`expand` requires."""

    def __init__(self, ex: Moves) -> None:
        self._ex = ex
        self._given = ex.ids_given()
        # Frozen cores hold their class, which may not be importable (a broken
        # variant made at run time): the classes both processes hold since the
        # fork go by number. A class first met later must be importable.
        self._classes = ex.core_classes()
        self._class_ids = {cls: n for n, cls in enumerate(self._classes)}
        self._conn, child = multiprocessing.Pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            self._conn.close()
            code = 1
            try:
                self._serve(child)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        child.close()

    def _serve(self, conn: Connection) -> None:
        ex = self._ex
        while True:
            try:
                request = conn.recv_bytes()
            except EOFError:
                return  # the explorer is done
            given, since, keys = _Unpickler(io.BytesIO(request), self._classes).load()
            ex.adopt(given, since)
            t0 = time.perf_counter()
            results = expand(ex, keys, 0, len(keys))
            conn.send_bytes(marshal.dumps((results, time.perf_counter() - t0)))

    def start(self, order: list[bytes], lo: int, hi: int) -> None:
        """Send the states ``order[lo:hi]`` to expand (collect their results)."""
        ex = self._ex
        since = ex.ids_since(self._given)
        out = io.BytesIO()
        _Pickler(out, self._class_ids).dump((self._given, since, order[lo:hi]))
        self._conn.send_bytes(out.getbuffer())
        self._given = ex.ids_given()

    def collect(self) -> tuple[list[Expanded], float]:
        """Wait for the results of the states last sent; and how long the worker took (seconds)."""
        try:
            results, seconds = marshal.loads(self._conn.recv_bytes())
        except EOFError:
            raise RuntimeError("the explorer's worker failed") from None
        return results, seconds

    def stop(self) -> None:
        """End the child (killed if it is still busy) and reap it."""
        if self.pid:
            self._conn.close()
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0


class _Pickler(pickle.Pickler):
    def __init__(self, file: IO[bytes], class_ids: dict[type, int]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._class_ids = class_ids

    def persistent_id(self, obj: object) -> int | None:
        return self._class_ids.get(obj) if isinstance(obj, type) else None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], classes: list[type]) -> None:
        super().__init__(file)
        self._classes = classes

    def persistent_load(self, pid: object) -> type:
        assert isinstance(pid, int)
        return self._classes[pid]
