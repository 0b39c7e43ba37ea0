"""The wire codec: round trips, byte-at-a-time framing, and every kind of bad input.

Pure tests: no sockets. The stream is fed to LineBuffer the way h11's tests feed
their parser, down to one byte at a time, since TCP may split a line anywhere.
"""

from __future__ import annotations

import operator
import string
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocol.messages import (
    MAX_LINE,
    MAX_PARTICIPANTS,
    MESSAGE_FIELDS,
    VALUE_MAX,
    VALUE_MIN,
    Abort,
    Commit,
    DecodeError,
    Error,
    Kind,
    LineBuffer,
    Marked,
    Marks,
    Message,
    NokCode,
    Outcome,
    Prepare,
    Resolve,
    State,
    Status,
    TxState,
    Vote,
    decode,
    decode_line,
    encode,
    encode_text,
    format_fields,
    message_fields,
    parse_participants,
)

# Modest and deterministic: these run on every commit, and a failure must repeat.
FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None)

THREE = ("127.0.0.1:8886", "127.0.0.1:8887", "127.0.0.1:8888")
AWKWARD = 'say "hi"\\ to C:\\dir\nsecond line\twith tab, ünïcødé and = signs'

EXAMPLES: list[Message] = [
    Prepare(txid="c1-0001", value=42, participants=THREE),
    Prepare(txid="t", value=0, participants=("localhost:1",)),
    Prepare(txid="x.y:z_9-", value=VALUE_MAX, participants=THREE),
    Prepare(txid="c1-0002", value=7, participants=THREE, prio=1_764_000_000_123_456),  # wait-die's age
    Prepare(txid="c1-0003", value=7, participants=THREE, prio=0, lockless=True),
    Prepare(txid="neg", value=VALUE_MIN, participants=tuple(f"h{i}:{i}" for i in range(MAX_PARTICIPANTS))),
    Vote(txid="c1-0001", yes=True),
    Vote(txid="c1-0001", yes=False, code=NokCode.LOCKED, reason="locked by c2-0007"),
    Vote(txid="c1-0001", yes=False, code=NokCode.ABORTED),
    Vote(txid="c1-0001", yes=False, reason=AWKWARD),
    Vote(txid="c1-0001", yes=False),
    Vote(txid="c1-0001", yes=True, reason="yes, with a reason"),
    Commit(txid="c1-0001"),
    Abort(txid="c1-0001"),
    Resolve(txid="c1-0001"),
    Outcome(txid="c1-0001", state=TxState.PREPARED),
    Outcome(txid="c1-0001", state=TxState.COMMITTED),
    Outcome(txid="c1-0001", state=TxState.ABORTED),
    Status(),
    State(node="127.0.0.1:8886", storage_server=-7, version=3, lock=None, committed=3, aborted=9),
    State(node='server 1 "main"', storage_server=VALUE_MAX, version=0, lock="c1-0001", committed=0, aborted=0),
    Error(code="not-prepared", txid="c1-0001", detail="this participant never voted yes on it"),
    Error(code="unknown-verb", detail="unknown verb 'HELLO'"),
    Error(code="weird code", detail=""),
    Error(code="bad-field", detail=AWKWARD, txid="c1-0001"),
    Error(code="x", detail='\\"\\n\\\\ \\'),
    Marks(),
    Marks(after="client1-0a1b2c"),
    Marked(marks=(), more=False),
    Marked(marks=(("client1-0a1b2c", 7), ("x:y", 0)), more=True),
]


def _id(msg: Message) -> str:
    return msg.kind.value


# ---------------------------------------------------------------- round trips


def test_examples_cover_every_message_kind() -> None:
    assert {m.kind for m in EXAMPLES} == set(Kind)


def test_decode_accepts_exactly_the_fields_that_encode_writes() -> None:
    """decode keeps its own table of each kind's fields (for speed): it must
    name every field encode can write, optional ones included, and no other."""
    written: dict[Kind, set[str]] = {k: set() for k in Kind}
    for msg in EXAMPLES:
        written[msg.kind] |= {key for key, value in message_fields(msg) if value is not None}
    assert written == MESSAGE_FIELDS
    with pytest.raises(DecodeError) as e:
        decode(b"COMMIT txid=t1 value=3")
    assert e.value.code == "unknown-field"


@pytest.mark.parametrize("msg", EXAMPLES, ids=_id)
def test_encode_then_decode_gives_the_same_message(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize("msg", EXAMPLES, ids=_id)
def test_encoded_message_is_exactly_one_newline_terminated_line(msg: Message) -> None:
    line = encode(msg)
    assert line.endswith(b"\n")
    assert b"\n" not in line[:-1]
    assert b"\r" not in line
    assert line.startswith(msg.kind.value.encode())


def test_values_with_spaces_quotes_backslashes_and_newlines_are_quoted_on_the_wire() -> None:
    line = encode(Vote(txid="t1", yes=False, reason='a "b" c\\d\ne'))
    assert line == b'VOTE txid=t1 vote=NOK reason="a \\"b\\" c\\\\d\\ne"\n'


def test_vote_is_ok_or_nok_on_the_wire_as_in_the_seed() -> None:
    assert encode(Vote(txid="t1", yes=True)) == b"VOTE txid=t1 vote=ok\n"
    assert decode(b"VOTE txid=t1 vote=NOK reason=busy") == Vote(txid="t1", yes=False, reason="busy")


def test_hand_typed_line_with_extra_spaces_and_crlf_decodes() -> None:
    line = b"  PREPARE  txid=t1   value=5 participants=a:1,b:2  \r\n"
    assert decode(line) == Prepare(txid="t1", value=5, participants=("a:1", "b:2"))


def test_unknown_escape_inside_quotes_is_kept_literally() -> None:
    assert decode(b'ERROR code=x detail="a\\tb"') == Error(code="x", detail="a\\tb")


def test_reason_with_carriage_return_round_trips() -> None:
    msg = Vote(txid="t1", yes=False, reason="line one\r\nline two\r")
    assert decode(encode(msg)) == msg


# Text as the core may produce it: any Unicode that UTF-8 can carry (no lone surrogates).
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
# Built from alphabets rather than st.from_regex, which is several times slower.
ALNUM = string.ascii_letters + string.digits
txids = st.builds(operator.add, st.sampled_from(ALNUM), st.text(ALNUM + "._:-", max_size=63))
addresses = st.builds("{}:{}".format, st.text(ALNUM + "._-", min_size=1, max_size=12), st.integers(0, 65535))
ints = st.integers(VALUE_MIN, VALUE_MAX)
counts = st.integers(0, VALUE_MAX)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Prepare,
        txid=txids,
        value=ints,
        participants=st.lists(addresses, min_size=1, max_size=MAX_PARTICIPANTS, unique=True).map(tuple),
    ),
    st.builds(Vote, txid=txids, yes=st.booleans(), reason=texts),
    st.builds(Commit, txid=txids),
    st.builds(Abort, txid=txids),
    st.builds(Resolve, txid=txids),
    st.builds(Outcome, txid=txids, state=st.sampled_from(TxState)),
    st.just(Status()),
    st.builds(
        State,
        node=texts,
        storage_server=ints,
        version=counts,
        lock=st.none() | txids,
        committed=counts,
        aborted=counts,
    ),
    st.builds(Error, code=texts, detail=texts, txid=st.none() | texts),
)


@FAST
@given(msg=messages)
def test_any_message_round_trips(msg: Message) -> None:
    assert decode(encode(msg)) == msg


# ---------------------------------------------------------------- framing


def _feed_in_chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    """Feed ``data`` in chunks of the given sizes (cycled), collect the lines."""
    buf = LineBuffer()
    lines: list[bytes] = []
    i = k = 0
    while i < len(data):
        size = sizes[k % len(sizes)]
        lines += buf.feed(data[i : i + size])
        i += size
        k += 1
    assert buf.pending == 0
    return lines


def test_feeding_one_byte_at_a_time_gives_the_same_messages_as_whole_lines() -> None:
    stream = b"".join(encode(m) for m in EXAMPLES)
    lines = _feed_in_chunks(stream, [1])
    assert [decode(line) for line in lines] == [decode(encode(m)) for m in EXAMPLES] == EXAMPLES


def test_crlf_terminated_lines_fed_byte_by_byte_decode() -> None:
    stream = b"".join(encode(m)[:-1] + b"\r\n" for m in EXAMPLES)
    assert [decode(line) for line in _feed_in_chunks(stream, [1])] == EXAMPLES


def test_linebuffer_holds_back_an_incomplete_line() -> None:
    buf = LineBuffer()
    assert buf.feed(b"COMMIT txid=t1\nABORT tx") == [b"COMMIT txid=t1"]
    assert buf.pending == len(b"ABORT tx")
    assert buf.feed(b"id=t2\n") == [b"ABORT txid=t2"]
    assert buf.pending == 0


def test_linebuffer_passes_empty_lines_through_for_decode_to_refuse() -> None:
    assert LineBuffer().feed(b"\n\n") == [b"", b""]


@settings(FAST, max_examples=60)
@given(
    msgs=st.lists(messages, min_size=1, max_size=8),
    sizes=st.lists(st.integers(1, 64), min_size=1, max_size=8),
)
def test_any_chunking_gives_the_same_messages(msgs: list[Message], sizes: list[int]) -> None:
    stream = b"".join(encode(m) for m in msgs)
    assert [decode(line) for line in _feed_in_chunks(stream, sizes)] == msgs


# ---------------------------------------------------------------- line length


def test_line_of_exactly_max_line_bytes_with_terminator_is_accepted() -> None:
    line = b"x" * (MAX_LINE - 1) + b"\n"
    assert LineBuffer().feed(line) == [line[:-1]]
    assert _feed_in_chunks(line, [1]) == [line[:-1]]


def test_complete_line_over_max_line_raises_too_long() -> None:
    with pytest.raises(DecodeError) as e:
        LineBuffer().feed(b"x" * MAX_LINE + b"\n")
    assert e.value.code == "too-long"


def test_linebuffer_raises_as_soon_as_an_unterminated_line_exceeds_max_line() -> None:
    # Fed one byte at a time with no newline ever coming: the buffer must give
    # up by the time it holds more than MAX_LINE bytes (it cannot know sooner
    # than MAX_LINE bytes, since MAX_LINE - 1 bytes plus "\n" is a legal line).
    buf = LineBuffer()
    raised_at = None
    for n in range(1, MAX_LINE + 10):
        try:
            buf.feed(b"x")
        except DecodeError as e:
            assert e.code == "too-long"
            raised_at = n
            break
        assert buf.pending <= MAX_LINE
    assert raised_at is not None
    assert MAX_LINE <= raised_at <= MAX_LINE + 1


def test_linebuffer_refuses_a_huge_chunk_without_newline_at_once() -> None:
    with pytest.raises(DecodeError) as e:
        LineBuffer().feed(b"x" * (10 * MAX_LINE))
    assert e.value.code == "too-long"


def test_over_long_line_spread_over_chunks_is_refused_before_its_newline() -> None:
    buf = LineBuffer()
    buf.feed(b"PREPARE txid=t1 ")
    with pytest.raises(DecodeError) as e:
        buf.feed(b"v" * MAX_LINE)
    assert e.value.code == "too-long"


def test_lines_before_an_over_long_line_are_delivered_whatever_the_chunking() -> None:
    stream = b"STATUS\n" + b"x" * (2 * MAX_LINE)
    byte_by_byte: list[bytes] = []
    buf = LineBuffer()
    with pytest.raises(DecodeError):
        for i in range(len(stream)):
            byte_by_byte += buf.feed(stream[i : i + 1])
    assert byte_by_byte == [b"STATUS"]

    buf = LineBuffer()
    assert buf.feed(stream) == [b"STATUS"]  # the complete line first ...
    assert buf.error is not None and buf.error.code == "too-long"  # ... then the refusal
    with pytest.raises(DecodeError):
        buf.feed(b"more\n")  # and nothing after it


def test_decode_refuses_a_line_over_max_line() -> None:
    with pytest.raises(DecodeError) as e:
        decode(b"COMMIT txid=t1 " + b"x" * MAX_LINE)
    assert e.value.code == "too-long"


# ---------------------------------------------------------------- bad input

PARTS = b"participants=a:1,b:2"

BAD_INPUT: list[Any] = [  # (code, line) pairs, or pytest.param of one
    # unknown verb
    ("unknown-verb", b"HELLO txid=t1"),
    ("unknown-verb", b"prepare txid=t1 value=1 " + PARTS),
    ("unknown-verb", b"commit txid=t1"),
    ("unknown-verb", b""),
    ("unknown-verb", b"   \r\n"),
    ("unknown-verb", b"ok"),
    # missing field
    ("missing-field", b"PREPARE txid=t1 value=1"),
    ("missing-field", b"PREPARE txid=t1 " + PARTS),
    ("missing-field", b"PREPARE value=1 " + PARTS),
    ("missing-field", b"COMMIT"),
    ("missing-field", b"ABORT"),
    ("missing-field", b"RESOLVE"),
    ("missing-field", b"VOTE txid=t1"),
    ("missing-field", b"VOTE vote=ok"),
    ("missing-field", b"OUTCOME txid=t1"),
    ("missing-field", b"ERROR detail=oops"),
    ("missing-field", b"STATE node=n storage_server=0 version=0 committed=0 aborted=0"),
    # unknown field
    ("unknown-field", b"COMMIT txid=t1 value=1"),
    ("unknown-field", b"STATUS verbose=1"),
    ("unknown-field", b"VOTE txid=t1 vote=ok why=because"),
    ("unknown-field", b"PREPARE txid=t1 value=1 " + PARTS + b" Value=2"),
    ("unknown-field", b'ERROR code=x detail="d" extra="e f"'),
    # duplicate field (bare and quoted paths)
    ("bad-field", b"COMMIT txid=t1 txid=t2"),
    ("bad-field", b"COMMIT txid=t1 txid=t1"),
    ("bad-field", b'VOTE txid=t1 vote=NOK reason="a" reason="b"'),
    # malformed fields
    ("bad-field", b"COMMIT txid"),
    ("bad-field", b"COMMIT =t1"),
    ("bad-field", b'VOTE txid=t1 vote=NOK reason="unterminated'),
    ("bad-field", b'VOTE txid=t1 vote=NOK reason="a"b'),
    ("bad-field", b'VOTE txid=t1 vote=NOK reason=a"b'),
    ("bad-field", b'VOTE txid=t1 vote=NOK reason="dangling\\'),
    # bad txid
    ("bad-txid", b"COMMIT txid="),
    ("bad-txid", b"COMMIT txid=-t1"),
    ("bad-txid", b"COMMIT txid=_t1"),
    ("bad-txid", b"COMMIT txid=" + b"a" * 65),
    ("bad-txid", b'COMMIT txid="t 1"'),
    ("bad-txid", b"COMMIT txid=t/1"),
    ("bad-txid", "COMMIT txid=caf\u00e9".encode()),
    ("bad-txid", b"PREPARE txid=t;1 value=1 " + PARTS),
    # bad value
    ("bad-value", b"PREPARE txid=t1 value=abc " + PARTS),
    ("bad-value", b"PREPARE txid=t1 value=1.5 " + PARTS),
    ("bad-value", b"PREPARE txid=t1 value= " + PARTS),
    ("bad-value", b"PREPARE txid=t1 value=0x10 " + PARTS),
    ("bad-value", b"PREPARE txid=t1 value=1 prio=-5 " + PARTS),  # an age is never negative
    ("bad-value", b"PREPARE txid=t1 value=1 lockless=0 " + PARTS),  # said only when true
    ("bad-value", b"PREPARE txid=t1 value=%d " % (VALUE_MAX + 1) + PARTS),
    ("bad-value", b"PREPARE txid=t1 value=%d " % (VALUE_MIN - 1) + PARTS),
    ("bad-value", b"PREPARE txid=t1 value=" + b"9" * 100 + b" " + PARTS),
    ("bad-value", b"VOTE txid=t1 vote=yes"),
    ("bad-value", b"VOTE txid=t1 vote=OK"),
    ("bad-value", b"OUTCOME txid=t1 state=done"),
    ("bad-value", b"OUTCOME txid=t1 state=PREPARED"),
    ("bad-value", b"STATE node=n storage_server=0 version=-1 lock=- committed=0 aborted=0"),
    ("bad-value", b"STATE node=n storage_server=0 version=0 lock=- committed=x aborted=0"),
    ("bad-value", b"STATE node=n storage_server=%d version=0 lock=- committed=0 aborted=0" % (VALUE_MAX + 1)),
    # bad participants
    ("bad-participants", b'PREPARE txid=t1 value=1 participants=""'),
    ("bad-participants", b"PREPARE txid=t1 value=1 participants="),
    ("bad-participants", b"PREPARE txid=t1 value=1 participants=a:1,a:1"),
    ("bad-participants", b"PREPARE txid=t1 value=1 participants=a:1,b:2,a:1"),
    ("bad-participants", b"PREPARE txid=t1 value=1 participants=a"),
    ("bad-participants", b"PREPARE txid=t1 value=1 participants=a:1,b"),
    ("bad-participants", b"PREPARE txid=t1 value=1 participants=a:port"),
    ("bad-participants", b"PREPARE txid=t1 value=1 participants=:1"),
    ("bad-participants", b"PREPARE txid=t1 value=1 participants=a:1,,b:2"),
    ("bad-participants", b"PREPARE txid=t1 value=1 participants=a:1,"),
    ("bad-participants", b"PREPARE txid=t1 value=1 participants=a:123456"),
    (
        "bad-participants",
        b"PREPARE txid=t1 value=1 participants=" + b",".join(b"h%d:%d" % (i, i) for i in range(MAX_PARTICIPANTS + 1)),
    ),
    # not UTF-8
    ("bad-encoding", b"COMMIT txid=t1\xff"),
    ("bad-encoding", b"\x80COMMIT txid=t1"),
    ("bad-encoding", b'VOTE txid=t1 vote=NOK reason="\xc3"'),
    ("bad-encoding", b"COMMIT txid=t1 \xed\xa0\x80"),  # an encoded surrogate is not UTF-8
    # more than one line
    ("bad-line", b"COMMIT txid=t1\rABORT txid=t2"),
    ("bad-line", b"COMMIT txid=t1\nABORT txid=t2\n"),
    ("bad-line", b'VOTE txid=t1 vote=NOK reason="a\nb"'),
    # too long
    ("too-long", b"VOTE txid=t1 vote=NOK reason=" + b"r" * MAX_LINE),
]


@pytest.mark.parametrize(("code", "line"), BAD_INPUT, ids=lambda v: v if isinstance(v, str) else repr(v[:30]))
def test_bad_input_raises_decode_error_with_its_code(code: str, line: bytes) -> None:
    with pytest.raises(DecodeError) as e:
        decode(line)
    assert e.value.code == code
    assert e.value.detail


def test_decode_error_is_a_value_error_naming_its_code() -> None:
    with pytest.raises(ValueError, match=r"^unknown-verb: "):
        decode(b"HELLO")


@pytest.mark.parametrize(
    ("line", "msg"),
    [
        (
            b"PREPARE txid=t1 value=%d participants=a:1" % VALUE_MAX,
            Prepare(txid="t1", value=VALUE_MAX, participants=("a:1",)),
        ),
        (
            b"PREPARE txid=t1 value=%d participants=a:1" % VALUE_MIN,
            Prepare(txid="t1", value=VALUE_MIN, participants=("a:1",)),
        ),
        (b"COMMIT txid=" + b"a" * 64, Commit(txid="a" * 64)),
        (b"COMMIT txid=t1\r\n", Commit(txid="t1")),
        (b"COMMIT txid=t1\n", Commit(txid="t1")),
        (b"STATUS", Status()),
        (b"ERROR code=x", Error(code="x", detail="")),
        (
            b"STATE node=n storage_server=0 version=0 lock=- committed=0 aborted=0",
            State(node="n", storage_server=0, version=0, lock=None, committed=0, aborted=0),
        ),
    ],
)
def test_inputs_at_the_limits_are_accepted(line: bytes, msg: Message) -> None:
    assert decode(line) == msg


@FAST
@given(line=st.binary(max_size=200))
def test_decode_of_arbitrary_bytes_raises_nothing_but_decode_error(line: bytes) -> None:
    try:
        msg = decode(line)
    except DecodeError as e:
        assert e.code
    else:
        assert decode(encode(msg)) == msg


@FAST
@given(
    msg=messages,
    cut=st.integers(0, 200),
    junk=st.sampled_from([b"", b'"', b"\\", b"=", b" x", b"\xff", b"\r", b"\x00"]),
)
def test_decode_of_mangled_messages_raises_nothing_but_decode_error(msg: Message, cut: int, junk: bytes) -> None:
    line = encode(msg)[:-1]
    cut %= len(line) + 1
    try:
        decode(line[:cut] + junk + line[cut:])
    except DecodeError as e:
        assert e.code


@pytest.mark.parametrize("raw", [b"+5", b"1_000", "\u0665".encode(), b"5.0", b"0x10"])
def test_numbers_are_plain_ascii_decimals(raw: bytes) -> None:
    with pytest.raises(DecodeError) as e:
        decode(b"PREPARE txid=t1 value=" + raw + b" participants=a:1")
    assert e.value.code == "bad-value"


def test_participant_ports_above_65535_are_refused() -> None:
    with pytest.raises(DecodeError) as e:
        decode(b"PREPARE txid=t1 value=1 participants=a:1,b:65536")
    assert e.value.code == "bad-participants"


@FAST
@given(msg=messages, txid=st.sampled_from(["", "plain", AWKWARD, 'a"b', "sp ace"]))
def test_the_fast_encoders_write_what_the_general_path_writes(msg: Message, txid: str) -> None:
    """encode_text's shortcuts for the messages of every transaction (harness.protocol.messages)
    give the text of message_fields + format_fields, field for field, awkward txids included."""
    for m in (msg, replace(msg, txid=txid) if hasattr(msg, "txid") and not isinstance(msg, Error) else msg):
        rest = format_fields(message_fields(m))
        assert encode_text(m) == (f"{m.kind.value} {rest}" if rest else m.kind.value)


def test_a_participant_list_seen_before_is_validated_as_the_first_time() -> None:
    """parse_participants remembers lists it accepted, never ones it refused."""
    raw = ",".join(THREE)
    assert parse_participants(raw) == THREE and parse_participants(raw) == THREE
    for bad in ("127.0.0.1:8886,127.0.0.1:8886", "nohost", "h:99999"):
        for _ in range(2):
            with pytest.raises(DecodeError):
                parse_participants(bad)


@pytest.mark.parametrize(
    "line",
    [b"COMMIT txid=t1", b"  COMMIT   txid=t1 \r", b'\tVOTE\ttxid=t1 vote=NOK reason="a \\"b\\""\t\r', b"STATUS\r"],
)
def test_decode_line_gives_the_text_a_node_logs(line: bytes) -> None:
    """The text beside the message is the line without its terminator and surrounding blanks,
    what the nodes logged before by decoding the line a second time."""
    msg, text = decode_line(line)
    assert msg == decode(line) and text == line.decode().strip(" \t\r")
