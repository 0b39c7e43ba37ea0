"""The checker's per-transaction state, in columns: a few bytes per transaction, not objects.

Theory of operation. A long run has hundreds of thousands of transactions,
each seen at every participant; the checker must remember something of each
until the end (its rules compare participants, clients and stores). As
Python objects (a dataclass per transaction and participant, an observation
per record, a tuple per client line and stored commit, a dict entry for each
in every table) that was about 1.6 KB per transaction: the bulk of the
checker's memory. Here every txid gets a dense number once (``TxIds``), and
what the rules need of it lives at that number in typed arrays: one set of
columns per participant (``Tracks``, with its ``Durable`` records), one for
the clients' begins (``Begins``) and outcomes (``Outcomes``), one per store
(``Committed``). A log line is remembered by its offset (``at``), never by
its text: a violation cites it by reading the line again (harness.verify.reader.Log).

Values and versions are int64 in the columns; a log or store may hold any
int (a hand-edited line), so ``Ints`` keeps the rare larger ones aside. The
columns grow in blocks as new txids come (a participant's log is read whole
before the next: the first one grows its columns as it goes, the others find
most txids numbered already). Order matters where the checker's report
shows it: each column set keeps the order in which its txids first came, so
that violations come out in the order the dicts they replace gave.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from harness.verify.reader import Log

# Columns are unsigned (typecodes I and Q): CPython stores into them without the
# argument parser its signed ones go through (a quarter of a column write). So a
# line's offset is at >= 1 (0: none), and Ints holds an int in [0, INT_MARK) as it
# is, any other (negative, or larger) aside in a dict, marked INT_MARK.
INT_MARK = 2**64 - 1
# The record states' codes in a Tracks.state column (Codes(*STATES): others follow as met).
STATES = ("prepared", "committed", "aborted")
PREPARED, COMMITTED, ABORTED = 1, 2, 3
_GROW = 4096  # rows a column set grows by at least (and by an eighth of its size)


def _zeros(typecode: str, n: int) -> array[int]:
    return array(typecode, bytes(array(typecode).itemsize * n))


class TxIds:
    """Each txid's number: dense, from 0, in the order the checker first meets them."""

    __slots__ = ("index", "names")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str] = []  # number -> txid (one copy of each txid string)

    def id(self, txid: str) -> int:
        i = self.index.get(txid)
        if i is None:
            i = self.index[txid] = len(self.names)
            self.names.append(txid)
        return i

    def get(self, txid: str | None) -> int | None:
        return self.index.get(txid) if txid is not None else None

    def __len__(self) -> int:
        return len(self.names)


class Codes:
    """Small strings (states, results) as small ints: code 0 is None."""

    __slots__ = ("index", "names")

    def __init__(self, *known: str) -> None:
        self.names: list[str | None] = [None, *known]
        self.index: dict[str | None, int] = {s: c for c, s in enumerate(self.names)}

    def code(self, s: str) -> int:
        c = self.index.get(s)
        if c is None:
            c = self.index[s] = len(self.names)
            self.names.append(s)
        return c


class Ints:
    """A column of ints, unsigned 64-bit where it can: the rare others (a negative
    value, an unknown timestamp -1, a hand-edited huge one) are kept aside."""

    __slots__ = ("big", "data")

    def __init__(self, n: int = 0) -> None:
        self.data = _zeros("Q", n)
        # row -> its value, where data holds INT_MARK (a row written over since may stay:
        # data says which rows are aside; the checker writes data directly where it can)
        self.big: dict[int, int] = {}

    def put(self, i: int, v: int) -> None:
        if 0 <= v < INT_MARK:
            self.data[i] = v
        else:
            self.data[i] = INT_MARK
            self.big[i if i >= 0 else i + len(self.data)] = v

    def append(self, v: int) -> None:
        self.data.append(0)
        self.put(len(self.data) - 1, v)

    def get(self, i: int) -> int:
        v = self.data[i]
        return self.big[i if i >= 0 else i + len(self.data)] if v == INT_MARK else v

    def grow(self, more: int) -> None:
        self.data.extend(_zeros("Q", more))

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[int]:
        if not self.big:
            return iter(self.data)
        return (self.big[i] if v == INT_MARK else v for i, v in enumerate(self.data))

    def same(self, other: Ints) -> bool:
        """The same ints row by row (big may keep stale rows: data says which count)."""
        if self.data != other.data:
            return False
        return (not self.big and not other.big) or all(
            self.big[i] == other.big[i] for i, v in enumerate(self.data) if v == INT_MARK
        )


class Durable:
    """A participant's durable records as its log shows them since its last start
    (the dict txid -> last "durable" observation it replaces, in the same order):
    per txid, its state's code, line, value and version."""

    __slots__ = ("at", "pos", "seq", "state", "value", "version")

    def __init__(self) -> None:
        self.state = array("I")  # a Codes code; 0: no record
        self.at = array("Q")
        self.value = Ints()
        self.version = Ints()
        # The order a dict would keep: seq lists rows as they were inserted;
        # pos[row] - 1 is where its live insertion is in seq (0: none).
        self.seq = array("I")
        self.pos = array("Q")

    def grow(self, more: int) -> None:
        self.state.extend(_zeros("I", more))
        self.at.extend(_zeros("Q", more))
        self.value.grow(more)
        self.version.grow(more)
        self.pos.extend(_zeros("Q", more))

    def put(self, i: int, state: int, at: int, value: int, version: int) -> None:
        if not self.pos[i]:
            self.seq.append(i)
            self.pos[i] = len(self.seq)
        self.state[i], self.at[i] = state, at
        if 0 <= value < INT_MARK and 0 <= version < INT_MARK:
            self.value.data[i], self.version.data[i] = value, version
        else:
            self.value.put(i, value)
            self.version.put(i, version)

    def has(self, i: int | None) -> bool:
        return i is not None and i < len(self.state) and self.state[i] != 0

    def entry(self, i: int) -> tuple[int, int, int, int]:
        """(state code, at, value, version) of row ``i``."""
        return self.state[i], self.at[i], self.value.get(i), self.version.get(i)

    def pop(self, i: int | None) -> tuple[int, int, int, int] | None:
        if not self.has(i):
            return None
        assert i is not None
        out = self.entry(i)
        self.state[i], self.pos[i] = 0, 0
        return out

    def rows(self) -> list[int]:
        """The rows held, in the order a dict would give them."""
        pos, seq = self.pos, self.seq
        live = [i for k, i in enumerate(seq, 1) if pos[i] == k]
        if 2 * len(live) < len(seq):
            # Mostly rows popped since (a compacting participant forgets nearly
            # every record): keep only the live ones, in place (the reader holds
            # this array), so that a restart late in a long run reads its few
            # records, not every insertion of the run.
            del seq[:]
            seq.extend(live)
            for k, i in enumerate(live, 1):
                pos[i] = k
        return live


class Tracks:
    """What the rules need of one participant's observations of each transaction
    (the first and last observation of its current state, its first prepared and
    committed ones, every state it has been in), as columns over txid numbers."""

    __slots__ = (
        "committed_at",
        "durable",
        "first_at",
        "first_parts",
        "first_ts",
        "first_value",
        "forgot",
        "last_at",
        "last_value",
        "last_version",
        "log",
        "order",
        "prepared_at",
        "prepared_ts",
        "seen",
        "size",
        "state",
    )

    def __init__(self, log: Log | None = None) -> None:
        self.log = log
        self.size = 0
        self.state = array("I")  # its current state's code (Codes); 0: unknown here
        self.seen = bytearray()  # every state it has been durable in (bits)
        self.first_at = array("Q")  # the first observation of its current state (0: none)
        self.last_at = array("Q")  # its latest observation
        self.committed_at = array("Q")  # its first committed observation (0: none)
        self.prepared_at = array("Q")  # its first prepared observation (0: none)
        self.prepared_ts = Ints()
        # Of a committed one only (what the rules read of a commit): the first
        # committed observation's time, value and participants (an index into
        # the checker's table of lists), the latest one's value and version.
        self.first_ts = Ints()
        self.first_value = Ints()
        self.first_parts = array("I")
        self.last_value = Ints()
        self.last_version = Ints()
        self.forgot = bytearray()  # compaction dropped it (a "forgotten" line, or found at a start)
        self.order = array("I")  # rows in the order they were first observed here
        self.durable = Durable()

    def ensure(self, i: int, total: int) -> None:
        """Room for row ``i`` (``total``: how many txids are numbered)."""
        if i < self.size:
            return
        n = max(i + 1, min(total, self.size + _GROW), self.size + self.size // 8 + _GROW)
        more = n - self.size
        for column in (self.state, self.first_parts):
            column.extend(_zeros("I", more))
        for column in (self.first_at, self.last_at, self.committed_at, self.prepared_at):
            column.extend(_zeros("Q", more))
        for ints in (self.prepared_ts, self.first_ts, self.first_value, self.last_value, self.last_version):
            ints.grow(more)
        self.seen.extend(bytes(more))
        self.forgot.extend(bytes(more))
        self.durable.grow(more)
        self.size = n

    def code(self, i: int | None) -> int:
        """Row ``i``'s state code here (0: unknown here)."""
        return self.state[i] if i is not None and i < self.size else 0

    def cite(self, at: int) -> str:
        assert self.log is not None, "a row was observed, so its log was read"
        return self.log.cite(at)


class Begins:
    """The clients' begin lines: per txid, the value proposed and the (last) line
    that proposed it, in the order txids were first begun (a dict's, again)."""

    __slots__ = ("at", "ids", "log", "logs", "order", "value")

    def __init__(self, ids: TxIds) -> None:
        self.ids = ids
        self.logs: list[Log] = []  # the clients' logs, by index
        self.at = array("Q")  # 0: never begun
        self.log = array("I")
        self.value = Ints()
        self.order = array("I")

    def has(self, i: int) -> bool:
        return i < len(self.at) and self.at[i] > 0

    def put(self, i: int, value: int, log: int, at: int) -> None:
        if i >= len(self.at):
            more = max(i + 1, len(self.ids)) - len(self.at)
            self.at.extend(_zeros("Q", more))
            self.log.extend(_zeros("I", more))
            self.value.grow(more)
        if not self.at[i]:
            self.order.append(i)
        self.at[i], self.log[i] = at, log
        self.value.put(i, value)

    def line(self, i: int) -> tuple[int, Log, int]:
        """(value, log, at) of row ``i``'s begin line."""
        return self.value.get(i), self.logs[self.log[i]], self.at[i]

    def get(self, txid: str) -> tuple[int, Log, int] | None:
        i = self.ids.get(txid)
        return self.line(i) if i is not None and self.has(i) else None


class Outcomes:
    """The clients' outcome lines in log order: txid, result (a Codes code), line.
    (The checker appends to the four columns itself: one outcome per transaction.)"""

    __slots__ = ("at", "ids", "log", "result")

    def __init__(self) -> None:
        self.ids = array("I")
        self.result = array("I")
        self.log = array("I")
        self.at = array("Q")

    def __len__(self) -> int:
        return len(self.ids)


class Committed:
    """One store's committed records in its order: (txid, version, value) as columns."""

    __slots__ = ("ids", "names", "values", "versions")

    def __init__(self, names: list[str]) -> None:
        self.names = names  # TxIds.names
        self.ids = array("I")
        self.versions = Ints()
        self.values = Ints()

    def extend(self, ids: list[int], versions: list[int], values: list[int]) -> None:
        self.ids.extend(ids)
        for column, new in ((self.versions, versions), (self.values, values)):
            try:
                block = array("Q", new)
            except OverflowError:  # some negative, or beyond: one at a time
                block = None
            if block is not None and INT_MARK not in block:
                column.data.extend(block)
            else:  # INT_MARK itself is a value too: it goes aside, as put() does
                for v in new:
                    column.append(v)

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, k: int) -> tuple[str, int, int]:
        return self.names[self.ids[k]], self.versions.get(k), self.values.get(k)

    def __iter__(self) -> Iterator[tuple[str, int, int]]:
        return zip(map(self.names.__getitem__, self.ids), self.versions, self.values, strict=True)

    def same(self, other: Committed) -> bool:
        return self.ids == other.ids and self.versions.same(other.versions) and self.values.same(other.values)
