"""One experiment's configuration, its defaults, and the command line that repeats it."""

from __future__ import annotations

import enum
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from harness.experiment.faults import FaultKind
from harness.experiment.workload import PrepareMode, RetryMode
from harness.hosts.netns import NetworkMode
from harness.node.address import BASE_PORT, DEFAULT_HOST
from harness.node.timing import CLIENT_TIMEOUT, RESOLVE_AFTER, client_timeout, resolve_after
from harness.protocol.conflict import DEFAULT_CONFLICT, ConflictPolicy


class Backend(enum.StrEnum):
    """What the participants are (``--backend``)."""

    OURS = "ours"  # our participant processes (harness.node)
    POSTGRES = "postgres"  # PostgreSQL clusters with prepared transactions (harness.postgres)


@dataclass
class RunConfig:
    """One experiment. Defaults give a run that shows contention in seconds."""

    clients: int = 5
    participants: int = 3
    transactions: int = 10  # per client
    base_port: int = BASE_PORT  # participant i listens on base_port + i - 1; 0 = any free ports (listen_socket)
    host: str = DEFAULT_HOST
    delay: float = 0.0
    retry: RetryMode = RetryMode.NONE
    prepare: PrepareMode = PrepareMode.ADAPTIVE  # the clients' --prepare
    conflict: ConflictPolicy = DEFAULT_CONFLICT  # the participants' --conflict
    compact: bool = False  # the participants' --compact: forget decided transactions (docs/protocol.md)
    value: int | None = None  # None: a distinct value per transaction (transaction_value)
    seed: int | None = None  # None: drawn at random and recorded
    out: Path | None = None  # None: reports/<UTC time>-<short id>
    timeout: float = CLIENT_TIMEOUT  # the clients' --timeout (harness.node.timing)
    resolve_after: float = RESOLVE_AFTER  # the participants' --resolve-after
    durable: bool = True
    duration: float | None = None  # seconds of transactions per client, instead of ``transactions``
    nemesis: tuple[FaultKind, ...] = ()  # fault kinds (harness.experiment.faults.NEMESIS_KINDS)
    nemesis_interval: float = 1.0  # seconds between faults, roughly
    crash: tuple[str, ...] = ()  # targeted crash points, e.g. "participant:after-vote"
    backend: Backend = Backend.OURS
    network: NetworkMode = NetworkMode.LOOPBACK  # where nodes live (harness.experiment.placement)
    hosts: Path | None = None  # an inventory of remote hosts for the participants (docs/hosts.md)
    variant: str | None = None  # a deliberately broken core (harness.sim.variants), installed by harness.run
    tls: Path | None = None  # mutual TLS between every node with the certificates here (harness.certs)

    @property
    def faulty(self) -> bool:
        """Faults are injected: the timeouts default to their shorter forms."""
        return bool(self.nemesis or self.crash)


def with_default_timeouts(config: RunConfig) -> RunConfig:
    """``config`` with the timeouts its delay and faults call for (harness.node.timing)."""
    return replace(
        config,
        timeout=client_timeout(config.delay, config.faulty),
        resolve_after=resolve_after(config.delay, config.faulty),
    )


def repeat_command(config: RunConfig, seed: int) -> str:
    """The command line that repeats this run (same flags, same seed)."""
    defaults = with_default_timeouts(
        replace(RunConfig(), delay=config.delay, nemesis=config.nemesis, crash=config.crash)
    )
    plain = RunConfig()
    args = ["python", "-m", "harness.run"]
    for name, value in asdict(config).items():
        # The faults are in ``defaults`` only for the timeouts they imply: compared with
        # them, a run's own --nemesis and --crash would vanish from its repeat command.
        default = getattr(plain if name in ("nemesis", "crash") else defaults, name)
        if name in ("seed", "out") or value == default:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{name.replace('_', '-')}")
        elif name == "nemesis":
            args += [flag, ",".join(value)]
        elif name == "crash":
            for spec in value:
                args += [flag, spec]
        else:
            args += [flag, str(value)]
    args += ["--seed", str(seed)]
    return shlex.join(args)


def default_folder() -> Path:
    """reports/<UTC time>-<short random id>: sorted by time, never the same twice."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Path("reports") / f"{stamp}-{secrets.token_hex(3)}"


def transaction_value(client_index: int, op: int) -> int:
    """The default value: client 3's 7th transaction writes 3000007, so the
    final storage_server names the transaction that wrote it."""
    return client_index * 1_000_000 + op


def client_values(client_index: int, fixed: int | None) -> Callable[[int], int]:
    """Operation number -> the value client ``client_index`` writes (``fixed``, or transaction_value)."""
    if fixed is not None:
        return lambda op: fixed
    return lambda op: transaction_value(client_index, op)
