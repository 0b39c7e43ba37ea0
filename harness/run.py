"""``python -m harness.run``: the main job. Argument parsing only; see harness.experiment.runner.

Exit status: 0 consistent, 1 a violation, 2 a usage or infrastructure error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.experiment.config import RunConfig, with_default_timeouts
from harness.experiment.faults import NEMESIS_KINDS, parse_crashes, parse_nemesis
from harness.experiment.fired import unfired
from harness.experiment.processes import RunError
from harness.experiment.runner import run
from harness.experiment.workload import PrepareMode, RetryMode
from harness.node.timing import (
    CLIENT_TIMEOUT_PER_DELAY,
    FAULT_CLIENT_TIMEOUT,
    FAULT_RESOLVE_AFTER,
    RESOLVE_AFTER_PER_DELAY,
)
from harness.report import summary, tables
from harness.verify.checker import check_run
from harness.verify.model import CheckError

EPILOG = """\
examples:
  python -m harness.run --clients 5
  python -m harness.run --clients 20 --transactions 50 --retry backoff
  python -m harness.run --clients 3 --transactions 2 --delay 1     # the seed's pace, to watch
  python -m harness.run --base-port 0                               # any free ports
exit status: 0 consistent, 1 a violation was found, 2 usage or infrastructure error.
"""


def build_parser() -> argparse.ArgumentParser:
    d = RunConfig()
    p = argparse.ArgumentParser(
        prog="python -m harness.run",
        description="Start participants and clients as processes, run a contention experiment, "
        "check that every replica agrees and every client was told the truth, and print tables.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--clients", type=int, default=d.clients, help=f"client processes (default {d.clients})")
    p.add_argument(
        "--participants", type=int, default=d.participants, help=f"participant processes (default {d.participants})"
    )
    p.add_argument(
        "--transactions", type=int, default=d.transactions, help=f"transactions per client (default {d.transactions})"
    )
    p.add_argument(
        "--base-port",
        type=int,
        default=d.base_port,
        help=f"participant i listens on BASE_PORT+i-1 (default {d.base_port}); 0 = any free ports (below the "
        "ephemeral range, so that a restarted participant finds its port free)",
    )
    p.add_argument(
        "--delay",
        type=float,
        default=d.delay,
        help="seconds nodes wait before each message, the seed's slow pace for watching (default 0)",
    )
    p.add_argument(
        "--retry",
        type=RetryMode,
        choices=list(RetryMode),
        default=d.retry,
        help=f"after an abort a client gives up, or retries with exponential backoff and jitter (default {d.retry})",
    )
    p.add_argument(
        "--prepare",
        type=PrepareMode,
        choices=list(PrepareMode),
        default=d.prepare,
        help="how clients send PREPARE: all at once (parallel), the first participant before the others "
        "(ordered: a round trip more, but votes never split under contention), or parallel until a NOK "
        f"vote, then ordered for a while (adaptive; default {d.prepare})",
    )
    p.add_argument(
        "--value",
        type=int,
        default=None,
        help="the value every transaction writes (default: a distinct value per transaction, "
        "client*1000000+n, so the final value names its transaction)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for every random choice of the run (default: drawn, and printed to repeat it)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="run folder to create (default reports/<UTC time>-<short id>/)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds a client waits for votes before asking the silent participants "
        f"(default {d.timeout:g}; {FAULT_CLIENT_TIMEOUT:g} with faults; + {CLIENT_TIMEOUT_PER_DELAY} x delay)",
    )
    p.add_argument(
        "--resolve-after",
        type=float,
        default=None,
        help="seconds a prepared participant waits for the decision before asking its peers "
        f"(default {d.resolve_after:g}; {FAULT_RESOLVE_AFTER:g} with faults; + {RESOLVE_AFTER_PER_DELAY} x delay)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="run transactions for this many seconds per client, instead of --transactions",
    )
    p.add_argument(
        "--nemesis",
        default="",
        help="faults to inject, comma-separated: " + ",".join(NEMESIS_KINDS) + " (kill = SIGKILL, then a restart "
        "for participants; pause = SIGSTOP/SIGCONT; partition = links cut through a fault proxy; default none)",
    )
    p.add_argument(
        "--nemesis-interval",
        type=float,
        default=d.nemesis_interval,
        help=f"seconds between faults, roughly; each lasts a fraction of it (default {d.nemesis_interval})",
    )
    p.add_argument(
        "--crash",
        action="append",
        default=[],
        metavar="TARGET:POINT[:N]",
        help="kill a node at a protocol point, at its Nth passage (repeatable): participant:before-vote|"
        "after-vote|after-commit-reply|after-commit, client:after-prepare|after-first-commit (participant means "
        "server1 and client client1; serverN or clientN name another), partition:between-phases (cut client1 from "
        "server2 right after server2's yes vote)",
    )
    p.add_argument(
        "--tls",
        type=Path,
        default=None,
        metavar="DIR",
        help="mutual TLS between every node, with the certificates in DIR (python -m harness.certs DIR)",
    )
    p.add_argument(
        "--no-durable",
        dest="durable",
        action="store_false",
        help="do not fsync votes and commits (faster; survives kill -9, not a power cut)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("harness.run: interrupted; every process was stopped", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, low in (("clients", 1), ("participants", 1), ("transactions", 1)):
        if getattr(args, name) < low:
            parser.error(f"--{name} must be {low} or more")
    if not (args.base_port == 0 or 1024 <= args.base_port <= 65535 - args.participants):
        parser.error("--base-port must be 0 or a port from 1024 that leaves room for every participant")
    if args.delay < 0:
        parser.error("--delay must be >= 0")
    if (args.timeout is not None and args.timeout <= 0) or (args.resolve_after is not None and args.resolve_after <= 0):
        parser.error("--timeout and --resolve-after must be > 0")
    try:
        nemesis = parse_nemesis(args.nemesis)
        parse_crashes(tuple(args.crash), args.participants, args.clients)
    except ValueError as e:
        parser.error(str(e))
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be > 0")
    if args.nemesis_interval <= 0:
        parser.error("--nemesis-interval must be > 0")
    if args.tls is not None and ("partition" in args.nemesis or any(c.startswith("partition") for c in args.crash)):
        parser.error("--tls cannot be combined with partitions: the fault proxy forwards lines it must read")
    config = with_default_timeouts(
        RunConfig(
            clients=args.clients,
            participants=args.participants,
            transactions=args.transactions,
            base_port=args.base_port,
            delay=args.delay,
            retry=args.retry,
            prepare=args.prepare,
            value=args.value,
            seed=args.seed,
            out=args.out,
            durable=args.durable,
            duration=args.duration,
            nemesis=nemesis,
            nemesis_interval=args.nemesis_interval,
            crash=tuple(args.crash),
            tls=args.tls,
        )
    )
    if args.timeout is not None:
        config.timeout = args.timeout
    if args.resolve_after is not None:
        config.resolve_after = args.resolve_after
    try:
        result = run(config)
    except RunError as e:
        print(f"harness.run: {e}", file=sys.stderr)
        return 2
    try:
        checked = check_run(result.folder)
    except CheckError as e:
        print(f"harness.run: {e}", file=sys.stderr)
        return 2
    summary.write(checked, result.folder, elapsed_s=round(result.elapsed, 3))
    print(
        tables.render(
            checked,
            extra=[
                "",
                f"run folder: {result.folder}  ({result.elapsed:.2f}s, {checked.lines} log lines checked)",
                f"repeat it:  {result.command}",
            ],
        )
    )
    missed = unfired(result.folder, parse_crashes(config.crash, config.participants, config.clients))
    for spec in missed:
        print(f"harness.run: crash point {spec} never fired: the run did not test it", file=sys.stderr)
    return 0 if checked.consistent and not missed else 1


if __name__ == "__main__":
    sys.exit(main())
