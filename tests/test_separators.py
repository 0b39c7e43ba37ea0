"""The codec accepts exactly the separators docs/protocol.md names: space and tab."""

from __future__ import annotations

import pytest

from harness.protocol.messages import DecodeError, Prepare, Vote, decode, encode

P = "127.0.0.1:8886,127.0.0.1:8887,127.0.0.1:8888"


@pytest.mark.parametrize("sep", [" ", "\t", "  ", " \t "], ids=repr)
def test_spaces_and_tabs_separate_fields(sep: str) -> None:
    line = f"PREPARE{sep}txid=t1{sep}value=5{sep}participants={P}".encode()
    assert decode(line) == Prepare(txid="t1", value=5, participants=tuple(P.split(",")))


@pytest.mark.parametrize(
    "blank",
    ["\u00a0", "\u2003", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\x00", "\u3000", "\ufeff"],
    ids=lambda c: f"U+{ord(c):04X}",
)
@pytest.mark.parametrize("where", ["after-verb", "between-fields", "inside-a-value", "inside-quotes"])
def test_no_other_blank_or_control_character_is_accepted_anywhere(blank: str, where: str) -> None:
    line = {
        "after-verb": f"PREPARE{blank}txid=t1 value=5 participants={P}",
        "between-fields": f"PREPARE txid=t1{blank}value=5 participants={P}",
        "inside-a-value": f"VOTE txid=t1 vote=NOK reason=a{blank}b",
        "inside-quotes": f'VOTE txid=t1 vote=NOK reason="a{blank}b"',
    }[where]
    with pytest.raises(DecodeError) as e:
        decode(line.encode())
    assert e.value.code == "bad-line"


@pytest.mark.parametrize("blank", ["\u00a0", "\u2028", "\x0b", "\x1f"], ids=lambda c: f"U+{ord(c):04X}")
def test_a_reason_holding_such_a_character_is_escaped_on_the_way_out_and_comes_back(blank: str) -> None:
    vote = Vote(txid="t1", yes=False, reason=f"a{blank}b")
    wire = encode(vote)
    assert blank.encode() not in wire
    assert decode(wire) == vote
