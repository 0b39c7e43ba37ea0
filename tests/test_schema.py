"""The event schema: writers go through it, readers are built from it, and they agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.events import schema
from harness.events.log import EventLog, event_kind, format_line, read_log, typed_fields
from harness.events.schema import BEGIN, DURABLE, KINDS, OUTCOME, FieldType
from harness.verify.reader import BEGIN_SHAPE, OUTCOME_SHAPE, RECORD

# A value of each type, as a writer would pass it.
SAMPLE: dict[FieldType, object] = {
    FieldType.INT: -42,
    FieldType.FLOAT: 1.25,
    FieldType.WORD: "client1-ab12-3",
    FieldType.LIST: "127.0.0.1:8886,127.0.0.1:8887",
    FieldType.TEXT: 'voted NOK: "locked" by t1',
    FieldType.MESSAGE: "VOTE txid=t1 vote=ok",
}


def test_a_write_with_a_field_the_event_does_not_have_is_refused(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "n.log", "n1")
    with pytest.raises(ValueError, match="has no field colour"):
        log.write(BEGIN, txid="t1", value=1, participants="p", colour="red")
    log.close()
    assert (tmp_path / "n.log").read_text() == ""


def test_a_write_without_a_required_field_is_refused(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "n.log", "n1")
    with pytest.raises(ValueError, match="needs participants"):
        log.write(BEGIN, txid="t1", value=1)
    with pytest.raises(ValueError, match="needs value"):
        log.write(BEGIN, txid="t1", value=None, participants="p")
    log.close()


def test_fields_are_written_in_the_schema_order_whatever_order_they_are_given() -> None:
    line = format_line("T", "c1", BEGIN, prepare="ordered", participants="p", value=3, txid="t9")
    assert line == "T c1 begin txid=t9 value=3 participants=p prepare=ordered"


@pytest.mark.parametrize("kind", [k for k in KINDS.values() if FieldType.MESSAGE not in {f.type for f in k.fields}])
def test_every_event_reads_back_as_written_with_its_types(tmp_path: Path, kind: schema.EventKind) -> None:
    values = {f.name: SAMPLE[f.type] for f in kind.fields}
    log = EventLog(tmp_path / "n.log", "n1")
    log.write(kind, **values)
    log.close()
    (line,) = read_log(tmp_path / "n.log")
    assert event_kind(line) is kind
    assert typed_fields(kind, line.fields) == values


def test_every_event_name_is_unique_and_every_field_documented_by_type() -> None:
    assert len(KINDS) == len({k.name for k in KINDS.values()})
    for kind in KINDS.values():
        assert len(kind.field_names) == len(set(kind.field_names)), kind.name
        assert kind.doc, kind.name


# Text a TEXT field may hold: anything but a NUL, quotes and backslashes included.
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n\r"), max_size=30)
_word = st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True)


@given(
    txid=_word,
    value=st.integers(-(2**63), 2**63 - 1),
    version=st.integers(0, 10**6),
    participants=_word,
    why=st.none() | _text,
    reason=st.none() | _text,
    nok=st.none() | st.sampled_from(["locked", "aborted"]),
)
def test_the_checker_shapes_read_what_split_fields_reads(
    txid: str, value: int, version: int, participants: str, why: str | None, reason: str | None, nok: str | None
) -> None:
    """A shape made from the schema captures each field exactly as the generic
    reader does, or does not match at all (the checker then reads the line
    field by field): never a different value."""
    lines = [
        (RECORD, DURABLE, {"txid": txid, "state": "prepared", "value": value, "version": version,
                           "participants": participants, "why": why}),
        (BEGIN_SHAPE, BEGIN, {"txid": txid, "value": value, "participants": participants}),
        (OUTCOME_SHAPE, OUTCOME, {"txid": txid, "result": "aborted", "op": 1, "attempt": 2, "value": value,
                                  "latency_ms": "1.500", "cause": "no-vote", "nok": nok, "reason": reason}),
    ]  # fmt: skip
    for shape, kind, values in lines:
        line = format_line("2026-11-30T00:00:00.000001Z", "n1", kind, **values)
        rest = line.split(" ", 2)[2]  # from the event on, as the shape reads it
        m = re.compile(shape.pattern).match(rest)
        generic = {k: str(v) for k, v in values.items() if v is not None}
        if m is not None:
            assert shape.values(m) == generic
        else:  # only a value written quoted where the shape wants it bare may miss
            assert any(f'{k}="' in rest for k in generic), rest
