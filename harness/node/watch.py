"""Event lines made short enough to watch: the participants' echo, the client's ``-v``, ``run --watch``.

Theory of operation. The event log (harness.events.log) keeps every field of
every event, for the checker; a line there runs to 150-230 characters, three
screen lines in an 80-column terminal. A person watching needs the time, who,
what moved and which transaction, on one screen line. ``compact`` turns one
log line into that:

    06:22:58.438 <- 127.0.0.1:36802 PREPARE (commit) client26872…-1 value=42
    06:22:58.439 durable prepared client26872…-1 value=42 (vote yes)
    06:22:58.439 -> 127.0.0.1:36802 VOTE ok client26872…-1

the time of day (UTC, as in the log, so the full line is easy to find), an
arrow for a message sent (``->``) or received (``<-``) with its peer, the
verb with the seed's word beside it (PREPARE was the seed's ``commit``,
COMMIT its ``alterar``), the txid without its random middle, and the fields
that change from one line to the next (never the participant list, the same
on every line). ``Echo`` is a writable stream that does this to every line
written to it and cuts each to the terminal's width, so an EventLog echoes
through it unchanged (harness.node.serve, harness.client -v). ``LogTail``
follows the log files of a run folder as they grow (harness.run --watch).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TextIO

from harness.console.terminal import clip, terminal_width
from harness.protocol.messages import DecodeError, split_fields

# The seed's words (the student project's cliente.py and servidorN.py) beside ours.
SEED_WORDS = {"PREPARE": "commit", "COMMIT": "alterar"}
# A txid is <client name>-<12 random hex digits>-<n>: the middle tells transactions of
# two runs of one client apart, never two lines of one screen.
_TXID = re.compile(r"\b([A-Za-z0-9_.:]+)-[0-9a-f]{12}-(\d+)\b")
# Fields left out of a compact line: the same on every line, or said another way already.
_SKIP = frozenset({"participants", "pid", "name", "data", "peer", "msg", "txid", "state", "why", "reason"})


def short_txid(text: str) -> str:
    """Every txid in ``text`` with its random middle cut: client3-5f2a9c1b7e44-12 -> client3…-12."""
    return _TXID.sub(r"\1…-\2", text)


def _fields(rest: str) -> dict[str, str]:
    try:
        return dict(split_fields(rest))
    except DecodeError:
        return {}


def _kv(fields: dict[str, str], skip: frozenset[str] = _SKIP) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items() if k not in skip)


def compact(line: str, *, node: bool = False) -> str:
    """One event log line, short. ``node``: keep the node's name (several nodes on one screen).
    A line that is not an event line comes back as it is."""
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 3 or len(parts[0]) < 23 or "T" not in parts[0]:
        return line.rstrip("\n")
    stamp, who, event = parts[0], parts[1], parts[2]
    rest = parts[3] if len(parts) == 4 else ""
    head = stamp[11:23] + (f" {who}" if node else "")
    if event in ("send", "recv"):
        peer, _, msg = rest.partition(" msg=")
        verb, _, args = msg.partition(" ")
        f = _fields(args)
        seed = SEED_WORDS.get(verb)
        text = f"{'->' if event == 'send' else '<-'} {peer.removeprefix('peer=')} {verb}"
        text += f" ({seed})" if seed else ""
        for key in ("vote", "state", "code"):  # the answer first: ok/NOK, committed/aborted
            if key in f:
                text += f" {f.pop(key)}"
        if "txid" in f:
            text += f" {f.pop('txid')}"
        if verb == "STATE":
            f.pop("node", None)
        # A PREPARE's age (prio, lockless: wait-die) is for participants, not for a person: the log keeps it.
        extra = _kv(f, frozenset({"participants", "prio", "lockless"}))
        return short_txid(f"{head} {text}{' ' + extra if extra else ''}")
    f = _fields(rest)
    words = [event]
    if "state" in f:
        words.append(f["state"])
        if f["state"] != "committed":  # only a commit makes a version
            f.pop("version", None)
    if "result" in f:
        words.append(f.pop("result"))
    if "txid" in f:
        words.append(f["txid"])
    extra = _kv(f)
    if extra:
        words.append(extra)
    why = f.get("why") or f.get("reason")
    if why:
        words.append(f"({why})")
    return short_txid(f"{head} {' '.join(words)}")


class Echo:
    """A text stream for EventLog's echo: each line written is made compact and cut to the width
    of the terminal (harness.console.terminal); ``skip`` names events not to show."""

    def __init__(self, stream: TextIO, *, node: bool = False, skip: frozenset[str] = frozenset()) -> None:
        self.stream = stream
        self.node = node
        self.skip = skip

    def write(self, text: str) -> int:
        width = terminal_width(self.stream)
        out = []
        for line in text.splitlines():
            if self.skip and line.split(" ", 3)[2:3] and line.split(" ", 3)[2] in self.skip:
                continue
            out.append(clip(compact(line, node=self.node), width) + "\n")
        self.stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class LogTail:
    """Follows the ``*.log`` files of a folder as they grow: ``poll`` returns the complete lines
    written since the last call, of every file, in time order."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.offsets: dict[Path, int] = {}  # bytes of each file already returned

    def poll(self) -> list[str]:
        lines: list[str] = []
        for path in sorted(self.folder.glob("*.log")):
            at = self.offsets.get(path, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(at)
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1  # a line still being written waits for its newline
            if end == 0:
                continue
            self.offsets[path] = at + end
            lines += data[:end].decode("utf-8", errors="replace").splitlines()
        lines.sort()  # every line opens with its UTC timestamp, all of one width
        return [line for line in lines if line]
