"""The checker's columns (harness.verify.columns): they hold what the objects they replace held.

Theory of operation. The checker keeps its per-transaction state in typed
columns: unsigned int64 where it can, anything else aside (Ints); a dict's
insertion order emulated over rows (Durable). Each is held here to the plain
Python it replaces (an int, a dict), on random operations. Then whole folders:
a real-format run folder (the benchmark's generator) whose values are rewritten
beyond int64 and below zero is still consistent, and a difference that only
the values kept aside show is still caught, by validity and by the comparison
of log and store.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.bench.synth import synthesize_run
from harness.verify.checker import check_run
from harness.verify.columns import INT_MARK, Committed, Durable, Ints, TxIds

HUGE = 2**70  # beyond int64: kept aside
ODD = [0, 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1, 2**64, HUGE, -1, -(2**63), -(2**70)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.one_of(st.sampled_from(ODD), st.integers())), max_size=40))
def test_ints_hold_any_int(writes: list[tuple[int, int]]) -> None:
    column, model = Ints(10), [0] * 10
    for i, v in writes:
        column.put(i, v)
        model[i] = v
    assert [column.get(i) for i in range(10)] == model
    assert list(column) == model
    assert column.get(-1) == model[-1]
    again = Ints(10)
    for i, v in enumerate(model):
        again.put(i, v)
    assert column.same(again)


def test_ints_differing_only_beyond_int64_are_not_the_same() -> None:
    a, b = Ints(1), Ints(1)
    a.put(0, HUGE)
    b.put(0, HUGE + 2**64)  # the same low 64 bits
    assert not a.same(b)
    assert (a.get(0), b.get(0)) == (HUGE, HUGE + 2**64)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 7), st.integers(-3, 3)), max_size=60))
def test_durable_keeps_a_dicts_order_and_entries(ops: list[tuple[bool, int, int]]) -> None:
    durable, model = Durable(), {}
    durable.grow(8)
    for put, i, v in ops:
        if put:
            durable.put(i, 1 + (v & 1), 100 + i, v, v * 2**64)
            model[i] = (1 + (v & 1), 100 + i, v, v * 2**64)
        else:
            assert durable.pop(i) == model.pop(i, None)
    assert durable.rows() == list(model)
    assert [durable.entry(i) for i in durable.rows()] == list(model.values())
    assert all(durable.has(i) == (i in model) for i in range(8))


def test_committed_iterates_and_compares_as_its_records() -> None:
    ids = TxIds()
    records = [("a-1", 1, 5), ("b-1", 2, -5), ("a-2", 3, HUGE)]
    seq, other = Committed(ids.names), Committed(ids.names)
    for s in (seq, other):
        s.extend([ids.id(t) for t, _, _ in records], [v for _, v, _ in records], [x for _, _, x in records])
    assert list(seq) == records and seq.item(-1) == records[-1] and len(seq) == 3
    assert seq.same(other)
    other.values.put(2, HUGE + 2**64)
    assert not seq.same(other)
    # the mark itself is a value like any other (it goes aside, as put() puts it)
    marked = Committed(ids.names)
    marked.extend([ids.id("c-1"), ids.id("c-2")], [1, 2], [INT_MARK, 7])
    assert list(marked) == [("c-1", 1, INT_MARK), ("c-2", 2, 7)] and marked.item(0) == ("c-1", 1, INT_MARK)


def test_durable_rows_stay_in_order_when_nearly_every_record_is_popped() -> None:
    # a compacting participant: each transaction put, then popped, one or two left
    durable, model = Durable(), {}
    durable.grow(3000)
    for i in range(3000):
        durable.put(i, 1, i + 1, i, 0)
        model[i] = (1, i + 1, i, 0)
        if i >= 2:
            assert durable.pop(i - 2) == model.pop(i - 2)
        if i % 500 == 499:
            assert durable.rows() == list(model) and len(durable.seq) <= 2 * len(model)
    durable.put(0, 2, 9, 9, 9)  # popped long ago: a new insertion goes last, as in a dict
    model[0] = (2, 9, 9, 9)
    assert durable.rows() == list(model) == [2998, 2999, 0]


# ---------------------------------------------------------------- whole folders


def _rewrite(folder: Path, txid: str, old: int, new: int, nodes: list[str]) -> None:
    """``txid``'s value ``old`` becomes ``new`` in the lines of ``nodes``' logs that name it."""
    pattern = re.compile(rf"^(.* txid={re.escape(txid)} .*)\bvalue={old}\b", re.M)
    for node in nodes:
        path = folder / f"{node}.log"
        text, n = pattern.subn(rf"\g<1>value={new}", path.read_text())
        assert n, f"{node}.log: no line gives {txid} the value {old}"
        path.write_text(text)


def _folder(tmp_path: Path) -> tuple[Path, dict[str, Any], list[list[Any]]]:
    """A small consistent real-format folder whose first commit writes HUGE and second -5."""
    folder = tmp_path / "run"
    synthesize_run(folder, 2_000)
    final = json.loads((folder / "final_states.json").read_text())
    servers = sorted(final)
    committed = final[servers[0]]["storage"]["committed"]
    (t1, _, v1), (t2, _, v2) = committed[0], committed[1]
    client1, client2 = t1.split("-")[0], t2.split("-")[0]
    _rewrite(folder, t1, v1, HUGE, [*servers, client1])
    _rewrite(folder, t2, v2, -5, [*servers, client2])
    for s in servers:
        final[s]["storage"]["committed"][0][2] = HUGE
        final[s]["storage"]["committed"][1][2] = -5
    (folder / "final_states.json").write_text(json.dumps(final))
    return folder, final, committed


def test_values_beyond_int64_and_below_zero_are_checked_exactly(tmp_path: Path) -> None:
    folder, final, committed = _folder(tmp_path)
    report = check_run(folder)
    assert report.consistent, report.violations[:3]
    servers = sorted(final)
    t1 = committed[0][0]
    # One participant logs and stores the commit with another value beyond int64,
    # the same in its low 64 bits: only the values kept aside tell them apart.
    other = HUGE + 2**64
    _rewrite(folder, t1, HUGE, other, [servers[1]])
    final[servers[1]]["storage"]["committed"][0][2] = other
    (folder / "final_states.json").write_text(json.dumps(final))
    report = check_run(folder)
    validity = [v for v in report.violations if v.kind == "validity"]
    assert [(v.txid, v.message) for v in validity] == [
        (t1, f"{servers[1]} committed {t1} with value {other}, but its client proposed {HUGE}")
    ]
    assert {v.kind for v in report.violations} == {"validity", "replicas"}, report.violations
    # Its store alone now holds yet another: the log and the store disagree.
    final[servers[1]]["storage"]["committed"][0][2] = other + 2**64
    (folder / "final_states.json").write_text(json.dumps(final))
    report = check_run(folder)
    [mismatch] = [v for v in report.violations if v.kind == "log-storage"]
    assert mismatch.txid == t1 and f"value {other}, storage says version 1 value {other + 2**64}" in mismatch.message
