"""A run folder read into columns for the report: messages, marks, locks, outcomes, faults.

Theory of operation. ``read_run`` is the one place where the report parses log
lines (so that porting it to another event schema touches one function): it
reads every node's log, ``nemesis.log`` and ``proxy.log`` once, line by line,
and fills plain column lists (one list per field, one row per item), so that
a million-line folder costs a few machine words per line and the page gets
compact typed arrays.

Messages are paired send to receipt by harness.report.pairing; the columns
are harness.report.columns. The fault proxy logs only what it drops or cuts,
not what it forwards, so its lane holds those marks; a message it dropped
stays a stub, ending on its lane.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

from harness.protocol.messages import DecodeError, split_fields
from harness.report.columns import Interner, Mark, Result, RunData
from harness.report.pairing import Drop, Raw, pair_messages

__all__ = ["PROXY", "read_run"]


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

PROXY = "proxy"

_FIELD = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))')  # a damaged line's fields, as far as they go


def _unquote(v: str) -> str:
    return json.loads(f'"{v}"') if "\\" in v else v


def _fields(rest: str) -> dict[str, str]:
    """The fields of a line, values unquoted (the protocol's own parser), or of
    a damaged line as far as they go: the report shows what it can."""
    try:
        return dict(split_fields(rest))
    except DecodeError:
        return {k: _unquote(q) if q else b for k, q, b in _FIELD.findall(rest)}


Durable = tuple[int, int, str, str, str, int]  # a durable or restored line: t, lane, txid, state, why, line


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
    tx = Interner(data.txids)
    detail = Interner(data.strings)
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
        json_lines: list[str] = []  # this log's events.jsonl lines, written in one go
        out = json_lines.append if events is not None else None
        fname = path.name
        send, recv = sends.append, recvs.append
        client = _client_index(name, clients)
        t = first = -1
        count = 0
        for number, line in enumerate(content.split("\n"), 1):
            parts = line.split(" ", 5)
            if len(parts) < 3:
                continue
            ts, event = parts[0], parts[2]
            head = ts[:19]
            base = bases.get(head)
            if base is None:
                try:
                    if len(ts) != 27 or ts[19] != "." or ts[26] != "Z":
                        raise ValueError(ts)
                    base = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S")) * 1_000_000
                except ValueError:  # not an event line: the checker flags it
                    base = -1
                bases[head] = base
            if base < 0 or len(ts) != 27:
                continue
            try:
                t = base + int(ts[20:26])
            except ValueError:
                continue
            if first < 0:
                first = t
            count += 1
            if (event == "send" or event == "recv") and len(parts) > 4 and parts[3][:5] == "peer=":
                peer, verb = parts[3][5:], parts[4][4:]
                rest = parts[5] if len(parts) > 5 else ""
                txid = ""
                if rest[:5] == "txid=":
                    txid, _, rest = rest[5:].partition(" ")
                if out is not None:
                    _event_json(out, ts, fname, number, name, event, line[len(ts) + len(parts[1]) + len(event) + 3 :])
                (send if event == "send" else recv)((t, lane, peer, verb, txid, rest, number))
                continue
            other = line[len(ts) + len(parts[1]) + len(event) + 3 :]
            if out is not None:
                _event_json(out, ts, fname, number, name, event, other)
            if event == "durable" or event == "restored":
                # as harness.events.log.log_record writes it: txid and state first, why last
                fields = other.split(" ", 2)
                if len(fields) < 2 or fields[0][:5] != "txid=" or fields[1][:6] != "state=":
                    continue
                txid, state = fields[0][5:], fields[1][6:]
                why = other.rpartition(" why=")[2] if " why=" in other else ""
                if why[:1] == '"':
                    why = _unquote(why[1:-1])
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
            elif event == "begin" or event == "decide":
                # as the client writes them: txid first, then value (begin) or result (decide)
                fields = other.split(" ", 2)
                if len(fields) < 2 or fields[0][:5] != "txid=":
                    continue
                txid, second = fields[0][5:], fields[1].partition("=")[2]
                if event == "decide":
                    mark((t, lane, Mark.DECIDE, tx(txid), number, detail(second)))
                    continue
                try:
                    value = int(second)
                except ValueError:
                    value = 0
                begins[txid] = (t, lane, value, client + max(0, generation[lane]) * nclients, number)
                prepare = other.rpartition(" prepare=")[2] if " prepare=" in other else None
                mark((t, lane, Mark.BEGIN, tx(txid), number, detail(prepare)))
            elif event == "outcome":
                f = _fields(other)
                txid = f.get("txid", "")
                b = begins.pop(txid, None)
                try:
                    latency = int(float(f.get("latency_ms", "0")) * 1000)
                    value = int(f.get("value", "0"))
                except ValueError:
                    latency, value = 0, 0
                process = b[3] if b else client + max(0, generation[lane]) * nclients
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
        if events is not None:
            events.writelines(json_lines)
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
    pair_messages(data, sends, recvs, drops, node_of, lane_of, tx, detail)
    _locks(data, durable, tx, last_t)
    for txid, (t, lane, value, process, number) in begins.items():  # begun, never reported
        _operation(data, lane, tx(txid), t, -1, Result.ABANDONED, detail("abandoned"), 0, value, process, number, {})
    _rebase(data, origin)
    return data


def _event_json(out: Any, ts: str, fname: str, number: int, node: str, event: str, body: str) -> None:
    """One line of events.jsonl: where the line is, who wrote it, its event, and
    its fields as strings (a bare value needs no JSON escaping: the fast path)."""
    head = f'{{"ts":"{ts}","file":"{fname}","line":{number},"node":"{node}","event":"{event}","fields":'
    if '"' not in body and "\\" not in body and body.count("=") == body.count(" ") + 1:
        out(head + '{"' + body.replace("=", '":"').replace(" ", '","') + '"}}\n')
    else:
        out(head + json.dumps(_fields(body)) + "}\n")


def _fault_lanes(f: dict[str, str]) -> list[str]:
    """The nodes a fault touches: its target, or the nodes on every link it cuts
    (the isolated node), else on any of them."""
    cut = f.get("links") or f.get("target", "")  # a crash point's partition names its one link as its target
    links = [set(link.split("->")) for link in cut.split(",") if "->" in link]
    if not links:
        return [f.get("target", "")]
    return sorted(set.intersection(*links) or set.union(*links))


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
                "lanes": _fault_lanes(f),
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


def _locks(data: RunData, durable: list[Durable], tx: Interner, last_t: int) -> None:
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
