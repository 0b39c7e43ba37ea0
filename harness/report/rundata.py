"""A run folder read into columns for the report: messages, marks, locks, outcomes, faults.

Theory of operation. ``read_run`` is the one place where the report parses log
lines (so that porting it to another event schema touches one function): it
reads every node's log, ``nemesis.log`` and ``proxy.log`` once, line by line,
and fills plain column lists (one list per field, one row per item), so that
a million-line folder costs a few machine words per line and the page gets
compact typed arrays.

Messages. A ``send`` line and the matching ``recv`` line on the other node make
one message. They are matched by the message itself, not by clocks: (sender,
receiver, verb, txid) and the occurrence count of that key. A node names its
peer by address: a participant's listening address names that participant,
but a participant sees a connecting client (or peer, or the fault proxy in
between) as an ephemeral port. Such a connection is resolved by its content:
the first message received on it whose (receiver, verb, txid) was sent by
exactly one node names the node at its other end; a client's connection to
the proxy by the STATE it received on it. A send without a receipt is kept
with no receipt time (drawn as a stub: lost, dropped by the proxy, or sent to
a crashed node); a receipt whose sender is unknown (the runner's final STATUS,
a hand-run client) comes from the lane "others".

The fault proxy logs only what it drops or cuts, not what it forwards, so its
lane holds those marks; a message it dropped stays a stub, ending on its lane.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, TextIO


class Kind(IntEnum):
    """A message's kind, as the diagram colours it."""

    PREPARE = 0
    VOTE_OK = 1
    VOTE_NOK = 2
    COMMIT = 3
    ABORT = 4
    RESOLVE = 5
    OUTCOME = 6
    STATUS = 7  # STATUS and its STATE answer
    ERROR = 8


_KIND_OF_VERB = {
    "PREPARE": Kind.PREPARE,
    "COMMIT": Kind.COMMIT,
    "ABORT": Kind.ABORT,
    "RESOLVE": Kind.RESOLVE,
    "OUTCOME": Kind.OUTCOME,
    "STATUS": Kind.STATUS,
    "STATE": Kind.STATUS,
    "ERROR": Kind.ERROR,
}


class Mark(IntEnum):
    """A point event on a lane."""

    PREPARED = 0  # durable prepared (a yes vote)
    COMMITTED = 1  # durable committed
    ABORTED = 2  # durable aborted
    RESTORED = 3  # a record read back at a restart
    START = 4  # listening / connected: a (re)start
    CRASH = 5  # a node killed itself at a crash point, or the nemesis killed it
    STOPPED = 6
    TIMEOUT = 7
    UNREACHABLE = 8
    DISCONNECT = 9
    DROP = 10  # the proxy dropped a line
    CUT = 11  # the proxy cut a link
    PAUSE = 12  # the nemesis paused the node (SIGSTOP)
    RESUME = 13
    BEGIN = 14  # a client began a transaction
    DECIDE = 15  # a client decided


class Result(IntEnum):
    COMMITTED = 0
    ABORTED = 1
    UNKNOWN = 2
    ABANDONED = 3  # begun by a client that died before it could report


_RESULTS = {"committed": Result.COMMITTED, "aborted": Result.ABORTED, "unknown": Result.UNKNOWN}
_DURABLE = {"prepared": Mark.PREPARED, "committed": Mark.COMMITTED, "aborted": Mark.ABORTED}
_SIMPLE_MARKS = {
    "crash": Mark.CRASH,
    "stopped": Mark.STOPPED,
    "timeout": Mark.TIMEOUT,
    "unreachable": Mark.UNREACHABLE,
    "disconnect": Mark.DISCONNECT,
    "drop": Mark.DROP,
    "cut": Mark.CUT,
}

_PLAIN = frozenset({"PREPARE", "COMMIT", "ABORT", "RESOLVE"})  # messages whose verb and txid say it all

OTHERS = "others"  # the lane of senders no log names
PROXY = "proxy"

# One line: timestamp (its second, its microseconds), node, and either a
# message (its peer, verb, txid, the rest) or another event and its fields.
# Lines that match neither (torn, damaged) are skipped here; the checker flags them.
_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{6})Z \S+ "
    r"(?:(send|recv) peer=(\S+) msg=([A-Z]+)(?: txid=(\S+))?(.*)|(\S+) ?(.*))$"
    r"|^.*$",  # any other line, so that findall yields one row per line: its index is its number
    re.M,
)
_FIELD = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))')
_DURABLE_LINE = re.compile(r'txid=(\S+) state=(\w+).*? why=(?:"((?:[^"\\]|\\.)*)"|(\S*))|txid=(\S+) state=(\w+)')


def _unquote(v: str) -> str:
    return json.loads(f'"{v}"') if "\\" in v else v


def _fields(rest: str) -> dict[str, str]:
    """The fields of a line (values unquoted), tolerant of damage: the report
    shows what it can."""
    return {k: _unquote(q) if q else b for k, q, b in _FIELD.findall(rest)}


@dataclass
class RunData:
    """Columns, one list per field; times are microseconds since ``origin``
    (the first timestamp of the run, seconds since the epoch)."""

    origin: float = 0.0
    end: int = 0  # the last timestamp, in microseconds since origin
    lanes: list[str] = field(default_factory=list)
    lane_kinds: list[str] = field(default_factory=list)  # client, proxy, participant, others
    txids: list[str] = field(default_factory=list)
    strings: list[str] = field(default_factory=list)  # details: values, reasons, states, causes
    lines: int = 0  # event lines read
    # messages (in no particular order; html sorts them)
    m_send: list[int] = field(default_factory=list)  # -1: no send line (sender unknown)
    m_recv: list[int] = field(default_factory=list)  # -1: never received
    m_src: list[int] = field(default_factory=list)
    m_dst: list[int] = field(default_factory=list)
    m_kind: list[int] = field(default_factory=list)
    m_tx: list[int] = field(default_factory=list)
    m_detail: list[int] = field(default_factory=list)
    m_send_line: list[int] = field(default_factory=list)  # line number in the sender's log, 0: none
    m_recv_line: list[int] = field(default_factory=list)
    m_dropped: list[int] = field(default_factory=list)  # 1 when the proxy logged dropping it
    # marks on lanes
    k_t: list[int] = field(default_factory=list)
    k_lane: list[int] = field(default_factory=list)
    k_kind: list[int] = field(default_factory=list)
    k_tx: list[int] = field(default_factory=list)
    k_line: list[int] = field(default_factory=list)
    k_detail: list[int] = field(default_factory=list)
    # lock intervals at participants: prepared until decided (or the end)
    l_lane: list[int] = field(default_factory=list)
    l_tx: list[int] = field(default_factory=list)
    l_from: list[int] = field(default_factory=list)
    l_to: list[int] = field(default_factory=list)
    l_line: list[int] = field(default_factory=list)
    l_end_line: list[int] = field(default_factory=list)  # 0: still held at the end
    # NOK votes for a held lock: (participant, refused tx, holder tx, time)
    n_lane: list[int] = field(default_factory=list)
    n_tx: list[int] = field(default_factory=list)
    n_holder: list[int] = field(default_factory=list)
    n_t: list[int] = field(default_factory=list)
    # client operations: begin and outcome
    o_lane: list[int] = field(default_factory=list)
    o_tx: list[int] = field(default_factory=list)
    o_begin: list[int] = field(default_factory=list)
    o_end: list[int] = field(default_factory=list)  # -1 abandoned
    o_result: list[int] = field(default_factory=list)
    o_cause: list[int] = field(default_factory=list)
    o_latency_us: list[int] = field(default_factory=list)
    o_value: list[int] = field(default_factory=list)
    o_process: list[int] = field(default_factory=list)  # Jepsen process: client index + generation * clients
    o_line: list[int] = field(default_factory=list)  # the outcome line, else the begin line
    o_extra: list[dict[str, str]] = field(default_factory=list)  # op, attempt, reason (history only)
    # faults of the nemesis: id, kind, target, start, end (-1: never healed)
    faults: list[dict[str, Any]] = field(default_factory=list)

    def lane(self, name: str) -> int:
        return self.lanes.index(name)


Raw = tuple[int, int, str, str, str, str, int]  # a send or recv line: t, lane, peer, verb, txid, rest, line
Durable = tuple[int, int, str, str, str, int]  # a durable or restored line: t, lane, txid, state, why, line
Drop = tuple[int, str, bool, str]  # a line the proxy dropped: t, link, forward, its head


class _Interner:
    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.index: dict[str, int] = {}

    def __call__(self, s: str | None) -> int:
        if s is None:
            return -1
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.items)
            self.items.append(s)
        return i


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_run(folder: Path, events: TextIO | None = None) -> RunData:
    """Read ``folder`` (see the module's docstring). With ``events``, also write
    every log line there as one JSON object (events.jsonl): the same pass."""
    run = _load(folder / "run.json") or {}
    participants = [(p["node"], p["address"]) for p in run.get("participants", [])]
    clients = list(run.get("clients", []))
    logs = [(node, "participant") for node, _ in participants] + [(c, "client") for c in clients]
    known = {n for n, _ in logs}
    # logs the run did not list (a hand-made folder): clients by default
    for path in sorted(folder.glob("*.log")):
        if path.stem not in known and path.stem not in ("nemesis", PROXY):
            logs.append((path.stem, "participant" if path.stem.startswith("server") else "client"))
            known.add(path.stem)
    data = RunData()
    node_of = {addr: node for node, addr in participants}
    proxy_lines = (folder / "proxy.log").exists() and (folder / "proxy.log").stat().st_size > 0
    order = (
        [n for n, k in logs if k == "client"]
        + ([PROXY] if proxy_lines else [])
        + [n for n, k in logs if k == "participant"]
    )
    kinds = {n: k for n, k in logs} | {PROXY: "proxy"}
    data.lanes = order
    data.lane_kinds = [kinds[n] for n in order]
    lane_of = {n: i for i, n in enumerate(order)}
    tx = _Interner(data.txids)
    detail = _Interner(data.strings)
    bases: dict[str, int] = {}  # a timestamp's second -> microseconds since the epoch

    sends: list[Raw] = []
    recvs: list[Raw] = []
    durable: list[Durable] = []
    drops: list[Drop] = []
    begins: dict[str, tuple[int, int, int, int, int]] = {}  # txid -> t, lane, value, process, line
    generation: dict[int, int] = defaultdict(lambda: -1)
    span: list[int] = []  # the first and last time of each log
    marks: list[tuple[int, int, int, int, int, int]] = []  # t, lane, kind, tx, line, detail
    mark = marks.append
    nclients = max(1, len(clients))

    def scan(name: str, path: Path, lane: int) -> None:
        try:
            content = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        out = events.write if events is not None else None
        fname = path.name
        send, recv = sends.append, recvs.append
        t = first = -1
        count = 0
        for number, (head, us, io, peer, verb, txid, rest, event, other) in enumerate(_LINE.findall(content), 1):
            if not head:
                continue
            base = bases.get(head)
            if base is None:
                try:
                    base = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S")) * 1_000_000
                except ValueError:  # a damaged timestamp: the checker flags the line
                    base = -1
                bases[head] = base
            if base < 0:
                continue
            t = base + int(us)
            if first < 0:
                first = t
            count += 1
            if out is not None:
                _event_json(out, head, us, fname, number, name, io, peer, verb, txid, rest, event, other)
            if io:
                (send if io == "send" else recv)((t, lane, peer, verb, txid, rest, number))
                continue
            if event == "durable" or event == "restored":
                d = _DURABLE_LINE.search(other)
                if d is None:
                    continue
                txid, state, quoted, bare, txid2, state2 = d.groups()
                txid, state = txid or txid2, state or state2
                why = _unquote(quoted) if quoted else bare or ""
                if event == "durable":
                    durable.append((t, lane, txid, state, why, number))
                    k = _DURABLE.get(state)
                    if k is not None:  # a NOK's holder is in the NOK table: one string for all
                        mark((t, lane, k, tx(txid), number, detail(why.split(" by ", 1)[0])))
                else:
                    durable.append((t, lane, txid, "restored-" + state, "", number))
                    mark((t, lane, Mark.RESTORED, tx(txid), number, detail(state)))
            elif event == "listening" or event == "connected":
                f = _fields(other)
                if event == "listening" and "addr" in f:
                    node_of.setdefault(f["addr"], name)
                if event == "connected":
                    generation[lane] += 1
                mark((t, lane, Mark.START, -1, number, detail(f"{event} {other[:200]}")))
            elif event == "begin":
                f = _fields(other)
                try:
                    value = int(f.get("value", "0"))
                except ValueError:
                    value = 0
                process = _client_index(name, clients) + max(0, generation[lane]) * nclients
                begins[f.get("txid", "")] = (t, lane, value, process, number)
                mark((t, lane, Mark.BEGIN, tx(f.get("txid")), number, detail(f.get("prepare"))))
            elif event == "decide":
                f = _fields(other)
                mark((t, lane, Mark.DECIDE, tx(f.get("txid")), number, detail(f.get("result"))))
            elif event == "outcome":
                f = _fields(other)
                txid = f.get("txid", "")
                b = begins.pop(txid, None)
                try:
                    latency = int(float(f.get("latency_ms", "0")) * 1000)
                    value = int(f.get("value", "0"))
                except ValueError:
                    latency, value = 0, 0
                process = b[3] if b else _client_index(name, clients) + max(0, generation[lane]) * nclients
                cause = f.get("cause", "")
                if cause == "no-vote":
                    cause = "no vote: locked" if "locked by" in f.get("reason", "") else "no vote: other"
                _operation(
                    data,
                    lane,
                    tx(txid),
                    b[0] if b else t - latency,
                    t,
                    _RESULTS.get(f.get("result", ""), Result.UNKNOWN),
                    detail(cause),
                    latency,
                    value,
                    process,
                    number,
                    {k: f[k] for k in ("op", "attempt", "reason") if k in f},
                )
            elif event == "fault" or event == "heal":
                f = _fields(other)
                _fault(data, event, f, t, number)
                target = f.get("target", "")
                if target in lane_of:
                    k = {"kill-participant": Mark.CRASH, "kill-client": Mark.CRASH, "pause": Mark.PAUSE}.get(
                        f.get("kind", "")
                    )
                    if k is not None:
                        if event == "heal":
                            k = Mark.RESUME if k == Mark.PAUSE else Mark.START
                        # a negative line number: a line of nemesis.log, not of the lane's log
                        mark((t, lane_of[target], k, -1, -number, detail(f"nemesis: {event} {f.get('kind')}")))
            elif event in _SIMPLE_MARKS:
                f = _fields(other)
                if event == "drop":
                    drops.append((t, f.get("link", ""), f.get("forward") == "True", f.get("line", "")))
                mark((t, lane, _SIMPLE_MARKS[event], tx(f.get("txid")), number, detail(other[:200])))
        data.lines += count
        if first >= 0:
            span.extend((first, t))

    for name in order:
        if name != PROXY:
            scan(name, folder / f"{name}.log", lane_of[name])
    if proxy_lines:
        scan(PROXY, folder / "proxy.log", lane_of[PROXY])
    if (folder / "nemesis.log").exists():
        scan("nemesis", folder / "nemesis.log", -1)

    origin = min(span, default=0)
    last_t = max(span, default=0)
    data.origin = origin / 1_000_000
    data.end = last_t - origin
    rows = [r for r in marks if r[1] >= 0]
    if rows:
        data.k_t, data.k_lane, data.k_kind, data.k_tx, data.k_line, data.k_detail = (
            list(c) for c in zip(*rows, strict=True)
        )
    _match_messages(data, sends, recvs, drops, node_of, lane_of, tx, detail)
    _locks(data, durable, tx, last_t)
    for txid, (t, lane, value, process, number) in begins.items():  # begun, never reported
        _operation(data, lane, tx(txid), t, -1, Result.ABANDONED, detail("abandoned"), 0, value, process, number, {})
    _rebase(data, origin)
    return data


def _event_json(out: Any, head: str, us: str, fname: str, number: int, node: str, io: str, peer: str,
                verb: str, txid: str, rest: str, event: str, other: str) -> None:  # fmt: skip
    """One line of events.jsonl: where the line is, who wrote it, its event, and
    its fields as strings (a bare value needs no JSON escaping: the fast path)."""
    if io:
        body = f"peer={peer} msg={verb}" + (f" txid={txid}" if txid else "") + rest
        event = io
    else:
        body = other
    head = f'{{"ts":"{head}.{us}Z","file":"{fname}","line":{number},"node":"{node}","event":"{event}","fields":'
    if '"' not in body and "\\" not in body and body.count("=") == body.count(" ") + 1:
        out(head + '{"' + body.replace("=", '":"').replace(" ", '","') + '"}}\n')
    else:
        out(head + json.dumps(_fields(body)) + "}\n")


def _client_index(name: str, clients: list[str]) -> int:
    return clients.index(name) if name in clients else len(clients)


def _operation(data: RunData, lane: int, txi: int, begin: int, end: int, result: Result, cause: int, latency: int,
               value: int, process: int, line: int, extra: dict[str, str]) -> None:  # fmt: skip
    data.o_lane.append(lane)
    data.o_tx.append(txi)
    data.o_begin.append(begin)
    data.o_end.append(end)
    data.o_result.append(result)
    data.o_cause.append(cause)
    data.o_latency_us.append(latency)
    data.o_value.append(value)
    data.o_process.append(process)
    data.o_line.append(line)
    data.o_extra.append(extra)


def _fault(data: RunData, event: str, f: dict[str, str], t: int, line: int) -> None:
    if event == "fault":
        data.faults.append(
            {
                "id": f.get("id"),
                "kind": f.get("kind"),
                "target": f.get("target"),
                "start": t,
                "end": -1,
                "line": line,
                "detail": " ".join(f"{k}={v}" for k, v in f.items() if k in ("point", "links", "delay", "drop")),
                # the nodes a fault touches: its target, or both ends of each link it cuts
                "lanes": sorted({n for link in f.get("links", "").split(",") if link for n in link.split("->")})
                or [f.get("target", "")],
            }
        )
        return
    for fault in reversed(data.faults):
        if fault["id"] == f.get("id"):
            fault["end"] = t
            fault["heal_line"] = line
            if f.get("how"):
                fault["detail"] = (fault["detail"] + f" healed: {f['how']}").strip()
            break


def _match_messages(data: RunData, sends: list[Raw], recvs: list[Raw], drops: list[Drop], node_of: dict[str, str],
                    lane_of: dict[str, int], tx: _Interner, detail: _Interner) -> None:  # fmt: skip
    """Pair send and recv lines into messages (see the module's docstring)."""
    lane_at = {addr: lane_of[node] for addr, node in node_of.items() if node in lane_of}
    # A client's connection to the proxy: named by the STATE received on it.
    conn: dict[tuple[int, str], int] = {}
    for _, lane, peer, verb, _, rest, _ in recvs:
        if verb == "STATE" and peer not in lane_at and (lane, peer) not in conn:
            m = re.search(r"node=(\S+)", rest)
            if m and m.group(1) in lane_at:
                conn[lane, peer] = lane_at[m.group(1)]
    # A connection a receiver names by port: the first few (verb, txid) received
    # on it, then who sent those to that receiver (one sender names it).
    first: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for _, lane, peer, verb, txid, _, _ in recvs:
        if txid and peer not in lane_at:
            seen = first.get((lane, peer))
            if seen is None:
                first[lane, peer] = [(verb, txid)]
            elif len(seen) < 8:
                seen.append((verb, txid))
    wanted = {txid for seen in first.values() for _, txid in seen}
    senders: dict[tuple[int, str, str], int] = {}
    for _, lane, peer, verb, txid, _, _ in sends:
        if txid in wanted:
            dst = lane_at.get(peer)
            if dst is not None:
                was = senders.get((dst, verb, txid))
                senders[dst, verb, txid] = lane if was is None or was == lane else -2  # -2: ambiguous
    for (lane, peer), seen in first.items():
        for verb, txid in seen:
            sender = senders.get((lane, verb, txid), -2)
            if sender >= 0 and (lane, peer) not in conn:
                conn[lane, peer] = sender
                break
    others = -1

    def resolve(lane: int, peer: str) -> int:
        nonlocal others
        dst = lane_at.get(peer)
        if dst is None:
            dst = conn.get((lane, peer))
        if dst is None:
            if others < 0:
                others = len(data.lanes)
                data.lanes.append(OTHERS)
                data.lane_kinds.append("others")
            dst = others
        return dst

    # Unreceived sends by (sender, receiver, verb, txid): one index, or a list
    # of them in log order when a message was sent more than once (most are not).
    pending: dict[tuple[int, int, str, str], int | list[int]] = {}
    n = len(sends)
    data.m_send = [r[0] for r in sends]
    data.m_src = [r[1] for r in sends]
    data.m_send_line = [r[6] for r in sends]
    data.m_recv = m_recv = [-1] * n
    data.m_recv_line = m_recv_line = [0] * n
    data.m_dropped = [0] * n
    known = tx.index.get
    data.m_tx = [known(r[4], -2) if r[4] else -1 for r in sends]  # -2: a txid not seen before
    for i in [i for i, x in enumerate(data.m_tx) if x == -2]:
        data.m_tx[i] = tx(sends[i][4])
    m_dst, m_kind, m_detail = data.m_dst, data.m_kind, data.m_detail
    kind_of, plain, get = _KIND_OF_VERB, _PLAIN, lane_at.get
    vote_ok, vote_nok = Kind.VOTE_OK, Kind.VOTE_NOK
    for i, (_, lane, peer, verb, txid, rest, _) in enumerate(sends):
        dst = get(peer)
        if dst is None:
            dst = resolve(lane, peer)
        m_dst.append(dst)
        key = (lane, dst, verb, txid)
        held = pending.get(key)
        if held is None:
            pending[key] = i
        elif isinstance(held, int):
            pending[key] = [held, i]
        else:
            held.append(i)
        if verb == "VOTE":
            if rest == " vote=ok":
                m_kind.append(vote_ok)
                m_detail.append(-1)
            else:
                m_kind.append(vote_nok)
                m_detail.append(detail(rest))
        else:
            m_kind.append(kind_of.get(verb, Kind.ERROR))
            # PREPARE's value is its operation's; COMMIT, ABORT, RESOLVE say nothing more
            m_detail.append(-1 if verb in plain else detail(rest))
    for t, lane, peer, verb, txid, rest, number in recvs:
        src = get(peer)
        if src is None:
            src = resolve(lane, peer)
        held = pending.pop((src, lane, verb, txid), None)
        if held is None:
            _message(data, -1, t, src, lane, verb, rest, tx(txid or None), detail, 0, number)
            continue
        if isinstance(held, int):
            i = held
        else:
            i = held.pop(0)
            if held:
                pending[src, lane, verb, txid] = held
        m_recv[i] = t
        m_recv_line[i] = number
    # A line the proxy dropped: the oldest unreceived send on that link with that head.
    if drops:
        for t, link, forward, head in drops:
            a, _, b = link.partition("->")
            from_node, to_node = (a, b) if forward else (b, a)
            if from_node not in lane_of or to_node not in lane_of:
                continue
            words = head.split()
            verb = words[0] if words else ""
            txid = next((w[5:] for w in words if w.startswith("txid=")), "")
            held = pending.get((lane_of[from_node], lane_of[to_node], verb, txid))
            for i in [held] if isinstance(held, int) else held or ():
                if data.m_recv[i] < 0 and data.m_send[i] <= t and not data.m_dropped[i]:
                    data.m_dropped[i] = 1
                    break


def _message(data: RunData, t_send: int, t_recv: int, src: int, dst: int, verb: str, rest: str, txi: int,
             detail: _Interner, send_line: int, recv_line: int) -> None:  # fmt: skip
    kind = _KIND_OF_VERB.get(verb, Kind.ERROR)
    extra = rest.strip()
    if verb == "VOTE":
        kind = Kind.VOTE_OK if extra == "vote=ok" else Kind.VOTE_NOK
    elif verb == "PREPARE":  # its participants are the run's: keep the value only
        extra = extra.split(" participants=", 1)[0]
    data.m_send.append(t_send)
    data.m_recv.append(t_recv)
    data.m_src.append(src)
    data.m_dst.append(dst)
    data.m_kind.append(kind)
    data.m_tx.append(txi)
    data.m_detail.append(-1 if verb in _PLAIN or extra == "vote=ok" else detail(f" {extra}"))
    data.m_send_line.append(send_line)
    data.m_recv_line.append(recv_line)
    data.m_dropped.append(0)


def _locks(data: RunData, durable: list[Durable], tx: _Interner, last_t: int) -> None:
    """Lock intervals: a participant's prepared record holds its lock until the
    record is decided; a NOK vote "locked by X" refused a transaction meanwhile."""
    held: dict[tuple[int, str], int] = {}  # (lane, txid) -> interval index
    for t, lane, txid, state, why, number in durable:
        key = (lane, txid)
        if state in ("prepared", "restored-prepared"):
            if key not in held:
                held[key] = len(data.l_lane)
                data.l_lane.append(lane)
                data.l_tx.append(tx(txid))
                data.l_from.append(t)
                data.l_to.append(last_t)
                data.l_line.append(number)
                data.l_end_line.append(0)
            continue
        if state.startswith("restored-"):
            continue
        i = held.pop(key, None)
        if i is not None:
            data.l_to[i] = t
            data.l_end_line[i] = number
        if state == "aborted" and why.startswith("vote no: locked by "):
            data.n_lane.append(lane)
            data.n_tx.append(tx(txid))
            data.n_holder.append(tx(why[len("vote no: locked by ") :]))
            data.n_t.append(t)


def _rebase(data: RunData, origin: int) -> None:
    """Every time relative to ``origin`` (-1 stays -1: absent)."""
    for column in (data.m_send, data.m_recv, data.o_end):
        column[:] = [t - origin if t >= 0 else -1 for t in column]
    for column in (data.k_t, data.l_from, data.l_to, data.n_t, data.o_begin):
        column[:] = [t - origin for t in column]
    for f in data.faults:
        f["start"] -= origin
        if f["end"] >= 0:
            f["end"] -= origin
