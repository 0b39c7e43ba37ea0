"""A NOK vote's reason code: from the participant core, on the wire, to the coordinator's report."""

from __future__ import annotations

import pytest

from harness.protocol import coordinator as co
from harness.protocol.messages import Abort, DecodeError, NokCode, Prepare, Vote, decode, encode
from harness.protocol.participant import ParticipantCore, Reply

P = ("127.0.0.1:1", "127.0.0.1:2")


def test_the_code_travels_on_the_wire_beside_the_reason() -> None:
    vote = Vote(txid="t1", yes=False, code=NokCode.LOCKED, reason="locked by t0")
    line = encode(vote)
    assert line == b'VOTE txid=t1 vote=NOK code=locked reason="locked by t0"\n'
    assert decode(line) == vote
    assert decode(b"VOTE txid=t1 vote=NOK\n") == Vote(txid="t1", yes=False)  # a peer that sends none


def test_an_unknown_code_is_refused_as_bad_input() -> None:
    with pytest.raises(DecodeError) as e:
        decode(b"VOTE txid=t1 vote=NOK code=tired\n")
    assert e.value.code == "bad-value"


@pytest.mark.parametrize("code", list(NokCode))
def test_the_coordinator_reports_the_code_of_the_nok_that_decided(code: NokCode) -> None:
    core = ParticipantCore.restore(P[0], [])
    if code is NokCode.LOCKED:
        core.on_request(1, Prepare(txid="other", value=1, participants=P))  # another holds the lock
    else:
        core.on_request(1, Abort(txid="t1"))  # the ABORT overtook the PREPARE: t1 is aborted here
    (reply,) = [a for a in core.on_request(3, Prepare(txid="t1", value=2, participants=P)) if isinstance(a, Reply)]
    assert isinstance(reply.msg, Vote) and reply.msg.code is code

    coordinator = co.CoordinatorCore(txid="t1", value=2, participants=P)
    coordinator.start()
    actions = coordinator.on_reply(P[0], reply.msg)
    (report,) = [a for a in actions if isinstance(a, co.Report)]
    assert (report.result, report.cause, report.nok) == (co.Result.ABORTED, co.Cause.NO_VOTE, code)
