"""Every event a node writes to its log: its name, who writes it, its fields in order. Defined once.

Theory of operation. A log line is ``<UTC timestamp> <node> <event> key=value ...``
(docs/architecture.md). This module is the one place that says which events
exist and which fields each carries, in which order, of which type:

* writers go through it (harness.events.log.EventLog.write refuses a field
  that the event does not have, and a required field left out);
* readers are built from it: harness.events.log.read_log and ``parse``
  turn a line back into typed fields, and the checker's fast reader
  (harness.verify.reader) makes its regular expressions from these fields;
* ``send`` and ``recv`` carry a wire message after ``msg=``: its fields are
  the protocol's own (harness.protocol.messages), not repeated here.

A new event, or a new field, is added here and nowhere else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FieldType(enum.Enum):
    """How a field's value is written, and so how a reader matches it."""

    INT = "int"  # a decimal integer, maybe negative
    FLOAT = "float"  # a decimal number (seconds, milliseconds)
    WORD = "word"  # a token that harness.protocol.messages.quote leaves bare (txids, addresses, names)
    LIST = "list"  # comma-separated words, maybe empty (participant lists)
    TEXT = "text"  # free text, double-quoted when it holds a blank or a quote (reasons, errors)
    MESSAGE = "message"  # a wire message, to the end of the line (send and recv only)


class Role(enum.Enum):
    """Who writes an event."""

    PARTICIPANT = "participant"
    CLIENT = "client"
    NODE = "node"  # participants and clients alike
    NEMESIS = "nemesis"  # the runner's fault injector (nemesis.log)
    PROXY = "proxy"  # the fault proxy (proxy.log)
    RESOLVER = "resolver"  # the resolver of abandoned PostgreSQL prepared transactions (harness.postgres)


@dataclass(frozen=True, slots=True)
class Field:
    """One ``key=value`` of an event line."""

    name: str
    type: FieldType
    optional: bool = False
    doc: str = ""


def _f(name: str, type_: FieldType, doc: str = "", *, optional: bool = False) -> Field:
    return Field(name, type_, optional, doc)


@dataclass(frozen=True, slots=True)
class EventKind:
    """One kind of event line: its name, its writer and its fields in the order they are written."""

    name: str
    role: Role
    doc: str
    fields: tuple[Field, ...] = ()

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


INT, FLOAT, WORD, LIST, TEXT, MESSAGE = (
    FieldType.INT,
    FieldType.FLOAT,
    FieldType.WORD,
    FieldType.LIST,
    FieldType.TEXT,
    FieldType.MESSAGE,
)

_PEER = _f("peer", WORD, "the other end: a participant's name, or the ip:port a connection came from")
_TXID = _f("txid", WORD, "the transaction")
# A participant's durable record, as harness.events.log.log_record writes it.
_RECORD = (
    _TXID,
    _f("state", WORD, "prepared, committed or aborted"),
    _f("value", INT, "the value the transaction writes"),
    _f("version", INT, "for a commit: the version it makes (1, 2, ...); 0 otherwise"),
    _f("participants", LIST, "every participant of the transaction"),
    _f("why", TEXT, "the rule that wrote it: vote yes, vote no: locked by ..., COMMIT received, ...", optional=True),
)

# ------------------------------------------------------------------ both kinds of node
SEND = EventKind("send", Role.NODE, "a message written to a connection", (_PEER, _f("msg", MESSAGE)))
RECV = EventKind("recv", Role.NODE, "a message read from a connection", (_PEER, _f("msg", MESSAGE)))
DISCONNECT = EventKind(
    "disconnect", Role.NODE, "a connection broke, or sent garbage", (_PEER, _f("error", TEXT, "what happened"))
)
UNREACHABLE = EventKind("unreachable", Role.NODE, "a connect failed", (_PEER, _f("error", TEXT)))
TIMEOUT = EventKind(
    "timeout",
    Role.NODE,
    "a timer fired: a participant's resolve timer (after_s), or a client's phase or retry timer",
    (
        _TXID,
        _f("after_s", FLOAT, "participant: the --resolve-after that passed", optional=True),
        _f("timer", WORD, "client: phase or retry", optional=True),
        _f("phase", WORD, "client: the coordinator's phase when it fired", optional=True),
        _f("held", TEXT, "resolver: what each cluster holds of it (none decided it yet)", optional=True),
    ),
)
CRASH = EventKind(
    "crash",
    Role.NODE,
    "the node kills itself at its --crash point",
    (
        _f("point", WORD, "the crash point"),
        _f("peer", WORD, "a PostgreSQL client: the cluster whose session it terminates", optional=True),
        _f("signal", WORD, "SIGKILL, or pg_terminate_backend"),
        _f("how", TEXT, "what was terminated, and when", optional=True),
    ),
)
STOPPED = EventKind("stopped", Role.NODE, "the node stopped cleanly")

# ------------------------------------------------------------------ participants
LISTENING = EventKind(
    "listening",
    Role.PARTICIPANT,
    "the participant (re)started and accepts connections: its readiness signal",
    (
        _f("addr", WORD, "the address it listens on"),
        _f("pid", INT),
        _f("name", WORD, "the name clients and peers know it by"),
        _f("storage_server", INT, "the value it holds"),
        _f("version", INT, "how many commits it holds"),
        _f("lock", WORD, "the transaction holding its lock, - if none"),
        _f("records", INT, "durable records restored"),
        _f("data", TEXT, "its storage file"),
        _f("loop", WORD, "the event loop it runs on (harness.node.event_loop)", optional=True),
        _f("store", WORD, "its store's id (harness.node.storage): a restart must find the same", optional=True),
        _f("cluster", LIST, "every member's name (harness.protocol.participant membership)", optional=True),
        _f("tls", WORD, "on: mutual TLS on every connection; off: loopback, trusted", optional=True),
    ),
)
CHECKPOINT = EventKind(
    "checkpoint",
    Role.PARTICIPANT,
    "every CHECKPOINT_EVERY durable writes: the store and a version it holds durably, so that a restart "
    "reads the log back only this far to find them (harness.node.guard)",
    (
        _f("writes", INT, "durable writes since the start"),
        _f("version", INT, "the highest committed version durable"),
        _f("records", INT, "records the participant holds in memory"),
        _f("store", WORD, "its store's id"),
    ),
)
RESTORED = EventKind("restored", Role.PARTICIPANT, "a durable record read back at a start", _RECORD)
RECOVERED = EventKind(
    "recovered",
    Role.PARTICIPANT,
    "what a restart found in storage",
    (
        _f("records", INT),
        _f("prepared", LIST, "transactions still prepared, - if none"),
        _f("storage_server", INT),
        _f("version", INT),
    ),
)
DURABLE = EventKind("durable", Role.PARTICIPANT, "a record made durable (after its fsync)", _RECORD)
FORGOTTEN = EventKind(
    "forgotten",
    Role.PARTICIPANT,
    "decided records dropped by compaction, durable with their clients' high-water marks",
    (
        _f("count", INT, "records dropped"),
        _f("txids", LIST, "the records dropped"),
        _f("marks", LIST, "client:seq, the new high-water marks"),
        _f("version", INT, "the version the summary holds"),
    ),
)
COMPACTED = EventKind(
    "compacted",
    Role.PARTICIPANT,
    "at a start, what compaction left in the store besides its records: its clients' high-water marks and "
    "the summary's version (a record durable before the start and missing after it, decided, and at or "
    "below its client's mark was forgotten, even if the 'forgotten' line was lost with the process)",
    (
        _f("marks", LIST, "client:seq, every high-water mark"),
        _f("version", INT, "the version the summary holds"),
    ),
)
BAD_INPUT = EventKind(
    "bad-input",
    Role.PARTICIPANT,
    "a line refused (their fault): answered with ERROR, the connection closed, nothing changed",
    (_PEER, _f("code", WORD, "the ERROR code"), _f("detail", TEXT)),
)
FATAL = EventKind("fatal", Role.PARTICIPANT, "storage failed: the participant stops (exit 3)", (_f("error", TEXT),))
ERROR = EventKind("error", Role.PARTICIPANT, "the participant could not start", (_f("error", TEXT),))
OVERLOAD = EventKind(
    "overload",
    Role.PARTICIPANT,
    "connections refused at the connection cap or the descriptor limit: one line per episode, not per connection",
    (
        _f("reason", WORD, "cap or descriptors"),
        _f("limit", INT, "the connection cap in force"),
        _f("open", INT, "connections open when it began"),
    ),
)
REJOINED = EventKind(
    "rejoined",
    Role.PARTICIPANT,
    "a participant started empty with --rejoin-empty learnt the decided state from every peer and votes again",
    (_f("storage_server", INT), _f("version", INT), _f("peers", LIST)),
)

# ------------------------------------------------------------------ clients
CONNECTED = EventKind(
    "connected",
    Role.CLIENT,
    "the client reached every participant: its readiness signal",
    (
        _f("pid", INT),
        _f("participants", LIST, "the participants' names, in order"),
        _f("loop", WORD, "the event loop it runs on (harness.node.event_loop)", optional=True),
    ),
)
BEGIN = EventKind(
    "begin",
    Role.CLIENT,
    "a transaction starts (Jepsen's invoke)",
    (
        _TXID,
        _f("value", INT),
        _f("participants", LIST),
        _f("prepare", WORD, "parallel or ordered", optional=True),
    ),
)
DECIDE = EventKind(
    "decide",
    Role.CLIENT,
    "the coordinator decided (before phase 2 is acknowledged)",
    (_TXID, _f("result", WORD, "committed, aborted or unknown"), _f("reason", TEXT)),
)
OUTCOME = EventKind(
    "outcome",
    Role.CLIENT,
    "what the client reports for one attempt (Jepsen's ok, fail or info)",
    (
        _TXID,
        _f("result", WORD, "committed, aborted or unknown"),
        _f("op", INT, "the operation (1, 2, ...): retries of one operation share it"),
        _f("attempt", INT, "1 for the first attempt"),
        _f("value", INT),
        _f("latency_ms", FLOAT, "from the first PREPARE to the last acknowledgement"),
        _f("cause", WORD, "harness.protocol.coordinator.Cause"),
        _f("nok", WORD, "with cause no-vote: the NOK's reason code (harness.protocol.messages.NokCode)", optional=True),
        _f("reason", TEXT, "for people", optional=True),
    ),
)
ERROR_REPLY = EventKind(
    "error-reply",
    Role.CLIENT,
    "a participant answered ERROR to no transaction in flight",
    (_PEER, _f("code", WORD), _f("detail", TEXT)),
)

# ------------------------------------------------------------------ the runner's faults
_FAULT_ID = (
    _f("id", INT, "the fault's number in the run"),
    _f("kind", WORD, "harness.experiment.faults.FaultKind"),
    _f("target", TEXT, "the node or links it hits"),
    _f("t", FLOAT, "seconds since the run started"),
)
FAULT = EventKind(
    "fault",
    Role.NEMESIS,
    "a fault starts",
    (
        *_FAULT_ID,
        _f("pid", INT, "the process killed or paused", optional=True),
        _f("point", WORD, "a crash point", optional=True),
        _f("links", LIST, "the proxy links cut or degraded", optional=True),
        _f("delay", FLOAT, "degraded links: seconds added to each message", optional=True),
        _f("drop", FLOAT, "degraded links: the chance a message is lost", optional=True),
        _f("pids", LIST, "the processes it hit (a PostgreSQL cluster's postmaster and backends)", optional=True),
        _f(
            "scheme",
            WORD,
            "--network netns: how the kernel makes it (a partition's shape, loss, tbf, netem)",
            optional=True,
        ),
        _f("rules", INT, "--network netns: the nftables rules and tc queues it took", optional=True),
    ),
)
HEAL = EventKind(
    "heal",
    Role.NEMESIS,
    "a fault ends",
    (
        *_FAULT_ID,
        _f("how", TEXT, "abandoned: a killed client was not replaced; or why a restart failed", optional=True),
    ),
)
DROP = EventKind(
    "drop",
    Role.PROXY,
    "the fault proxy dropped a message on a degraded link",
    (_f("link", WORD, "src->dst"), _f("forward", WORD, "True: towards dst"), _f("line", TEXT, "its first bytes")),
)
DB_ERROR = EventKind(
    "db-error",
    Role.NODE,
    "a PostgreSQL statement failed (a client or the resolver; harness.postgres)",
    (
        _f("peer", WORD, "the cluster", optional=True),
        _f("txid", WORD, optional=True),
        _f("step", WORD, "where: before-prepare, prepare, commit, rollback, ...", optional=True),
        _f("sqlstate", WORD, "PostgreSQL's error code", optional=True),
        _f("error", TEXT),
    ),
)
RESOLVED = EventKind(
    "resolved",
    Role.RESOLVER,
    "the resolver finished a prepared transaction its client abandoned",
    (
        _TXID,
        _f("decision", WORD, "committed or aborted"),
        _f("held", TEXT, "what each cluster held of it"),
        _f("age_s", FLOAT, "how long it had been prepared"),
    ),
)
CUT = EventKind(
    "cut",
    Role.PROXY,
    "the fault proxy severed a link at a protocol point",
    (_f("link", WORD), _f("after", TEXT, "the line it let through last")),
)

KINDS: dict[str, EventKind] = {
    k.name: k
    for k in (
        SEND,
        RECV,
        DISCONNECT,
        UNREACHABLE,
        TIMEOUT,
        CRASH,
        STOPPED,
        LISTENING,
        RESTORED,
        RECOVERED,
        DURABLE,
        FORGOTTEN,
        COMPACTED,
        CHECKPOINT,
        BAD_INPUT,
        FATAL,
        ERROR,
        OVERLOAD,
        REJOINED,
        CONNECTED,
        BEGIN,
        DECIDE,
        OUTCOME,
        ERROR_REPLY,
        FAULT,
        HEAL,
        DROP,
        CUT,
        DB_ERROR,
        RESOLVED,
    )
}
# Every event name; the checker flags a line whose event is not one of them.
EVENTS = frozenset(KINDS)
