"""``python -m harness.run``: the main job. Argument parsing only; see harness.experiment.runner.

Exit status: 0 consistent, 1 a violation, 2 a usage or infrastructure error,
130 interrupted (SIGINT or SIGTERM: the run stops, is checked as far as it went,
and its verdict says so).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.console.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, add_version, exit_with, fail
from harness.console.terminal import shell_wrap, terminal_width
from harness.experiment.config import Backend, RunConfig, with_default_timeouts
from harness.experiment.faults import (
    KERNEL_KINDS,
    NEMESIS_KINDS,
    POSTGRES_NEMESIS_KINDS,
    FaultKind,
    PartitionPoint,
    parse_crashes,
    parse_nemesis,
)
from harness.experiment.fired import unfired
from harness.experiment.processes import RunError
from harness.experiment.runner import run
from harness.experiment.workload import PrepareMode, RetryMode
from harness.hosts import netns
from harness.hosts.netns import NetworkMode
from harness.node.timing import (
    CLIENT_TIMEOUT_PER_DELAY,
    FAULT_CLIENT_TIMEOUT,
    FAULT_RESOLVE_AFTER,
    RESOLVE_AFTER_PER_DELAY,
)
from harness.protocol.conflict import ConflictPolicy
from harness.protocol.messages import VALUE_MAX, VALUE_MIN
from harness.report import files as report_files
from harness.report import summary, tables
from harness.sim import variants
from harness.verify.checker import check_run
from harness.verify.model import CheckError

PROG = "harness.run"
EPILOG = """\
examples:
  python -m harness.run --clients 5
  python -m harness.run --clients 20 --transactions 50 --retry backoff
  python -m harness.run --clients 3 --transactions 2 --delay 1     # the seed's pace, events streamed
  python -m harness.run --base-port 0                               # any free ports
  sudo python -m harness.run --network netns --nemesis partition,loss  # a namespace per node, kernel faults
  python -m harness.run --hosts hosts.toml                          # participants on remote hosts, over SSH
exit status: 0 consistent, 1 a violation was found, 2 usage or infrastructure error,
130 interrupted by Ctrl-C or SIGTERM (what was done is checked and reported).
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
    add_version(p)
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
        "--conflict",
        type=ConflictPolicy,
        choices=list(ConflictPolicy),
        default=d.conflict,
        help="what a participant does with a PREPARE that finds its lock held: vote NOK at once (nok), or let "
        f"an older transaction wait for the lock and a younger one die (wait-die) (default {d.conflict})",
    )
    p.add_argument(
        "--compact",
        action="store_true",
        help="participants forget decided transactions once their client moved on, so that their memory and "
        "storage stay flat; the checker then judges what the stores kept beside the logs (docs/protocol.md)",
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
        "for participants; pause = SIGSTOP/SIGCONT; partition = links cut through a fault proxy, or nftables drop "
        "rules with --network netns; loss, bandwidth = nftables random drops, a tc token bucket: --network netns "
        "only; delay = a participant's messages delayed by the proxy, or netem; default none)",
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
        "server2 right after server2's yes vote), partition:slow-vote (client1's link to server2 slower than its "
        "--timeout, so that server2's vote comes after the deadline)",
    )
    p.add_argument(
        "--watch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print the protocol's events as they happen, one short line each (default: on with --delay)",
    )
    p.add_argument(
        "--backend",
        type=Backend,
        choices=list(Backend),
        default=d.backend,
        help="the participants: our participant processes (ours), or PostgreSQL clusters made for the run, "
        "coordinated with prepared transactions (postgres: needs PostgreSQL and pip install '.[postgres]'; "
        "--nemesis then takes " + ",".join(POSTGRES_NEMESIS_KINDS) + ", and --crash client:terminate-before-prepare|"
        "terminate-during-prepare|terminate-after-prepare|terminate-during-commit|terminate-after-commit; "
        "docs/postgres.md)",
    )
    p.add_argument(
        "--network",
        type=NetworkMode,
        choices=list(NetworkMode),
        default=d.network,
        help="where nodes live: all on 127.0.0.1 (loopback, the default), or each in a network namespace of its "
        "own on a bridge the run makes, with partitions, loss and bandwidth limits made by the kernel (netns; "
        "needs root)",
    )
    p.add_argument(
        "--hosts",
        type=Path,
        default=None,
        metavar="FILE",
        help="run the participants on the remote hosts this inventory names, over SSH (docs/hosts.md)",
    )
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="remove the namespaces (and their rules) that netns runs killed before their end left behind, then exit",
    )
    p.add_argument(
        "--variant",
        choices=sorted(variants.VARIANTS),
        default=None,
        help="run a deliberately broken coordinator (harness.sim.variants), to see the checker catch it",
    )
    p.add_argument(
        "--tls",
        type=Path,
        default=None,
        metavar="DIR",
        help="mutual TLS between every node, with the certificates in DIR (python -m harness.certs DIR); "
        "with the CA's key there, each node gets a certificate made for this run",
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
    except KeyboardInterrupt:  # before the clients started, or while checking: nothing to report
        return fail(PROG, "interrupted; every process was stopped", EXIT_INTERRUPTED)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cleanup:
        return _cleanup()
    if args.network is NetworkMode.NETNS and (why := netns.check_root()) is not None:
        print(f"harness.run: {why}", file=sys.stderr)
        return 2
    for name, low in (("clients", 1), ("participants", 1), ("transactions", 1)):
        if getattr(args, name) < low:
            parser.error(f"--{name} must be {low} or more")
    if not (args.base_port == 0 or 1024 <= args.base_port <= 65535 - args.participants):
        parser.error("--base-port must be 0 or a port from 1024 that leaves room for every participant")
    if args.delay < 0:
        parser.error("--delay must be >= 0")
    if (args.timeout is not None and args.timeout <= 0) or (args.resolve_after is not None and args.resolve_after <= 0):
        parser.error("--timeout and --resolve-after must be > 0")
    if args.value is not None and not VALUE_MIN <= args.value <= VALUE_MAX:
        parser.error(f"--value must be within [{VALUE_MIN}, {VALUE_MAX}] (a signed 64-bit integer)")
    try:
        postgres = args.backend is Backend.POSTGRES
        nemesis = parse_nemesis(args.nemesis, POSTGRES_NEMESIS_KINDS if postgres else NEMESIS_KINDS + KERNEL_KINDS)
        parse_crashes(tuple(args.crash), args.participants, args.clients, postgres=postgres)
    except ValueError as e:
        parser.error(str(e))
    if postgres and (not args.durable or args.delay):
        parser.error("--no-durable and --delay do not apply to --backend postgres (its fsync stays on)")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be > 0")
    if args.network is not NetworkMode.NETNS and (kernel := [k for k in nemesis if k in KERNEL_KINDS]):
        parser.error(f"--nemesis {','.join(kernel)} needs --network netns (the kernel makes them)")
    if args.hosts is not None and args.network is NetworkMode.NETNS:
        parser.error("--hosts and --network netns do not go together: remote hosts have networks of their own")
    network_faults = [k for k in nemesis if k in (FaultKind.PARTITION, FaultKind.DELAY)]
    if args.hosts is not None and (network_faults or any(c.startswith("partition") for c in args.crash)):
        parser.error("--hosts: remote hosts take kills and pauses only (partitions and delay need the fault proxy "
                     "on loopback or the kernel in --network netns)")  # fmt: skip
    if postgres and args.variant:
        parser.error("--variant breaks our coordinator: a --backend postgres client does not run it")
    if postgres and (args.network is not NetworkMode.LOOPBACK or args.hosts is not None):
        parser.error("--backend postgres runs its clusters on loopback: no --network netns or --hosts")
    if args.hosts is not None and args.base_port == 0:
        parser.error("--hosts needs a fixed --base-port: remote participants bind their own ports")
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
            conflict=args.conflict,
            compact=args.compact,
            value=args.value,
            seed=args.seed,
            out=args.out,
            durable=args.durable,
            duration=args.duration,
            nemesis=nemesis,
            nemesis_interval=args.nemesis_interval,
            crash=tuple(args.crash),
            backend=args.backend,
            network=args.network,
            hosts=args.hosts,
            variant=args.variant,
            tls=args.tls,
        )
    )
    if args.timeout is not None:
        config.timeout = args.timeout
    if args.resolve_after is not None:
        config.resolve_after = args.resolve_after
    if config.variant:
        variants.install(config.variant)  # before the runner forks the nodes: they inherit it
    watch = args.watch if args.watch is not None else args.delay > 0
    try:
        result = run(config, watch=watch)
    except RunError as e:
        return fail(PROG, str(e))
    try:
        checked = check_run(result.folder)
    except CheckError as e:
        return fail(PROG, str(e))
    summary.write(checked, result.folder, elapsed_s=round(result.elapsed, 3))
    try:
        report_files.write_all(result.folder, checked)
    except OSError as e:  # the verdict stands without its page: say so, and go on
        print(f"harness.run: cannot write the report: {e}", file=sys.stderr)
    width = terminal_width(sys.stdout)
    print(
        tables.render(
            checked,
            width=width,
            extra=[
                "",
                f"run folder: {result.folder}  ({result.elapsed:.2f}s, {checked.lines} log lines checked)",
                f"report:     {result.folder / report_files.REPORT}  (history.jsonl, events.jsonl beside it)",
                *shell_wrap("repeat it:  ", result.command, width),
                "            (same flags, same seed: the same random choices, but not",
                "            always the same outcomes, which depend on timing)",
            ],
        )
    )
    missed = [] if result.interrupted else _unfired_crash_points(config, result.folder)
    for spec in missed:
        print(f"harness.run: crash point {spec} never fired: the run did not test it", file=sys.stderr)
    if not checked.consistent or missed:
        return EXIT_FAILED
    return EXIT_INTERRUPTED if result.interrupted else EXIT_OK


def _unfired_crash_points(config: RunConfig, folder: Path) -> list[str]:
    """The --crash targets that left no trace in the run folder (harness.experiment.fired)."""
    postgres = config.backend is Backend.POSTGRES
    crashes = parse_crashes(config.crash, config.participants, config.clients, postgres=postgres)
    if postgres or config.network is not NetworkMode.LOOPBACK or crashes.get("partition") == PartitionPoint.SLOW_VOTE:
        # Partitions no log line can show firing: the kernel's drop rule, the
        # byte relay's cut, a link slowed from the start.
        crashes.pop("partition", None)
    return unfired(folder, crashes)


def _cleanup() -> int:
    """``--cleanup``: remove what netns runs whose runner is gone left behind."""
    if (why := netns.check_root()) is not None:
        print(f"harness.run: {why}", file=sys.stderr)
        return 2
    removed = netns.cleanup_abandoned()
    print(f"removed {len(removed)} namespaces of runs that ended without cleaning up" + (": " if removed else ""))
    for name in removed:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    exit_with(main)
