"""``python -m harness.bench``: how fast the harness runs, as multiples of what the machine allows.

Argument parsing only; harness.bench.suite carries out the measurements."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from harness.bench.conflict import (
    TARGET_FAIR_CLIENTS,
    TARGET_FAIR_RATIO,
    TARGET_JAIN,
    TARGET_NONE_STARVED_CLIENTS,
    TARGET_POLICY,
)
from harness.bench.floor import FSYNC_APPEND
from harness.bench.suite import (
    CHECKER_SMALL,
    QUICK,
    SECTIONS,
    STARVATION_RUN,
    TARGET_CHECKER,
    TARGET_CLIENT_MIB,
    TARGET_CONTENTION,
    TARGET_DURABLE_FSYNCS,
    TARGET_FLAT_MIB,
    TARGET_NOT_DURABLE,
    TARGET_PARTICIPANT_MIB,
    TARGET_STARTUP,
    Bench,
    BenchConfig,
)
from harness.bench.table import build_rows, render
from harness.console.cli import add_version
from harness.experiment.processes import RunError
from harness.protocol.conflict import ConflictPolicy
from harness.verify.model import CheckError

EPILOG = f"""\
what it measures (every figure beside its floor, measured in the same run):
  floor       one asyncio client, three forked echo processes, a real PREPARE and
              COMMIT per transaction; fsync of a {FSYNC_APPEND}-byte append in the data folder
  one-client  harness.experiment.runner.run with 1 client, durable and --no-durable: committed/s, p50/p99
  contention  harness.experiment.runner.run with --retry backoff for --duration seconds, per client count
  conflict    the same per --conflicts policy and --conflict-clients count: committed/s against one
              client's under the same policy, Jain's index, clients with no commit
  startup     3 participants and 5 clients ready, from the logs of a runner run
  memory      VmRSS of a participant and a client after --memory-transactions transactions
  state       compacting participants and one client for --state-transactions: VmRSS, store size and
              restart time sampled 20 times, growth per 100,000 transactions (flat: about 0)
  checker     check_run on a synthetic run folder of --checker-lines lines and one {CHECKER_SMALL}x smaller

targets: one client not durable >= {TARGET_NOT_DURABLE} x floor tx/s; durable p50 <= floor p50 +
{TARGET_DURABLE_FSYNCS} fsyncs; 20 clients >= {TARGET_CONTENTION} x one client's committed/s; every client commits
in a {STARVATION_RUN:g} s run; start-up < {TARGET_STARTUP} s; checker >= {TARGET_CHECKER:,} lines/s; participant <
{TARGET_PARTICIPANT_MIB:g} MiB, client < {TARGET_CLIENT_MIB:g} MiB; under {TARGET_POLICY},
{TARGET_FAIR_CLIENTS} clients: Jain >= {TARGET_JAIN} and >= {TARGET_FAIR_RATIO} x one client's committed/s;
{TARGET_NONE_STARVED_CLIENTS} clients: none with no commit; with compaction, participant and client
RSS within {TARGET_FLAT_MIB:g} MiB of their start after 1,000,000 transactions (the slope, extrapolated).

exit status: 0 measured (read the table for unmet targets), 1 a run or the checker's
folder was inconsistent, 2 a usage or infrastructure error (a section that failed is
named under the table; the sections after it are still measured).
"""


def build_parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = argparse.ArgumentParser(
        prog="python -m harness.bench",
        description="Measure the harness against the floor that the machine allows (docs/architecture.md), "
        "print a table and write the figures as JSON.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(p)
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a run of under a minute: {', '.join(f'{k}={v}' for k, v in QUICK.items())} "
        "(flags given explicitly still win)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help=f"repetitions of every measurement, medians reported (default {d.repeat})",
    )
    p.add_argument(
        "--transactions",
        type=int,
        metavar="N",
        help=f"transactions per floor repetition and per one-client run (default {d.transactions})",
    )
    p.add_argument(
        "--duration", type=float, metavar="S", help=f"seconds of each contention run (default {d.duration:g})"
    )
    p.add_argument(
        "--clients",
        type=_int_list,
        metavar="N,N,...",
        help=f"client counts of the contention runs, comma-separated (default {','.join(map(str, d.clients))})",
    )
    p.add_argument(
        "--conflict-clients",
        type=_int_list,
        metavar="N,N,...",
        help="client counts of the conflict runs, under each policy of --conflicts "
        f"(default {','.join(map(str, d.conflict_clients))})",
    )
    p.add_argument(
        "--conflicts",
        type=_policies,
        metavar="POLICY,...",
        help=f"conflict policies of the conflict runs (default {','.join(d.conflicts)})",
    )
    p.add_argument(
        "--checker-lines",
        type=int,
        metavar="N",
        help=f"lines of the large synthetic folder for the checker (default {d.checker_lines:,})",
    )
    p.add_argument(
        "--memory-transactions",
        type=int,
        metavar="N",
        help=f"transactions before reading resident memory (default {d.memory_transactions})",
    )
    p.add_argument(
        "--state-transactions",
        type=int,
        metavar="N",
        help=f"transactions of the state section's run (default {d.state_transactions:,})",
    )
    p.add_argument(
        "--fsyncs", type=int, metavar="N", help=f"fsync and storage-write samples per repetition (default {d.fsyncs})"
    )
    p.add_argument(
        "--only",
        type=_sections,
        metavar="SECTION,...",
        help=f"measure only these sections besides the floor, comma-separated: {','.join(SECTIONS)}",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="folder for run folders and data files; fsync is measured there (default: a new temporary folder)",
    )
    p.add_argument("--keep", action="store_true", help="keep the run folders instead of removing them at the end")
    p.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        dest="json_path",
        help="where to write the figures (default reports/bench-<UTC time>.json)",
    )
    return p


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give at least one client count, each 1 or more")
    return values


def _policies(text: str) -> tuple[ConflictPolicy, ...]:
    try:
        policies = tuple(ConflictPolicy(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        policies = ()
    if not policies:
        raise argparse.ArgumentTypeError(f"policies are {', '.join(ConflictPolicy)}; got {text!r}")
    return policies


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)}; got {text!r}")
    return names


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> BenchConfig:
    config = BenchConfig(quick=args.quick, keep=args.keep, workdir=args.workdir, json_path=args.json_path)
    if args.quick:
        config = replace(config, **QUICK)  # type: ignore[arg-type]
    given = {
        "repeat": args.repeat,
        "transactions": args.transactions,
        "duration": args.duration,
        "clients": args.clients,
        "conflict_clients": args.conflict_clients,
        "conflicts": args.conflicts,
        "checker_lines": args.checker_lines,
        "memory_transactions": args.memory_transactions,
        "state_transactions": args.state_transactions,
        "fsyncs": args.fsyncs,
        "sections": args.only,
    }
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    if config.repeat < 1 or config.transactions < 1 or config.fsyncs < 1:
        parser.error("--repeat, --transactions and --fsyncs must be 1 or more")
    if config.duration <= 0:
        parser.error("--duration must be > 0")
    if config.checker_lines < 100 * CHECKER_SMALL:
        parser.error(f"--checker-lines must be at least {100 * CHECKER_SMALL}")
    if config.memory_transactions < 2:
        parser.error("--memory-transactions must be 2 or more")
    if config.state_transactions < 40:
        parser.error("--state-transactions must be 40 or more")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_args(args, parser)
    json_path = config.json_path or Path("reports") / f"bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    if config.workdir is not None:
        config.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="harness-bench-", dir=config.workdir))
    started = time.monotonic()
    try:
        results = Bench(config, workdir).execute()
    except (RunError, CheckError) as e:
        print(f"harness.bench: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if not config.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    results["command"] = ["python", "-m", "harness.bench", *(sys.argv[1:] if argv is None else argv)]
    results["elapsed_s"] = time.monotonic() - started
    rows = build_rows(results, config)
    results["rows"] = [{**asdict(r), "ratio": r.ratio} for r in rows]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(render(results, config, rows))
    print(
        f"\nfigures: {json_path}   ({results['elapsed_s']:.0f} s)"
        + (f"; run folders kept in {workdir}" if config.keep else "")
    )
    if results["inconsistent_runs"]:
        return 1
    return 2 if results["failed_sections"] else 0


if __name__ == "__main__":
    sys.exit(main())
