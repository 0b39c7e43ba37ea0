"""Messages: each send line paired with its receipt on the other node.

Theory of operation. A ``send`` line and the matching ``recv`` line on the
other node make one message. They are matched by the message itself, not by
clocks: (sender, receiver, verb, txid) and the occurrence count of that key.
A node names its peer by address: a participant's listening address names
that participant, but a participant sees a connecting client (or peer, or the
fault proxy in between) as an ephemeral port. Such a connection is resolved
by its content: the first message received on it whose (receiver, verb, txid)
was sent by exactly one node names the node at its other end; a client's
connection to the proxy by the STATE it received on it. A send without a
receipt is kept with no receipt time (drawn as a stub: lost, dropped by the
proxy, or sent to a crashed node); a receipt whose sender is unknown (the
runner's final STATUS, a hand-run client) comes from the lane "others". A line
the proxy logged dropping marks the oldest unreceived send it could be.
"""

from __future__ import annotations

import re

from harness.report.columns import KIND_OF_VERB, OTHERS, PLAIN, Interner, Kind, RunData

Raw = tuple[int, int, str, str, str, str, int]  # a send or recv line: t, lane, peer, verb, txid, rest, line
Drop = tuple[int, str, bool, str]  # a line the proxy dropped: t, link, forward, its head


def pair_messages(data: RunData, sends: list[Raw], recvs: list[Raw], drops: list[Drop], node_of: dict[str, str],
                    lane_of: dict[str, int], tx: Interner, detail: Interner) -> None:  # fmt: skip
    """Pair send and recv lines into messages (see the module's docstring)."""
    lane_at = {addr: lane_of[node] for addr, node in node_of.items() if node in lane_of}
    # A connection a receiver names by port: a client's connection to the proxy
    # by the STATE received on it; another by the first few (verb, txid)
    # received on it, and who sent those to that receiver (one sender names it).
    conn: dict[tuple[int, str], int] = {}
    first: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for _, lane, peer, verb, txid, rest, _ in recvs:
        if peer in lane_at:
            continue
        if txid:
            seen = first.get((lane, peer))
            if seen is None:
                first[lane, peer] = [(verb, txid)]
            elif len(seen) < 8:
                seen.append((verb, txid))
        elif verb == "STATE" and (lane, peer) not in conn:
            m = re.search(r"node=(\S+)", rest)
            if m and m.group(1) in lane_at:
                conn[lane, peer] = lane_at[m.group(1)]
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
    kind_of, plain, get = KIND_OF_VERB, PLAIN, lane_at.get
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
            if rest == "vote=ok":
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
             detail: Interner, send_line: int, recv_line: int) -> None:  # fmt: skip
    kind = KIND_OF_VERB.get(verb, Kind.ERROR)
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
    data.m_detail.append(-1 if verb in PLAIN or extra == "vote=ok" else detail(f" {extra}"))
    data.m_send_line.append(send_line)
    data.m_recv_line.append(recv_line)
    data.m_dropped.append(0)
