"""The checker, fed hand-made run folders and broken protocols: it must catch them.

Theory of operation. ``FakeRun`` writes a synthetic run folder, line by line in
the format the real nodes write (harness.events' timestamp, harness.protocol's
``key=value`` fields): three participants and two clients that race (both abort,
the seed's classic), then commit one transaction each. ``consistent_run()`` is
that folder; the builder is shown right by the checker finding it consistent,
and the checker is shown right on real runs too. Every other test starts from
the consistent folder, breaks one thing, and asserts the violation's kind, its
txid and the ``file:line`` its evidence cites (located in the written file, not
assumed). Where one break necessarily implies others (a commit missing at one
replica also makes the replicas differ), the exact set of kinds is asserted, so
a false positive fails the test as surely as a miss.

Broken protocols run end to end: the real runner forks its nodes, so a core
patched here with monkeypatch is the core the nodes run.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.events.log import format_line, format_message_line, utc_timestamp
from harness.events.schema import (
    BEGIN,
    COMPACTED,
    CONNECTED,
    DECIDE,
    DURABLE,
    LISTENING,
    OUTCOME,
    RECOVERED,
    RECV,
    RESTORED,
    SEND,
    STOPPED,
    EventKind,
)
from harness.experiment.config import RunConfig
from harness.experiment.runner import run
from harness.protocol import coordinator as co
from harness.protocol import participant as participant_core
from harness.protocol.messages import Abort, Commit, Message, NokCode, Outcome, Prepare, Status, TxState, Vote
from harness.verify import reader
from harness.verify.checker import check_run
from harness.verify.model import CheckError, CheckReport, Violation

SERVERS = ("server1", "server2", "server3")
CLIENTS = ("client1", "client2")
ADDRESS = {"server1": "127.0.0.1:8886", "server2": "127.0.0.1:8887", "server3": "127.0.0.1:8888"}
THREE = tuple(ADDRESS[s] for s in SERVERS)
PARTICIPANTS = ",".join(THREE)
CLIENT_PEER = {"client1": "127.0.0.1:50001", "client2": "127.0.0.1:50002"}  # as participants see them
T0 = 1_800_000_000.0  # the synthetic run's first timestamp (2027-01-15)
TICK = 0.000_1  # seconds between two synthetic log lines

# The consistent run's transactions: client1's and client2's first transactions
# race and both abort; then each commits one.
ABORTED_1 = "client1-aaaaaaaaaaaa-1"  # prepared at server1, server2; server3 voted no (locked by ABORTED_2)
ABORTED_2 = "client2-bbbbbbbbbbbb-1"  # prepared at server3; server1, server2 voted no (locked by ABORTED_1)
COMMITTED_1 = "client1-aaaaaaaaaaaa-2"  # committed everywhere at version 1
COMMITTED_2 = "client2-bbbbbbbbbbbb-2"  # committed everywhere at version 2: the final value
VALUE = {ABORTED_1: 1_000_001, ABORTED_2: 2_000_001, COMMITTED_1: 1_000_002, COMMITTED_2: 2_000_002}
THIRD = "client1-aaaaaaaaaaaa-3"  # client1's third transaction, in the tests that need one


# ====================================================================== the builder


class FakeRun:
    """A synthetic run folder, built event by event, then written.

    The builder keeps each participant's records as the real one would (state,
    value, version), so ``final_states()`` derives STATUS and storage from the
    same story the logs tell. Tests break the logs (``logs``, ``sub``, ``drop``)
    or the final states (the dict passed to ``write``) afterwards."""

    def __init__(self) -> None:
        self.logs: dict[str, list[str]] = {node: [] for node in (*SERVERS, *CLIENTS)}
        self._ticks = itertools.count(1)
        # server -> txid -> (state, value, version)
        self.records: dict[str, dict[str, tuple[str, int, int]]] = {s: {} for s in SERVERS}
        self._pids = itertools.count(4242)
        for s in SERVERS:
            self.start(s)
        for c in CLIENTS:
            for s in SERVERS:
                self.message(c, SEND, ADDRESS[s], Status())
                self.message(s, RECV, CLIENT_PEER[c], Status())
            self.emit(c, CONNECTED, pid=7001 + CLIENTS.index(c), participants=PARTICIPANTS)

    # ------------------------------------------------------------ lines

    def stamp(self) -> str:
        """The next tick's timestamp."""
        return utc_timestamp(T0 + next(self._ticks) * TICK)

    def emit(self, node: str, kind: EventKind, /, **values: object) -> None:
        """One event line, as EventLog writes it (through the schema), at the next tick."""
        self.logs[node].append(format_line(self.stamp(), node, kind, **values))

    def message(self, node: str, kind: EventKind, peer: str, msg: Message) -> None:
        """A message sent or received (``kind`` SEND or RECV), at the next tick."""
        self.logs[node].append(format_message_line(self.stamp(), node, kind, peer, msg))

    def durable_line(self, server: str, txid: str, state: str, value: int, version: int, why: str) -> str:
        return format_line(
            self.stamp(),
            server,
            DURABLE,
            txid=txid,
            state=state,
            value=value,
            version=version,
            participants=PARTICIPANTS,
            why=why,
        )

    def _persist(self, server: str, txid: str, state: str, value: int, why: str) -> None:
        version = 0
        if state == "committed":
            version = 1 + max((v for st, _, v in self.records[server].values() if st == "committed"), default=0)
        self.records[server][txid] = (state, value, version)
        self.logs[server].append(self.durable_line(server, txid, state, value, version, why))

    # ------------------------------------------------------------ participant (re)starts

    def start(self, server: str, records: dict[str, tuple[str, int, int]] | None = None) -> None:
        """``server`` (re)starts from ``records`` (default: what it holds), logging
        as ParticipantNode.start does: each record restored, then listening."""
        if records is not None:
            self.records[server] = records
        held = self.records[server]
        committed = sorted((version, value) for state, value, version in held.values() if state == "committed")
        storage_server, version = committed[-1][::-1] if committed else (0, 0)
        lock = next((t for t, (state, _, _) in held.items() if state == "prepared"), None)
        if held:
            for txid, (state, value, v) in sorted(held.items(), key=lambda kv: (kv[1][2], kv[0])):
                self.emit(server, RESTORED, txid=txid, state=state, value=value, version=v, participants=PARTICIPANTS)
            prepared = ",".join(t for t, (state, _, _) in held.items() if state == "prepared")
            self.emit(
                server,
                RECOVERED,
                records=len(held),
                prepared=prepared or "-",
                storage_server=storage_server,
                version=version,
            )
        self.emit(
            server,
            LISTENING,
            addr=ADDRESS[server],
            pid=next(self._pids),
            name=ADDRESS[server],
            storage_server=storage_server,
            version=version,
            lock=lock or "-",
            records=len(held),
            data=f"/runs/fake/data/{server}.sqlite3",
        )

    # ------------------------------------------------------------ protocol steps

    def begin(self, client: str, txid: str, value: int) -> None:
        """The client begins ``txid`` and sends PREPARE to every participant."""
        self.emit(client, BEGIN, txid=txid, value=value, participants=PARTICIPANTS)
        for s in SERVERS:
            self.message(client, SEND, ADDRESS[s], Prepare(txid=txid, value=value, participants=THREE))

    def vote(
        self, server: str, client: str, txid: str, value: int, *, holder: str | None = None, persist_first: bool = True
    ) -> None:
        """``server`` receives PREPARE: votes yes, or no if ``holder`` holds its lock.
        ``persist_first=False`` sends a yes vote before it is durable (a broken node)."""
        self.message(server, RECV, CLIENT_PEER[client], Prepare(txid=txid, value=value, participants=THREE))
        reason = f"locked by {holder}" if holder else ""
        state, why = ("aborted", f"vote no: {reason}") if holder else ("prepared", "vote yes")
        vote = Vote(txid=txid, yes=not holder, code=NokCode.LOCKED if holder else None, reason=reason)
        if persist_first:
            self._persist(server, txid, state, value, why)
        self.message(server, SEND, CLIENT_PEER[client], vote)
        if not persist_first:
            self._persist(server, txid, state, value, why)
        self.message(client, RECV, ADDRESS[server], vote)

    def decide(self, client: str, txid: str, result: str, reason: str) -> None:
        self.emit(client, DECIDE, txid=txid, result=result, reason=reason)

    def finish(self, server: str, client: str, txid: str, value: int, result: str) -> None:
        """The client sends COMMIT (result committed) or ABORT to ``server``; it applies it and answers."""
        verb = "COMMIT" if result == "committed" else "ABORT"
        request = Commit(txid=txid) if result == "committed" else Abort(txid=txid)
        self.message(client, SEND, ADDRESS[server], request)
        self.message(server, RECV, CLIENT_PEER[client], request)
        self._persist(server, txid, result, value, f"{verb} received")
        answer = Outcome(txid=txid, state=TxState(result))
        self.message(server, SEND, CLIENT_PEER[client], answer)
        self.message(client, RECV, ADDRESS[server], answer)

    def outcome(
        self,
        client: str,
        txid: str,
        value: int,
        op: int,
        result: str,
        cause: str,
        reason: str = "",
        nok: NokCode | None = None,
    ) -> None:
        self.emit(
            client,
            OUTCOME,
            txid=txid,
            result=result,
            op=op,
            attempt=1,
            value=value,
            latency_ms="4.250",
            cause=cause,
            nok=nok.value if nok else None,
            reason=reason or None,
        )

    def commit_everywhere(self, client: str, txid: str, value: int, op: int) -> None:
        """A transaction with no contention: every vote yes, COMMIT everywhere."""
        self.begin(client, txid, value)
        for s in SERVERS:
            self.vote(s, client, txid, value)
        self.decide(client, txid, "committed", "every participant voted yes")
        for s in SERVERS:
            self.finish(s, client, txid, value, "committed")
        self.outcome(client, txid, value, op, "committed", "all-yes")

    def stop(self) -> None:
        for node in self.logs:
            self.emit(node, STOPPED)

    # ------------------------------------------------------------ the folder

    def final_states(self) -> dict[str, Any]:
        """final_states.json as the runner writes it, derived from the records."""
        final: dict[str, Any] = {}
        for s in SERVERS:
            records = self.records[s]
            committed = sorted(
                ([t, version, value] for t, (st, value, version) in records.items() if st == "committed"),
                key=lambda item: item[1],
            )
            prepared = sorted(t for t, (st, _, _) in records.items() if st == "prepared")
            aborted = sum(1 for st, _, _ in records.values() if st == "aborted")
            final[s] = {
                "address": ADDRESS[s],
                "status": {
                    "storage_server": committed[-1][2] if committed else 0,
                    "version": committed[-1][1] if committed else 0,
                    "lock": prepared[0] if prepared else None,
                    "committed": len(committed),
                    "aborted": aborted,
                },
                "storage": {"committed": committed, "prepared": prepared, "aborted": aborted},
            }
        return final

    def run_json(self) -> dict[str, Any]:
        return {
            "seed": 7,
            "command": "python -m harness.run --clients 2 --transactions 2 --seed 7",
            "config": {"clients": len(CLIENTS), "participants": len(SERVERS), "transactions": 2},
            "participants": [{"node": s, "address": ADDRESS[s]} for s in SERVERS],
            "clients": list(CLIENTS),
        }

    def write(self, folder: Path, final: dict[str, Any] | None = None) -> Path:
        folder.mkdir(parents=True)
        (folder / "data").mkdir()
        (folder / "run.json").write_text(json.dumps(self.run_json(), indent=2) + "\n")
        final = self.final_states() if final is None else final
        (folder / "final_states.json").write_text(json.dumps(final, indent=2) + "\n")
        for node, lines in self.logs.items():
            (folder / f"{node}.log").write_text("".join(line + "\n" for line in lines))
        return folder

    # ------------------------------------------------------------ breaking it

    def find(self, node: str, *needles: str) -> int:
        """Index of the one line of ``node``'s log that holds every needle."""
        hits = [i for i, text in enumerate(self.logs[node]) if all(n in text for n in needles)]
        assert len(hits) == 1, f"{node}: {len(hits)} lines hold {needles}"
        return hits[0]

    def sub(self, node: str, needle: str, old: str, new: str) -> None:
        """Replace ``old`` by ``new`` in every line of ``node``'s log that holds ``needle``."""
        count = 0
        for i, text in enumerate(self.logs[node]):
            if needle in text and old in text:
                self.logs[node][i] = text.replace(old, new)
                count += 1
        assert count, f"{node}: no line holds {needle!r} and {old!r}"

    def drop(self, node: str, *needles: str) -> None:
        """Remove every line of ``node``'s log that holds every needle."""
        kept = [text for text in self.logs[node] if not all(n in text for n in needles)]
        assert len(kept) < len(self.logs[node]), f"{node}: no line holds {needles}"
        self.logs[node] = kept


def consistent_run(stop: bool = True) -> FakeRun:
    """Two clients race for the lock and both abort, then each commits once."""
    r = FakeRun()
    r.begin("client1", ABORTED_1, VALUE[ABORTED_1])
    r.begin("client2", ABORTED_2, VALUE[ABORTED_2])
    for s in ("server1", "server2"):
        r.vote(s, "client1", ABORTED_1, VALUE[ABORTED_1])
        r.vote(s, "client2", ABORTED_2, VALUE[ABORTED_2], holder=ABORTED_1)
    r.vote("server3", "client2", ABORTED_2, VALUE[ABORTED_2])
    r.vote("server3", "client1", ABORTED_1, VALUE[ABORTED_1], holder=ABORTED_2)
    reason_1 = f"{ADDRESS['server3']} voted NOK: locked by {ABORTED_2}"
    reason_2 = f"{ADDRESS['server1']} voted NOK: locked by {ABORTED_1}"
    r.decide("client1", ABORTED_1, "aborted", reason_1)
    r.decide("client2", ABORTED_2, "aborted", reason_2)
    for s in ("server1", "server2"):
        r.finish(s, "client1", ABORTED_1, VALUE[ABORTED_1], "aborted")
    r.finish("server3", "client2", ABORTED_2, VALUE[ABORTED_2], "aborted")
    r.outcome("client1", ABORTED_1, VALUE[ABORTED_1], 1, "aborted", "no-vote", reason_1, NokCode.LOCKED)
    r.outcome("client2", ABORTED_2, VALUE[ABORTED_2], 1, "aborted", "no-vote", reason_2, NokCode.LOCKED)
    r.commit_everywhere("client1", COMMITTED_1, VALUE[COMMITTED_1], 2)
    r.commit_everywhere("client2", COMMITTED_2, VALUE[COMMITTED_2], 2)
    if stop:
        r.stop()
    return r


# ====================================================================== assertions


def where(folder: Path, node: str, *needles: str) -> str:
    """``node.log:N`` for the one line of the written log that holds every needle."""
    lines = (folder / f"{node}.log").read_text().splitlines()
    hits = [n for n, text in enumerate(lines, 1) if all(x in text for x in needles)]
    assert len(hits) == 1, f"{node}.log: {len(hits)} lines hold {needles}"
    return f"{node}.log:{hits[0]}"


def cites(v: Violation, place: str) -> bool:
    """Does the violation's evidence quote the line at ``place`` (file:line)?"""
    return any(e.startswith(f"{place}: ") for e in v.evidence)


def show(report: CheckReport) -> str:
    return "\n".join(f"  {v.kind} {v.txid}: {v.message} {list(v.evidence)}" for v in report.violations) or "  none"


def kinds(report: CheckReport) -> set[str]:
    return {v.kind for v in report.violations}


def found(report: CheckReport, kind: str, txid: str | None) -> list[Violation]:
    """The violations of ``kind`` about ``txid``; fails, listing all, if there are none."""
    hits = [v for v in report.violations if v.kind == kind and v.txid == txid]
    assert hits, f"no {kind} violation for {txid}; the checker reported:\n{show(report)}"
    return hits


def check(r: FakeRun, tmp_path: Path, final: dict[str, Any] | None = None) -> tuple[Path, CheckReport]:
    folder = r.write(tmp_path / "run", final)
    return folder, check_run(folder)


def without(final: dict[str, Any], server: str, txid: str) -> None:
    """Take ``txid``'s commit out of ``server``'s storage and STATUS, as if it had never been applied."""
    entry = final[server]
    entry["storage"]["committed"] = [item for item in entry["storage"]["committed"] if item[0] != txid]
    committed = entry["storage"]["committed"]
    entry["status"].update(
        storage_server=committed[-1][2] if committed else 0,
        version=len(committed),
        committed=len(committed),
    )


def swap_commit_order_at_server3(r: FakeRun) -> dict[str, Any]:
    """server3 applies COMMITTED_2 at version 1 and COMMITTED_1 at version 2; returns the final states."""
    r.sub("server3", f"txid={COMMITTED_1}", "version=1", "version=2")
    r.sub("server3", f"txid={COMMITTED_2}", "version=2", "version=1")
    final = r.final_states()
    final["server3"]["storage"]["committed"] = [
        [COMMITTED_2, 1, VALUE[COMMITTED_2]],
        [COMMITTED_1, 2, VALUE[COMMITTED_1]],
    ]
    final["server3"]["status"]["storage_server"] = VALUE[COMMITTED_1]
    return final


def skip_version_2(r: FakeRun) -> dict[str, Any]:
    """Every participant commits COMMITTED_2 at version 3; returns the final states."""
    final = r.final_states()
    for s in SERVERS:
        r.sub(s, f"durable txid={COMMITTED_2} state=committed", "version=2", "version=3")
        final[s]["storage"]["committed"][1][1] = 3
        final[s]["status"]["version"] = 3  # a participant's version is its highest commit's
    return final


def leave_stuck(r: FakeRun) -> None:
    """client1's third transaction: every participant votes yes, then the client vanishes."""
    r.begin("client1", THIRD, 1_000_003)
    for s in SERVERS:
        r.vote(s, "client1", THIRD, 1_000_003)


# ====================================================================== consistent folders


def test_hand_made_consistent_run_is_not_flagged(tmp_path: Path) -> None:
    r = consistent_run()
    _, report = check(r, tmp_path)
    assert report.consistent, show(report)
    # and the checker did read it: every line, every commit, abort and vote
    assert report.lines == sum(len(lines) for lines in r.logs.values())
    stats = {
        s.node: (s.storage_server, s.version, s.commits, s.aborts, s.yes_votes, s.no_votes) for s in report.replicas
    }
    assert stats == {
        "server1": (VALUE[COMMITTED_2], 2, 2, 2, 3, 1),
        "server2": (VALUE[COMMITTED_2], 2, 2, 2, 3, 1),
        "server3": (VALUE[COMMITTED_2], 2, 2, 2, 3, 1),
    }
    assert {(c.name, c.attempted, c.committed, c.aborted_total) for c in report.clients} == {
        ("client1", 2, 1, 1),
        ("client2", 2, 1, 1),
    }


@pytest.mark.parametrize(
    ("txid", "told"),
    [(COMMITTED_2, "committed"), (ABORTED_2, "aborted")],
    ids=["committed-everywhere", "committed-nowhere"],
)
def test_unknown_outcome_is_not_flagged_when_the_transaction_is_atomic(tmp_path: Path, txid: str, told: str) -> None:
    r = consistent_run()
    r.sub("client2", f"outcome txid={txid}", f"result={told}", "result=unknown")
    _, report = check(r, tmp_path)
    assert report.consistent, show(report)
    assert {c.name: c.unknown for c in report.clients} == {"client1": 0, "client2": 1}


def test_restarted_participant_with_restored_records_is_not_flagged(tmp_path: Path) -> None:
    r = consistent_run(stop=False)
    r.start("server2")  # killed and restarted: it restores every record it made durable
    r.commit_everywhere("client1", THIRD, 1_000_003, 3)
    r.stop()
    _, report = check(r, tmp_path)
    assert report.consistent, show(report)
    assert {s.node: s.restarts for s in report.replicas} == {"server1": 0, "server2": 1, "server3": 0}
    assert {s.node: s.version for s in report.replicas} == {s: 3 for s in SERVERS}


def test_a_durable_state_of_no_path_before_a_restart_is_flagged_not_a_crash(tmp_path: Path) -> None:
    # a hand-edited store line: a state the protocol has no path from
    r = consistent_run(stop=False)
    line = next(
        i for i, t in enumerate(r.logs["server2"]) if all(n in t for n in (" durable ", COMMITTED_2, "committed"))
    )
    r.logs["server2"][line] = r.logs["server2"][line].replace("state=committed", "state=weird")
    r.start("server2")
    r.stop()
    _, report = check(r, tmp_path)
    assert not report.consistent and found(report, "stability", COMMITTED_2), show(report)


def test_restart_may_find_a_record_further_on_than_its_last_durable_line(tmp_path: Path) -> None:
    # SIGKILL fell between the fsync of COMMITTED_2's commit and its "durable" line
    r = consistent_run(stop=False)
    r.drop("server2", "durable", f"txid={COMMITTED_2}", "state=committed")
    r.drop("server2", "send", "msg=OUTCOME", f"txid={COMMITTED_2}")  # the kill came before the reply too
    r.start("server2")
    r.stop()
    _, report = check(r, tmp_path)
    assert report.consistent, show(report)


def _real_run(tmp_path: Path, clients: int, transactions: int) -> Path:
    folder = tmp_path / "real"
    run(RunConfig(clients=clients, transactions=transactions, base_port=0, out=folder, seed=20261127))
    return folder


def test_real_run_is_consistent_and_rechecking_it_gives_the_same_report(tmp_path: Path) -> None:
    folder = _real_run(tmp_path, clients=3, transactions=3)
    first = check_run(folder)
    assert first.consistent, show(first)
    second = check_run(folder)
    assert (second.violations, second.clients, second.replicas, second.lines, second.run) == (
        first.violations,
        first.clients,
        first.replicas,
        first.lines,
        first.run,
    )
    assert sum(c.attempted for c in first.clients) == 9
    # every commit a client was told of is the replicas' version count
    assert {s.version for s in first.replicas} == {sum(c.committed for c in first.clients)}


# ====================================================================== one violation each


def test_agreement_committed_at_one_participant_and_aborted_at_another(tmp_path: Path) -> None:
    r = consistent_run()
    i = r.find("server3", "durable", f"txid={COMMITTED_1}", "state=committed")
    r.logs["server3"][i] = (
        r.logs["server3"][i]
        .replace("state=committed", "state=aborted")
        .replace("version=1", "version=0")
        .replace("COMMIT received", "ABORT received")
    )
    r.sub("server3", f"msg=OUTCOME txid={COMMITTED_1}", "state=committed", "state=aborted")  # and says so
    folder, report = check(r, tmp_path)
    [v] = found(report, "agreement", COMMITTED_1)
    assert cites(v, where(folder, "server1", "durable", f"txid={COMMITTED_1}", "state=committed"))
    assert cites(v, where(folder, "server3", "durable", f"txid={COMMITTED_1}", "state=aborted"))
    # server3's storage still holds the commit its log denies
    assert kinds(report) == {"agreement", "log-storage"}, show(report)


def test_validity_commit_without_a_listed_participants_yes_vote(tmp_path: Path) -> None:
    # The coordinator committed with two votes of three: server2 never saw COMMITTED_2.
    r = consistent_run()
    r.drop("server2", f"txid={COMMITTED_2}")
    final = r.final_states()
    without(final, "server2", COMMITTED_2)
    folder, report = check(r, tmp_path, final)
    violations = found(report, "validity", COMMITTED_2)
    assert len(violations) == 2  # at server1 and at server3, each naming server2
    assert all("server2 never voted yes" in v.message for v in violations)
    for server, v in zip(("server1", "server3"), violations, strict=True):
        assert cites(v, where(folder, server, "durable", f"txid={COMMITTED_2}", "state=committed"))
    assert kinds(report) == {"validity", "replicas", "client-truth"}, show(report)


def test_validity_commit_with_a_value_its_client_did_not_propose(tmp_path: Path) -> None:
    # The client began COMMITTED_1 with 1000002 but sent PREPARE with 1000099.
    r = consistent_run()
    for s in SERVERS:
        r.sub(s, f"txid={COMMITTED_1}", f"value={VALUE[COMMITTED_1]}", "value=1000099")
    final = r.final_states()
    for s in SERVERS:
        final[s]["storage"]["committed"][0][2] = 1000099
    folder, report = check(r, tmp_path, final)
    violations = found(report, "validity", COMMITTED_1)
    assert len(violations) == 3
    begin = where(folder, "client1", "begin", f"txid={COMMITTED_1}")
    for server, v in zip(SERVERS, violations, strict=True):
        assert "1000099" in v.message
        assert cites(v, begin)
        assert cites(v, where(folder, server, "durable", f"txid={COMMITTED_1}", "state=committed"))
    assert kinds(report) == {"validity"}, show(report)


def test_stability_committed_then_aborted_at_one_participant(tmp_path: Path) -> None:
    r = consistent_run()
    i = r.find("server2", "durable", f"txid={COMMITTED_1}", "state=committed")
    r.logs["server2"].insert(
        i + 1, r.durable_line("server2", COMMITTED_1, "aborted", VALUE[COMMITTED_1], 0, "ABORT received")
    )
    folder, report = check(r, tmp_path)
    [v] = found(report, "stability", COMMITTED_1)
    assert "server2" in v.message and "committed to aborted" in v.message
    assert cites(v, where(folder, "server2", "durable", f"txid={COMMITTED_1}", "state=committed"))
    assert cites(v, where(folder, "server2", "durable", f"txid={COMMITTED_1}", "state=aborted"))
    # its last word is abort: that disagrees with the others and with its own storage
    assert kinds(report) == {"stability", "agreement", "log-storage"}, show(report)


def test_stability_committed_without_ever_being_prepared(tmp_path: Path) -> None:
    r = consistent_run()
    r.drop("server3", "durable", f"txid={COMMITTED_2}", "state=prepared")
    folder, report = check(r, tmp_path)
    [v] = found(report, "stability", COMMITTED_2)
    assert "server3" in v.message and "no record to committed" in v.message
    assert cites(v, where(folder, "server3", "durable", f"txid={COMMITTED_2}", "state=committed"))
    # and so server3's yes vote is missing behind every commit of it, and it was sent undurable
    assert len(found(report, "validity", COMMITTED_2)) == 3
    assert found(report, "durability", COMMITTED_2)
    assert kinds(report) == {"stability", "validity", "durability"}, show(report)


def test_replicas_with_different_committed_sequences(tmp_path: Path) -> None:
    r = consistent_run()
    final = swap_commit_order_at_server3(r)
    _, report = check(r, tmp_path, final)
    [v] = found(report, "replicas", COMMITTED_2)  # server3's commit at the first version where they differ
    assert "server3 and server1 differ at version 1" in v.message
    assert kinds(report) == {"replicas"}, show(report)


def test_replicas_with_a_different_final_value(tmp_path: Path) -> None:
    # server2 wrote another value than it promised, in its log, storage and memory alike
    r = consistent_run()
    r.sub("server2", f"durable txid={COMMITTED_2}", f"value={VALUE[COMMITTED_2]}", "value=2000099")
    final = r.final_states()
    final["server2"]["storage"]["committed"][1][2] = 2000099
    final["server2"]["status"]["storage_server"] = 2000099
    folder, report = check(r, tmp_path, final)
    [v] = found(report, "replicas", COMMITTED_2)
    assert "server2 and server1 differ at version 2" in v.message
    [bad_value] = found(report, "validity", COMMITTED_2)
    assert cites(bad_value, where(folder, "server2", "durable", f"txid={COMMITTED_2}", "state=committed"))
    assert kinds(report) == {"replicas", "validity"}, show(report)


def test_replicas_with_a_gap_in_the_versions(tmp_path: Path) -> None:
    r = consistent_run()
    final = skip_version_2(r)
    _, report = check(r, tmp_path, final)
    gaps = sorted(v.message for v in report.violations if v.kind == "replicas" and v.txid == COMMITTED_2)
    assert gaps == [
        f"{s}'s commit of {COMMITTED_2} has version 3, not 2: versions must run 1..2 without gaps" for s in SERVERS
    ], show(report)
    assert kinds(report) == {"replicas"}, show(report)


def test_replicas_status_disagreeing_with_storage(tmp_path: Path) -> None:
    # server2 answered STATUS as if COMMITTED_2 had never been applied
    r = consistent_run()
    final = r.final_states()
    final["server2"]["status"].update(storage_server=VALUE[COMMITTED_1], version=1)
    _, report = check(r, tmp_path, final)
    [v] = found(report, "replicas", COMMITTED_2)
    assert f"server2 answered storage_server={VALUE[COMMITTED_1]} version=1" in v.message
    assert kinds(report) == {"replicas"}, show(report)


def test_client_told_committed_but_aborted_everywhere(tmp_path: Path) -> None:
    r = consistent_run()
    r.sub("client2", f"outcome txid={ABORTED_2}", "result=aborted", "result=committed")
    folder, report = check(r, tmp_path)
    [v] = found(report, "client-truth", ABORTED_2)
    assert "not committed at server1, server2, server3" in v.message
    assert cites(v, where(folder, "client2", "outcome", f"txid={ABORTED_2}"))
    assert kinds(report) == {"client-truth"}, show(report)


def test_client_told_committed_but_still_prepared_at_one_participant(tmp_path: Path) -> None:
    # server3 never received COMMIT for COMMITTED_2 and never resolved it
    r = consistent_run()
    for event in ("recv", "durable", "send"):
        r.drop("server3", event, f"txid={COMMITTED_2}", "COMMIT" if event == "recv" else "committed")
    r.records["server3"][COMMITTED_2] = ("prepared", VALUE[COMMITTED_2], 0)
    folder, report = check(r, tmp_path)
    [v] = found(report, "client-truth", COMMITTED_2)
    assert "not committed at server3" in v.message
    assert cites(v, where(folder, "client2", "outcome", f"txid={COMMITTED_2}"))
    assert cites(v, where(folder, "server3", "durable", f"txid={COMMITTED_2}", "state=prepared"))
    assert found(report, "undecided", COMMITTED_2) and found(report, "lock-held", COMMITTED_2)
    assert kinds(report) == {"client-truth", "replicas", "undecided", "lock-held"}, show(report)


def test_client_told_aborted_but_committed(tmp_path: Path) -> None:
    r = consistent_run()
    r.sub("client1", f"outcome txid={COMMITTED_1}", "result=committed", "result=aborted")
    folder, report = check(r, tmp_path)
    [v] = found(report, "client-truth", COMMITTED_1)
    assert "committed at server1, server2, server3" in v.message
    assert cites(v, where(folder, "client1", "outcome", f"txid={COMMITTED_1}"))
    assert kinds(report) == {"client-truth"}, show(report)


def test_unknown_outcome_committed_at_only_some_participants(tmp_path: Path) -> None:
    # client2 timed out on COMMITTED_2; server3 then aborted it while the others committed
    r = consistent_run()
    r.sub("client2", f"outcome txid={COMMITTED_2}", "result=committed", "result=unknown")
    i = r.find("server3", "durable", f"txid={COMMITTED_2}", "state=committed")
    r.logs["server3"][i] = r.durable_line("server3", COMMITTED_2, "aborted", VALUE[COMMITTED_2], 0, "peer aborted")
    r.records["server3"][COMMITTED_2] = ("aborted", VALUE[COMMITTED_2], 0)
    r.sub("server3", f"msg=OUTCOME txid={COMMITTED_2}", "state=committed", "state=aborted")
    folder, report = check(r, tmp_path)
    [v] = found(report, "client-truth", COMMITTED_2)
    assert "committed at server1, server2 only" in v.message
    assert cites(v, where(folder, "client2", "outcome", f"txid={COMMITTED_2}"))
    assert found(report, "agreement", COMMITTED_2)
    assert kinds(report) == {"client-truth", "agreement", "replicas"}, show(report)


def test_transaction_left_prepared_at_the_end_is_undecided_and_holds_the_lock(tmp_path: Path) -> None:
    r = consistent_run(stop=False)
    leave_stuck(r)
    r.outcome("client1", THIRD, 1_000_003, 3, "unknown", "no-answer", "no answer from everyone")
    r.stop()
    _, report = check(r, tmp_path)
    assert len(found(report, "undecided", THIRD)) == 3
    assert sorted(v.message.split()[-4] for v in found(report, "undecided", THIRD)) == list(SERVERS)
    assert len(found(report, "lock-held", THIRD)) == 3
    assert kinds(report) == {"undecided", "lock-held"}, show(report)


def test_a_run_stopped_by_a_signal_is_not_held_to_termination_and_says_so(tmp_path: Path) -> None:
    r = consistent_run(stop=False)
    leave_stuck(r)
    folder = r.write(tmp_path / "run")
    run_json = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**run_json, "interrupted": "SIGTERM"}))
    report = check_run(folder)
    assert report.interrupted == "SIGTERM" and report.consistent, show(report)
    # what it could not be held to is said, not hidden: the three undecided and three locks
    assert sum("termination" in note and THIRD in note for note in report.unchecked) == 6


def test_an_interrupted_run_may_stop_between_a_commit_at_some_replicas_and_the_others(tmp_path: Path) -> None:
    r = consistent_run(stop=False)
    leave_stuck(r)  # every participant voted yes: committed by the rule, though not yet everywhere
    r.decide("client1", THIRD, "committed", "every participant voted yes")
    for server in ("server1", "server2"):
        r.finish(server, "client1", THIRD, 1_000_003, "committed")
    r.outcome("client1", THIRD, 1_000_003, 3, "committed", "all-yes", "every participant voted yes")
    folder = r.write(tmp_path / "run")
    # the same folder from a run that was not interrupted: server3 lags, and that is flagged
    assert {"replicas", "undecided"} <= kinds(check_run(folder))
    run_json = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**run_json, "interrupted": "SIGINT"}))
    report = check_run(folder)
    assert report.consistent, show(report)
    assert any("replicas not yet equal" in note and THIRD in note for note in report.unchecked)
    # agreement is never excused: server3 aborting what the others committed is a violation
    i = len(r.logs["server3"])
    r.finish("server3", "client1", THIRD, 1_000_003, "aborted")
    assert len(r.logs["server3"]) > i
    folder = r.write(tmp_path / "run2")
    (folder / "run.json").write_text(json.dumps({**run_json, "interrupted": "SIGINT"}))
    assert "agreement" in kinds(check_run(folder))


def test_a_folder_without_final_states_is_checked_from_its_logs(tmp_path: Path) -> None:
    r = consistent_run()
    i = r.find("server3", "durable", f"txid={COMMITTED_1}", "state=committed")
    r.logs["server3"][i] = (
        r.logs["server3"][i].replace("state=committed", "state=aborted").replace("version=1", "version=0")
    )
    folder = r.write(tmp_path / "run")
    (folder / "final_states.json").unlink()  # the runner was killed before it read the storage
    report = check_run(folder)
    assert report.interrupted == "stopped before its final states were read"
    assert [v.kind for v in report.violations] == ["agreement"], show(report)  # the logs still prove it
    assert any("storage not read" in note for note in report.unchecked)


def test_participant_that_did_not_answer_status_at_the_end_is_flagged(tmp_path: Path) -> None:
    r = consistent_run()
    final = r.final_states()
    final["server2"]["status"] = None
    final["server2"]["status_error"] = "no answer in 2.0s"
    _, report = check(r, tmp_path, final)
    [v] = found(report, "lock-held", None)
    assert "server2 did not answer STATUS at the end: no answer in 2.0s" in v.message
    assert kinds(report) == {"lock-held"}, show(report)


def test_log_says_committed_but_storage_lost_it(tmp_path: Path) -> None:
    r = consistent_run()
    final = r.final_states()
    final["server2"]["storage"]["committed"].pop()  # COMMITTED_2; STATUS, from memory, still has it
    folder, report = check(r, tmp_path, final)
    [v] = found(report, "log-storage", COMMITTED_2)
    assert "server2's log says" in v.message
    assert cites(v, where(folder, "server2", "durable", f"txid={COMMITTED_2}", "state=committed"))
    assert kinds(report) == {"log-storage", "replicas", "client-truth"}, show(report)


def test_storage_holds_a_commit_the_log_never_mentions(tmp_path: Path) -> None:
    r = consistent_run()
    r.drop("server2", "durable", f"txid={COMMITTED_2}", "state=committed")
    r.drop("server2", "send", "msg=OUTCOME", f"txid={COMMITTED_2}")  # nor did it answer
    _, report = check(r, tmp_path)
    [v] = found(report, "log-storage", COMMITTED_2)
    assert "server2's storage holds" in v.message and "its log never says so" in v.message
    assert kinds(report) == {"log-storage"}, show(report)


def test_log_and_storage_disagree_on_a_commits_value(tmp_path: Path) -> None:
    r = consistent_run()
    final = r.final_states()
    final["server2"]["storage"]["committed"][0][2] = 1000099  # COMMITTED_1
    folder, report = check(r, tmp_path, final)
    [v] = found(report, "log-storage", COMMITTED_1)
    assert "storage says version 1 value 1000099" in v.message
    assert cites(v, where(folder, "server2", "durable", f"txid={COMMITTED_1}", "state=committed"))
    assert kinds(report) == {"log-storage", "replicas"}, show(report)


def test_participant_restarted_without_a_record_it_made_durable_lost_it(tmp_path: Path) -> None:
    r = consistent_run(stop=False)
    records = dict(r.records["server2"])
    del records[ABORTED_1]
    r.start("server2", records)
    r.stop()
    folder, report = check(r, tmp_path)
    [v] = found(report, "lost", ABORTED_1)
    assert "server2 restarted without it" in v.message
    assert cites(v, where(folder, "server2", "durable", f"txid={ABORTED_1}", "ABORT received"))
    assert cites(v, where(folder, "server2", "listening", "pid=4245"))  # the restart
    assert kinds(report) == {"lost"}, show(report)


def test_participant_restarted_with_a_commit_gone_back_to_prepared_lost_it(tmp_path: Path) -> None:
    r = consistent_run(stop=False)
    records = dict(r.records["server2"])
    records[COMMITTED_2] = ("prepared", VALUE[COMMITTED_2], 0)
    r.start("server2", records)
    r.stop()
    folder, report = check(r, tmp_path)
    [v] = found(report, "lost", COMMITTED_2)
    assert "server2 restarted as prepared" in v.message
    assert cites(v, where(folder, "server2", "durable", f"txid={COMMITTED_2}", "state=committed"))
    [back] = found(report, "stability", COMMITTED_2)
    assert cites(back, where(folder, "server2", "restored", f"txid={COMMITTED_2}"))
    assert {"lost", "stability", "undecided", "lock-held", "client-truth"} <= kinds(report), show(report)


def test_abandoned_transaction_committed_at_only_some_participants(tmp_path: Path) -> None:
    # client2 died after beginning COMMITTED_2 (no outcome line); server3 then aborted it
    r = consistent_run()
    r.drop("client2", "outcome", f"txid={COMMITTED_2}")
    i = r.find("server3", "durable", f"txid={COMMITTED_2}", "state=committed")
    r.logs["server3"][i] = r.durable_line("server3", COMMITTED_2, "aborted", VALUE[COMMITTED_2], 0, "peer aborted")
    r.records["server3"][COMMITTED_2] = ("aborted", VALUE[COMMITTED_2], 0)
    r.sub("server3", f"msg=OUTCOME txid={COMMITTED_2}", "state=committed", "state=aborted")
    folder, report = check(r, tmp_path)
    assert report.abandoned == 1
    [v] = found(report, "client-truth", COMMITTED_2)
    assert "committed at server1, server2 only" in v.message
    assert cites(v, where(folder, "client2", "begin", f"txid={COMMITTED_2}"))
    assert kinds(report) == {"client-truth", "agreement", "replicas"}, show(report)


def test_txid_reused_by_another_client(tmp_path: Path) -> None:
    # client1's third transaction takes client2's (aborted) txid; every participant refuses it
    r = consistent_run(stop=False)
    r.begin("client1", ABORTED_2, 1_000_003)
    r.outcome(
        "client1",
        ABORTED_2,
        1_000_003,
        3,
        "aborted",
        "no-vote",
        "127.0.0.1:8886 voted NOK: already aborted",
        NokCode.ABORTED,
    )
    r.stop()
    folder, report = check(r, tmp_path)
    [v] = found(report, "txid-reused", ABORTED_2)
    assert cites(v, where(folder, "client2", "begin", f"txid={ABORTED_2}"))
    assert cites(v, where(folder, "client1", "begin", f"txid={ABORTED_2}"))
    assert kinds(report) == {"txid-reused"}, show(report)


# ------------------------------------------------------------ bad logs: violations, never a crash

_C2_COMMIT = ("durable", f"txid={COMMITTED_2}", "state=committed")
_BAD_LINES: list[tuple[str, str, tuple[str, ...], Callable[[str], str], str | None, set[str]]] = [
    # (id, node, needles of the line to break, how, txid the violation names, every kind reported).
    # (The OUTCOME sent after a broken commit line stays proven: the yes vote was durable
    # before it, and that is all a commit's acknowledgement needs: docs/protocol.md.)
    ("garbage", "server2", _C2_COMMIT, lambda _: "garbage", None, {"bad-log-line", "log-storage"}),
    (
        "durable-without-value",
        "server2",
        _C2_COMMIT,
        lambda t: t.replace(f" value={VALUE[COMMITTED_2]}", ""),
        COMMITTED_2,
        {"bad-log-line", "log-storage"},
    ),
    (
        "durable-with-value-not-a-number",
        "server2",
        _C2_COMMIT,
        lambda t: t.replace(f"value={VALUE[COMMITTED_2]}", "value=lots"),
        COMMITTED_2,
        {"bad-log-line", "log-storage"},
    ),
    (
        "durable-with-unterminated-quote",
        "server2",
        _C2_COMMIT,
        lambda t: t.removesuffix('"'),
        None,
        {"bad-log-line", "log-storage"},
    ),
    (
        "durable-with-a-bare-word",
        "server2",
        _C2_COMMIT,
        lambda t: t.replace("state=committed", "committed"),
        None,
        {"bad-log-line", "log-storage"},
    ),
    (
        "durable-written-by-another-node",
        "server2",
        _C2_COMMIT,
        lambda t: t.replace(" server2 durable ", " server1 durable "),
        None,
        {"bad-log-line", "log-storage"},
    ),
    (
        "begin-without-value",
        "client1",
        ("begin", f"txid={COMMITTED_1}"),
        lambda t: t.replace(f" value={VALUE[COMMITTED_1]}", ""),
        COMMITTED_1,
        {"bad-log-line"},
    ),
    (
        "outcome-without-result",
        "client1",
        ("outcome", f"txid={COMMITTED_1}"),
        lambda t: t.replace(" result=committed", ""),
        COMMITTED_1,
        {"bad-log-line"},
    ),
    (
        "outcome-with-unknown-result",
        "client1",
        ("outcome", f"txid={COMMITTED_1}"),
        lambda t: t.replace("result=committed", "result=perhaps"),
        COMMITTED_1,
        {"bad-log-line"},
    ),
]


@pytest.mark.parametrize(
    ("node", "needles", "breaking", "txid", "expected"), [c[1:] for c in _BAD_LINES], ids=[c[0] for c in _BAD_LINES]
)
def test_bad_log_line_is_a_violation_not_a_crash(
    tmp_path: Path,
    node: str,
    needles: tuple[str, ...],
    breaking: Callable[[str], str],
    txid: str | None,
    expected: set[str],
) -> None:
    r = consistent_run()
    i = r.find(node, *needles)
    r.logs[node][i] = breaking(r.logs[node][i])
    folder, report = check(r, tmp_path)
    [v] = found(report, "bad-log-line", txid)
    place = f"{node}.log:{i + 1}"
    assert place in v.message
    assert cites(v, place) or v.evidence == ("garbage",)  # a line too short to be an event is quoted bare
    assert (folder / f"{node}.log").read_text().splitlines()[i] == r.logs[node][i]
    assert kinds(report) == expected, show(report)


def test_malformed_line_is_flagged_ahead_of_the_rest_of_its_log_and_still_read(tmp_path: Path) -> None:
    r = consistent_run()
    i = r.find("server2", *_C2_COMMIT)
    r.logs["server2"][i] = "x" + r.logs["server2"][i]  # a torn timestamp: malformed, yet still server2's commit
    j = r.find("server2", "listening")
    r.logs["server2"][j] = r.logs["server2"][j].replace(" server2 ", " server1 ")  # its first line
    assert j < i
    _, report = check(r, tmp_path)
    assert [v.message for v in report.violations] == [
        f"server2.log:{i + 1} is not an event line",
        f"server2.log:{j + 1} is written by 'server1', not server2",
    ], show(report)


def test_lines_of_other_shapes_than_the_nodes_write_are_read_all_the_same(tmp_path: Path) -> None:
    # The lines of the shapes the nodes write are parsed by one regex; a line of
    # another shape (an escaped quote, a field more) is parsed field by field.
    r = consistent_run()
    why = 'why="COMMIT received"'
    r.sub("server1", f"durable txid={COMMITTED_1} state=committed", why, r'why="peer \"server2\" said committed"')
    r.sub("server2", f"durable txid={COMMITTED_2} state=committed", why, 'why="peer said committed" note=x')
    r.sub("server1", f"msg=VOTE txid={ABORTED_2}", 'reason="', 'reason="lock=held, ')
    for s in SERVERS:
        r.sub(s, f"msg=VOTE txid={COMMITTED_2}", "vote=ok", "vote=ok note=x")
        r.sub(s, f"msg=OUTCOME txid={COMMITTED_2}", "state=committed", "state=committed note=x")
    r.sub("client2", f"begin txid={COMMITTED_2}", " participants=", " note=x participants=")
    r.sub("client2", f"outcome txid={COMMITTED_2}", " cause=", ' note="a b" cause=')
    _, report = check(r, tmp_path)
    assert report.consistent, show(report)
    assert report.resolved_by_peers == 2  # both whys read, unquoted, as "peer ..."
    _, unchanged = check(consistent_run(), tmp_path / "unchanged")
    assert (report.replicas, report.clients) == (unchanged.replicas, unchanged.clients)


@pytest.mark.parametrize("node", ["server2", "client1"])
def test_missing_log_file_is_a_violation_not_a_crash(tmp_path: Path, node: str) -> None:
    r = consistent_run()
    folder = r.write(tmp_path / "run")
    (folder / f"{node}.log").unlink()
    report = check_run(folder)
    [v] = found(report, "missing-log", None)
    assert f"{node}.log is missing" in v.message


def _no_run_json(folder: Path) -> None:
    (folder / "run.json").unlink()


def _run_json_not_json(folder: Path) -> None:
    (folder / "run.json").write_text('{"participants": [')


def _run_json_without_participants(folder: Path) -> None:
    (folder / "run.json").write_text(json.dumps({"clients": list(CLIENTS)}))


def _run_json_a_list(folder: Path) -> None:
    (folder / "run.json").write_text("[]")


def _final_states_a_list(folder: Path) -> None:
    (folder / "final_states.json").write_text("[]")


@pytest.mark.parametrize(
    "breaking",
    [
        _no_run_json,
        _run_json_not_json,
        _run_json_without_participants,
        _run_json_a_list,
        _final_states_a_list,
    ],
)
def test_folder_that_is_not_a_run_folder_raises_check_error(tmp_path: Path, breaking: Callable[[Path], None]) -> None:
    folder = consistent_run().write(tmp_path / "run")
    breaking(folder)
    with pytest.raises(CheckError):
        check_run(folder)


def test_empty_or_missing_folder_raises_check_error(tmp_path: Path) -> None:
    with pytest.raises(CheckError, match=r"run\.json is missing"):
        check_run(tmp_path)
    with pytest.raises(CheckError, match=r"run\.json is missing"):
        check_run(tmp_path / "nowhere")


def _set_storage(server: str, key: str, value: object) -> Callable[[dict[str, Any]], None]:
    def breaking(final: dict[str, Any]) -> None:
        final[server]["storage"][key] = value

    return breaking


@pytest.mark.parametrize(
    "breaking",
    [
        pytest.param(_set_storage("server2", "committed", [["x", 1]]), id="committed-item-too-short"),
        pytest.param(_set_storage("server2", "committed", "abc"), id="committed-a-string"),
        pytest.param(_set_storage("server2", "committed", [["x", "one", "two"]]), id="committed-item-not-numbers"),
        pytest.param(
            _set_storage("server2", "committed", None),
            id="committed-null",
        ),
        pytest.param(
            _set_storage("server2", "committed", [1, 2]),
            id="committed-items-not-lists",
        ),
        pytest.param(
            _set_storage("server2", "prepared", None),
            id="prepared-null",
        ),
    ],
)
def test_malformed_storage_in_final_states_is_a_violation_not_a_crash(
    tmp_path: Path, breaking: Callable[[dict[str, Any]], None]
) -> None:
    r = consistent_run()
    final = r.final_states()
    breaking(final)
    _, report = check(r, tmp_path, final)
    assert found(report, "missing-final-state", None)


# ====================================================================== checker blind spots


def test_garbage_line_of_several_words_is_a_bad_log_line(tmp_path: Path) -> None:
    r = consistent_run()
    i = r.find("server2", *_C2_COMMIT)
    r.logs["server2"].insert(i, "Traceback (most recent call last):")
    _, report = check(r, tmp_path)
    assert found(report, "bad-log-line", None)


def test_yes_vote_sent_before_it_was_durable_is_flagged(tmp_path: Path) -> None:
    r = FakeRun()
    r.begin("client1", COMMITTED_1, VALUE[COMMITTED_1])
    for s in SERVERS:
        r.vote(s, "client1", COMMITTED_1, VALUE[COMMITTED_1], persist_first=s != "server2")
    r.decide("client1", COMMITTED_1, "committed", "every participant voted yes")
    for s in SERVERS:
        r.finish(s, "client1", COMMITTED_1, VALUE[COMMITTED_1], "committed")
    r.outcome("client1", COMMITTED_1, VALUE[COMMITTED_1], 1, "committed", "all-yes")
    r.stop()
    folder, report = check(r, tmp_path)
    assert any(cites(v, where(folder, "server2", "send", "msg=VOTE")) for v in report.violations), show(report)


def test_commit_before_every_participant_voted_yes_is_flagged(tmp_path: Path) -> None:
    r = FakeRun()
    r.begin("client1", COMMITTED_1, VALUE[COMMITTED_1])
    r.vote("server1", "client1", COMMITTED_1, VALUE[COMMITTED_1])
    r.decide("client1", COMMITTED_1, "committed", "every participant voted yes")  # on one vote of three
    r.finish("server1", "client1", COMMITTED_1, VALUE[COMMITTED_1], "committed")
    for s in ("server2", "server3"):
        r.vote(s, "client1", COMMITTED_1, VALUE[COMMITTED_1])
        r.finish(s, "client1", COMMITTED_1, VALUE[COMMITTED_1], "committed")
    r.outcome("client1", COMMITTED_1, VALUE[COMMITTED_1], 1, "committed", "all-yes")
    r.stop()
    _, report = check(r, tmp_path)
    assert found(report, "validity", COMMITTED_1)


def test_participant_prepared_for_two_transactions_at_once_is_flagged(tmp_path: Path) -> None:
    r = FakeRun()
    r.begin("client1", COMMITTED_1, VALUE[COMMITTED_1])
    r.begin("client2", COMMITTED_2, VALUE[COMMITTED_2])
    for s in SERVERS:
        r.vote(s, "client1", COMMITTED_1, VALUE[COMMITTED_1])
    for s in SERVERS:
        r.vote(s, "client2", COMMITTED_2, VALUE[COMMITTED_2])  # yes, though COMMITTED_1 holds the lock
    for client, txid in (("client1", COMMITTED_1), ("client2", COMMITTED_2)):
        r.decide(client, txid, "committed", "every participant voted yes")
        for s in SERVERS:
            r.finish(s, client, txid, VALUE[txid], "committed")
        r.outcome(client, txid, VALUE[txid], 1, "committed", "all-yes")
    r.stop()
    _, report = check(r, tmp_path)
    assert any(v.txid == COMMITTED_2 for v in report.violations), show(report)


def test_committed_value_changed_across_a_restart_is_a_stability_violation(tmp_path: Path) -> None:
    r = consistent_run(stop=False)
    records = dict(r.records["server2"])
    records[COMMITTED_1] = ("committed", 1_000_099, 1)
    r.start("server2", records)
    r.stop()
    folder, report = check(r, tmp_path)
    [v] = found(report, "stability", COMMITTED_1)
    assert cites(v, where(folder, "server2", "durable", f"txid={COMMITTED_1}", "state=committed"))
    assert cites(v, where(folder, "server2", "restored", f"txid={COMMITTED_1}"))


Breaking = Callable[[FakeRun], tuple[str, str, tuple[str, ...], dict[str, Any]]]


def _undecided(r: FakeRun) -> tuple[str, str, tuple[str, ...], dict[str, Any]]:
    leave_stuck(r)
    return "undecided", THIRD, ("server1", "durable", f"txid={THIRD}", "state=prepared"), r.final_states()


def _lock_held(r: FakeRun) -> tuple[str, str, tuple[str, ...], dict[str, Any]]:
    leave_stuck(r)
    return "lock-held", THIRD, ("server1", "durable", f"txid={THIRD}", "state=prepared"), r.final_states()


def _diverged(r: FakeRun) -> tuple[str, str, tuple[str, ...], dict[str, Any]]:
    final = swap_commit_order_at_server3(r)
    return "replicas", COMMITTED_2, ("server3", "durable", f"txid={COMMITTED_2}", "state=committed"), final


def _gap(r: FakeRun) -> tuple[str, str, tuple[str, ...], dict[str, Any]]:
    final = skip_version_2(r)
    return "replicas", COMMITTED_2, ("server1", "durable", f"txid={COMMITTED_2}", "state=committed"), final


@pytest.mark.parametrize("breaking", [_undecided, _lock_held, _diverged, _gap], ids=lambda f: f.__name__[1:])
def test_every_violation_cites_the_log_line_that_proves_it(tmp_path: Path, breaking: Breaking) -> None:
    r = consistent_run(stop=False)
    kind, txid, (node, *needles), final = breaking(r)
    folder, report = check(r, tmp_path, final)
    flagged = [v for v in report.violations if v.kind == kind]
    assert flagged, show(report)
    assert all(v.txid is not None for v in flagged), show(report)
    place = where(folder, node, *needles)
    assert any(v.txid == txid and cites(v, place) for v in flagged), show(report)


@pytest.mark.parametrize("breaking", [_undecided, _lock_held, _diverged, _gap], ids=lambda f: f.__name__[1:])
def test_logs_read_in_small_pieces_give_the_same_report(
    tmp_path: Path, breaking: Breaking, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checker streams each log in pieces of whole lines: pieces far smaller
    than a line, cutting lines anywhere, give the same violations, citations
    and line count as one piece."""
    r = consistent_run(stop=False)
    r.logs["client2"].insert(3, "a stray line, not an event")  # malformed lines too
    _, _, _, final = breaking(r)
    folder = r.write(tmp_path / "run", final)
    whole = check_run(folder)
    monkeypatch.setattr(reader, "CHUNK", 37)
    pieces = check_run(folder)
    assert whole.violations and pieces.violations == whole.violations
    assert pieces.lines == whole.lines == sum(len(lines) for lines in r.logs.values())
    assert [c.aborted for c in pieces.clients] == [c.aborted for c in whole.clients]


# ====================================================================== broken protocols, end to end

# The same contention scenario serves the correct core (the control: it is
# consistent, and it does contend) and the participant that votes yes while
# locked, which the checker's lock rule catches in one run: with 8 x 8
# transactions some PREPARE always reaches a locked participant.
CONTENTION = {"clients": 8, "transactions": 8}


def _nok_txids(folder: Path) -> set[str]:
    """Transactions some participant voted NOK on, from the clients' logs."""
    txids = set()
    for log in folder.glob("client*.log"):
        for text in log.read_text().splitlines():
            if " recv " in text and "msg=VOTE" in text and "vote=NOK" in text:
                txids.add(text.split("txid=")[1].split()[0])
    return txids


def test_correct_core_under_heavy_contention_is_consistent(tmp_path: Path) -> None:
    folder = _real_run(tmp_path, **CONTENTION)
    report = check_run(folder)
    assert report.consistent, show(report)
    assert _nok_txids(folder), "no contention: the scenario does not test what it should"


def test_checker_catches_participant_voting_yes_while_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        participant_core.TRANSITIONS,
        (None, participant_core.Event.PREPARE_LOCK_HELD),
        (TxState.PREPARED, participant_core.Answer.VOTE),
    )
    report = check_run(_real_run(tmp_path, **CONTENTION))
    [first, *_] = [v for v in report.violations if v.kind == "lock"] or [None]
    assert first is not None, show(report)
    assert "held its lock" in first.message and len(first.evidence) == 2


def test_checker_catches_coordinator_committing_despite_a_no_vote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_reply = co.CoordinatorCore.on_reply

    def counts_no_as_yes(self: co.CoordinatorCore, src: str, msg: Any) -> list[co.CoordinatorAction]:
        if isinstance(msg, Vote) and not msg.yes:
            msg = Vote(txid=msg.txid, yes=True)
        return on_reply(self, src, msg)

    monkeypatch.setattr(co.CoordinatorCore, "on_reply", counts_no_as_yes)
    folder = _real_run(tmp_path, clients=4, transactions=3)
    report = check_run(folder)
    # Every transaction voted NOK on was durably aborted by that voter, yet its
    # client was told committed: each one is caught, by name.
    refused = _nok_txids(folder)
    assert refused, "no contention: the scenario does not test what it should"
    assert refused <= {v.txid for v in report.violations if v.kind == "client-truth"}, show(report)
    again = check_run(folder)
    assert (again.violations, again.clients, again.replicas) == (report.violations, report.clients, report.replicas)


def _send_before_its_record(r: FakeRun, node: str, needles: tuple[str, ...], records_back: int = 1) -> str:
    """Move the sent line with ``needles`` before the ``records_back``-th durable
    line of its transaction before it; returns the txid."""
    send = r.find(node, "send", *needles)
    txid = needles[1].removeprefix("txid=")
    records = [i for i, line in enumerate(r.logs[node][:send]) if " durable " in line and f"txid={txid}" in line]
    r.logs[node].insert(records[-records_back], r.logs[node].pop(send))
    return txid


@pytest.mark.parametrize(
    ("node", "needles"),
    [
        ("server3", ("msg=OUTCOME", f"txid={ABORTED_2}", "state=aborted")),
        ("server2", ("msg=VOTE", f"txid={ABORTED_2}", "vote=NOK")),
    ],
    ids=["outcome-aborted", "no-vote"],
)
def test_reply_sent_before_what_it_says_was_durable_is_flagged(
    tmp_path: Path, node: str, needles: tuple[str, ...]
) -> None:
    # A NOK or an abort is a promise too: sent before its record is durable, a crash can unsay it.
    r = consistent_run()
    txid = _send_before_its_record(r, node, needles)
    folder, report = check(r, tmp_path)
    [v] = found(report, "durability", txid)
    assert cites(v, where(folder, node, "send", *needles))
    assert kinds(report) == {"durability"}, show(report)


def test_commit_acknowledged_before_its_record_but_after_the_yes_vote_is_consistent(tmp_path: Path) -> None:
    # A lazy commit (docs/protocol.md): the durable yes votes decided it already.
    r = consistent_run()
    _send_before_its_record(r, "server2", ("msg=OUTCOME", f"txid={COMMITTED_2}", "state=committed"))
    _, report = check(r, tmp_path)
    assert report.consistent, show(report)


def test_commit_acknowledged_before_even_the_yes_vote_was_durable_is_flagged(tmp_path: Path) -> None:
    r = consistent_run()
    needles = ("msg=OUTCOME", f"txid={COMMITTED_2}", "state=committed")
    _send_before_its_record(r, "server2", needles, records_back=2)  # before the prepared line too
    folder, report = check(r, tmp_path)
    [v] = found(report, "durability", COMMITTED_2)
    assert cites(v, where(folder, "server2", "send", *needles))
    assert kinds(report) == {"durability"}, show(report)


def test_an_abandoned_transaction_is_counted_for_its_client(tmp_path: Path) -> None:
    r = consistent_run()
    r.drop("client2", "outcome", f"txid={COMMITTED_2}")  # client2 died before it could report
    _, report = check(r, tmp_path)
    assert report.consistent, show(report)
    assert {c.name: c.abandoned for c in report.clients} == {"client1": 0, "client2": 1}
    assert report.abandoned == 1


# ====================================================================== abort causes


def test_a_lock_conflict_is_told_by_the_nok_code_not_by_the_prose(tmp_path: Path) -> None:
    _, report = check(consistent_run(), tmp_path / "a")
    assert report.consistent, show(report)
    assert {c.name: c.aborted for c in report.clients} == {
        "client1": {"no vote: locked": 1},
        "client2": {"no vote: locked": 1},
    }
    r = consistent_run()
    for i, line in enumerate(r.logs["client1"]):  # the same prose, another code
        if f"outcome txid={ABORTED_1} " in line:
            r.logs["client1"][i] = line.replace("nok=locked", "nok=aborted")
    _, report = check(r, tmp_path / "b")
    assert {c.name: c.aborted for c in report.clients}["client1"] == {"no vote: other": 1}


# A vote that comes after the deadline: client1's link to server2 is slowed past
# its timeout (partition:slow-vote), so every transaction of client1 times out
# waiting for server2's vote and must be resolved.
SLOW_VOTE = {"clients": 1, "transactions": 2, "timeout": 0.5, "crash": ("partition:slow-vote",)}


def _slow_vote_run(tmp_path: Path) -> Path:
    folder = tmp_path / "slow"
    run(RunConfig(**SLOW_VOTE, base_port=0, out=folder, seed=20261130))  # type: ignore[arg-type]
    return folder


def _timeouts(folder: Path) -> int:
    return sum(
        " timeout " in line and "phase=voting" in line for line in (folder / "client1.log").read_text().splitlines()
    )


def test_a_vote_after_the_deadline_is_resolved_consistently(tmp_path: Path) -> None:
    """The control: the correct coordinator, whose deadline passes before
    server2's vote arrives, still ends consistent."""
    folder = _slow_vote_run(tmp_path)
    report = check_run(folder)
    assert report.consistent, show(report)
    assert _timeouts(folder) >= 1, "no vote came after the deadline: the scenario does not test what it should"


def test_checker_catches_a_coordinator_committing_on_its_deadline_without_every_vote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coordinator that, at its deadline, commits when every vote it heard was
    yes (the silent participant counted as yes) is caught by a real run: its
    commit is durable at the others before the slow participant voted."""
    on_timeout = co.CoordinatorCore.on_timeout

    def commits_on_silence(self: co.CoordinatorCore, timer: co.Timer) -> list[co.CoordinatorAction]:
        if timer is co.Timer.PHASE and self.phase is co.Phase.VOTING and self.yes:
            self.yes |= set(self.participants)
            return self._commit("the silent ones count as yes", co.Cause.ALL_YES)
        return on_timeout(self, timer)

    monkeypatch.setattr(co.CoordinatorCore, "on_timeout", commits_on_silence)
    folder = _slow_vote_run(tmp_path)
    report = check_run(folder)
    assert _timeouts(folder) >= 1
    validity = [v for v in report.violations if v.kind == "validity" and "before server2 voted yes" in v.message]
    assert validity, show(report)


# ====================================================================== compaction, across a kill


def killed_after_forgetting(r: FakeRun, *, logs_marks: bool) -> dict[str, Any]:
    """server2 compacts: its store forgets both aborted first transactions (their
    clients moved on), but the process dies before the "forgotten" line leaves
    its buffer; it restarts from what the store kept, saying which marks it
    holds when ``logs_marks`` (as ParticipantNode.start does)."""
    kept = {t: rec for t, rec in r.records["server2"].items() if t not in (ABORTED_1, ABORTED_2)}
    if logs_marks:
        marks = ",".join(f"{t.rsplit('-', 1)[0]}:1" for t in (ABORTED_1, ABORTED_2))
        r.emit("server2", COMPACTED, marks=marks, version=2)
    r.start("server2", kept)
    r.stop()
    final = r.final_states()
    final["server2"]["storage"]["forgotten"] = {
        "storage_server": VALUE[COMMITTED_2],
        "version": 2,
        "committed": 0,
        "aborted": 2,
        "marks": 2,
    }
    return final


def test_records_forgotten_by_a_participant_killed_before_its_forgotten_line_are_not_lost(tmp_path: Path) -> None:
    r = consistent_run(stop=False)
    _, report = check(r, tmp_path, killed_after_forgetting(r, logs_marks=True))
    assert report.consistent, show(report)


def test_without_the_marks_at_its_start_the_same_records_are_lost(tmp_path: Path) -> None:
    r = consistent_run(stop=False)
    _, report = check(r, tmp_path, killed_after_forgetting(r, logs_marks=False))
    assert kinds(report) == {"lost"}, show(report)
    assert {v.txid for v in report.violations} == {ABORTED_1, ABORTED_2}
