"""``python -m harness.sim``: explore every state of a small configuration, or run seeded random simulations.

Exit status: 0 when no property is violated, 1 with a counterexample (printed,
with the command that repeats it), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence
from typing import TextIO

from harness.console.cli import add_version
from harness.protocol.conflict import DEFAULT_CONFLICT
from harness.protocol.coordinator import Result
from harness.sim.explore import Bounds, Explorer, ExploreResult
from harness.sim.invariants import TCOMMIT_STATES_FOR_3_RMS, tcommit_reachable
from harness.sim.model import COORDINATORS, PARTICIPANTS, CoordinatorFactory, ParticipantFactory, compacting
from harness.sim.simulate import SimParams, Summary, random_runs
from harness.sim.variants import PARTICIPANT_VARIANTS, VARIANTS, coordinator_factory, participant_factory

_DEFAULTS = SimParams()
_BOUNDS = Bounds()


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m harness.sim",
        description="Check the 2PC protocol core (harness.protocol) by exhaustive exploration or seeded random "
        "simulation. Properties: AC1 agreement, AC2 stability, AC3 validity, clients told the truth, refinement "
        "of Gray and Lamport's TCommit, lock exclusion and every message through the real codec on every step; "
        "membership (the explorer: a stranger's PREPARE changes nothing); "
        "AC4 (a transaction with no fault and no conflict commits) on every report; liveness and identical "
        "replicas once faults stop; with --conflict wait-die, no cycle of waits on every step and no waiting "
        "PREPARE left once quiet.",
        epilog="Exit status: 0 no violation, 1 violation (the counterexample and the command that repeats it are "
        "printed), 2 usage error.",
    )
    add_version(top)
    sub = top.add_subparsers(dest="command", required=True, metavar="{explore,random}")

    ex = sub.add_parser(
        "explore",
        help="every reachable state of a small configuration (breadth-first: a shortest counterexample)",
        description="Explore every reachable state of P participants and C clients running one transaction each "
        "(client i writes t<i>=i), within the fault budgets. Model: messages to participants may be delivered "
        "in any order; a participant's reply is handled by its client at once unless lost or duplicated; timers "
        "fire and crashed participants restart when no message is in flight (see --early); a crash may fall "
        "between two actions of one step. Progress goes to stderr when it is a terminal.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ex.add_argument("--participants", type=_positive, default=3, help="participants (all in every transaction)")
    ex.add_argument(
        "--prepare",
        choices=sorted(COORDINATORS),
        default="parallel",
        help="the coordinator's PREPARE: to all at once, or the first participant before the others",
    )
    ex.add_argument("--clients", type=_non_negative, default=2, help="clients, one transaction each")
    ex.add_argument(
        "--crashes",
        type=_non_negative,
        default=_BOUNDS.crashes,
        help="node crashes (participants or clients), anywhere, including between two actions of one step",
    )
    ex.add_argument("--losses", type=_non_negative, default=_BOUNDS.losses, help="messages the network loses")
    ex.add_argument(
        "--duplicates", type=_non_negative, default=_BOUNDS.duplicates, help="messages the network delivers twice"
    )
    ex.add_argument(
        "--early",
        type=_non_negative,
        default=_BOUNDS.early,
        help="timer firings and restarts while messages are still in flight (a message slower than a timeout)",
    )
    ex.add_argument(
        "--max-states",
        type=_non_negative,
        default=0,
        help="stop after this many states (0: no limit); an incomplete exploration exits 1",
    )
    _variant_option(ex)
    ex.add_argument(
        "--no-liveness", action="store_true", help="skip the liveness check (the healing schedule from every state)"
    )
    ex.add_argument(
        "--no-symmetry",
        action="store_true",
        help="store every state, not one per class of states equal up to renaming clients and participants: "
        "slower, same verdicts, and the state count the reduced search computes from the classes' sizes",
    )
    ex.add_argument(
        "--workers",
        type=_positive,
        choices=(1, 2),
        default=min(os.cpu_count() or 1, 2),
        help="processes: 2 expands each large breadth-first level on two cores (a forked worker), with the same "
        "result as 1",
    )
    ex.add_argument(
        "--no-strangers",
        action="store_true",
        help="no PREPARE from outside the cluster (a subset of it, or naming an outsider), which must change "
        "nothing at the participant it reaches",
    )

    rnd = sub.add_parser(
        "random",
        help="seeded random simulations with loss, duplication, reordering, delay and crashes",
        description="Run RUNS simulations with seeds SEED, SEED+1, ...; each is exactly repeatable from its seed. "
        "Clients run transactions one after another, contending for the participants' locks; during the fault "
        "window messages are lost, duplicated and delayed (and so reordered) and nodes crash; then faults stop and "
        "the run must quiesce with every transaction decided. Times are virtual milliseconds. Progress goes to "
        "stderr when it is a terminal.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    rnd.add_argument("--runs", type=_positive, default=1000, help="number of runs")
    _variant_option(rnd)
    rnd.add_argument("--seed", type=int, default=1, help="seed of the first run")
    rnd.add_argument("--participants", type=_positive, default=_DEFAULTS.participants, help="participants")
    rnd.add_argument(
        "--prepare",
        choices=sorted(COORDINATORS),
        default="parallel",
        help="the coordinator's PREPARE: to all at once, or the first participant before the others",
    )
    rnd.add_argument("--clients", type=_non_negative, default=_DEFAULTS.clients, help="clients")
    rnd.add_argument(
        "--transactions", type=_non_negative, default=_DEFAULTS.transactions, help="transactions per client"
    )
    rnd.add_argument(
        "--compact",
        action="store_true",
        help="participants forget decided transactions (harness.protocol.participant, compaction)",
    )
    rnd.add_argument("--loss", type=_probability, default=_DEFAULTS.loss, help="chance a message is lost")
    rnd.add_argument(
        "--duplicate", type=_probability, default=_DEFAULTS.duplicate, help="chance a message is delivered twice"
    )
    rnd.add_argument(
        "--crashes",
        type=_non_negative,
        default=_DEFAULTS.crashes,
        help="at most this many crashes per run (drawn from 0..N)",
    )
    rnd.add_argument(
        "--mid-step",
        type=_probability,
        default=_DEFAULTS.mid_step,
        help="chance a crash falls between two actions of a step",
    )
    rnd.add_argument(
        "--max-delay", type=_positive, default=_DEFAULTS.max_delay, help="message delay upper bound (lower bound 1)"
    )
    rnd.add_argument(
        "--lazy-write",
        type=_positive,
        default=_DEFAULTS.lazy_write,
        help="a held commit record is written on its own within 1..N (unless a later write carries it first)",
    )
    rnd.add_argument(
        "--client-timeout", type=_positive, default=_DEFAULTS.client_timeout, help="coordinator phase timer"
    )
    rnd.add_argument(
        "--resolve-after", type=_positive, default=_DEFAULTS.resolve_after, help="participant resolve timer"
    )
    rnd.add_argument(
        "--fault-window",
        type=_non_negative,
        default=_DEFAULTS.fault_window,
        help="faults happen before this time, never after",
    )
    rnd.add_argument(
        "--max-events",
        type=_positive,
        default=_DEFAULTS.max_events,
        help="a run still busy after this many events fails liveness",
    )
    rnd.add_argument(
        "--full-trace",
        action="store_true",
        help="print every event of a failing run, not only those about its transaction",
    )
    return top


def _variant_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--conflict",
        choices=sorted(PARTICIPANTS),
        default=DEFAULT_CONFLICT.value,
        help="the participants' conflict policy: an immediate NOK, or wait-die (clients then send their age, "
        "their start order, and waits are checked for cycles)",
    )
    p.add_argument(
        "--variant",
        choices=sorted(VARIANTS) + sorted(PARTICIPANT_VARIANTS),
        help="a deliberately broken coordinator, or a broken wait-die participant (harness.sim.variants), to see "
        "the check fail",
    )


def _coordinators(args: argparse.Namespace) -> CoordinatorFactory:
    if args.variant in VARIANTS:
        return coordinator_factory(args.variant, ordered=args.prepare == "ordered")
    return COORDINATORS[args.prepare]


def _participants(args: argparse.Namespace) -> ParticipantFactory:
    if args.variant in PARTICIPANT_VARIANTS:
        return participant_factory(args.variant)
    return PARTICIPANTS[args.conflict]


def _command(options: dict[str, object]) -> str:
    """The command line that gives the same run: every option spelled out."""
    words = ["python", "-m", "harness.sim", str(options["command"])]
    for key, value in options.items():
        if key == "command" or value is False or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words)


def _progress_stream() -> TextIO | None:
    return sys.stderr if sys.stderr.isatty() else None


def explore(args: argparse.Namespace, out: TextIO) -> int:
    bounds = Bounds(crashes=args.crashes, losses=args.losses, duplicates=args.duplicates, early=args.early)
    err = _progress_stream()

    def progress(done: int, seen: int, depth: int, seconds: float) -> None:
        if err is not None:
            err.write(
                f"\r{done:,} states expanded, {seen:,} seen, depth {depth}, {seconds:.0f} s, {done / seconds:,.0f}/s "
            )
            err.flush()

    explorer = Explorer(
        args.participants,
        args.clients,
        bounds,
        coordinator_factory=_coordinators(args),
        participant_factory=_participants(args),
        max_states=args.max_states,
        liveness=not args.no_liveness,
        symmetry=not args.no_symmetry,
        strangers=not args.no_strangers,
        progress=progress,
        workers=args.workers,
    )
    result: ExploreResult = explorer.run()
    if err is not None:
        err.write("\n")
    tcommit = len(tcommit_reachable(args.participants))
    published = f" (TCommit.tla: {TCOMMIT_STATES_FOR_3_RMS})" if args.participants == 3 else ""
    classes = (
        f" (one per class up to renaming; {result.full_states:,} states without symmetry reduction, counted from "
        "the classes' sizes)"
        if result.symmetry
        else " (every state; without --no-symmetry, one per class up to renaming)"
    )
    out.write(
        f"explored {result.states:,} states{classes} ({result.transitions:,} transitions), depth {result.depth}, "
        f"in {result.seconds:.1f} s, {result.cpu_seconds:.1f} CPU s ({result.states_per_second:,.0f} states/s, "
        f"{result.states / max(result.cpu_seconds, 1e-9):,.0f} per CPU s)"
        f"{'' if result.complete or result.violations else ': INCOMPLETE (--max-states)'}\n"
        f"configuration: {args.participants} participants, {args.clients} clients, crashes={bounds.crashes} "
        f"losses={bounds.losses} duplicates={bounds.duplicates} early={bounds.early}\n"
        f"TCommit model: {tcommit} distinct states for {args.participants} resource manager"
        f"{'s' if args.participants != 1 else ''}{published}\n"
    )
    if result.violations:
        out.write("\ncounterexample (shortest):\n")
        step = 0
        for line in result.trace:
            if line.startswith("    "):
                out.write(f"        {line.strip()}\n")  # what the step did
            elif line.startswith(("VIOLATION", "--")):
                out.write(f"{line}\n")
            else:
                step += 1
                out.write(f"{step:>5}. {line}\n")
        out.write(f"\nrepeat with: {_command(vars(args))}\n")
        return 1
    if not result.complete:
        return 1
    checked = "safety on every transition" + (
        "; liveness and identical replicas from every state" if not args.no_liveness else ""
    )
    out.write(f"no violation ({checked})\n")
    return 0


def random(args: argparse.Namespace, out: TextIO) -> int:
    # Every SimParams field that has an option of the same name (the rest keep their defaults).
    params = SimParams(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SimParams) if f.name in args})
    err = _progress_stream()

    def progress(done: int, summary: Summary) -> None:
        if err is not None and (done % 100 == 0 or done == args.runs):
            err.write(f"\r{done:,}/{args.runs:,} runs, {summary.transactions:,} transactions ")
            err.flush()

    summary = random_runs(
        args.runs,
        args.seed,
        params,
        coordinator_factory=_coordinators(args),
        participant_factory=compacting(_participants(args)) if args.compact else _participants(args),
        progress=progress,
    )
    if err is not None:
        err.write("\n")
    r = summary.results
    out.write(
        f"{summary.runs:,} runs (seeds {args.seed}..{args.seed + summary.runs - 1}), {summary.transactions:,} "
        f"transactions: {r[Result.COMMITTED]:,} committed, {r[Result.ABORTED]:,} aborted, "
        f"{r[Result.UNKNOWN]:,} unknown (as reported to users)\n"
        f"faults: {summary.crashes:,} crashes, {summary.lost:,} messages lost, {summary.duplicated:,} duplicated; "
        f"{summary.events:,} events\n"
        f"{summary.cpu_seconds:.2f} CPU s: {summary.transactions_per_cpu_second:,.0f} transactions per CPU second\n"
    )
    failure = summary.failure
    if failure is None:
        out.write("no violation\n")
        return 0
    out.write(f"\nrun with seed {failure.seed} failed:\n")
    keep = failure.trace
    if failure.txid is not None and not args.full_trace:
        marks = (failure.txid, "crash", "restart", "faults stop", "VIOLATION")
        keep = [line for line in failure.trace if any(m in line for m in marks)]
        out.write(
            f"(events about {failure.txid}, crashes and restarts; --full-trace for all {len(failure.trace)} lines)\n"
        )
    for line in keep:
        out.write(line + "\n")
    repeat = {**vars(args), "runs": 1, "seed": failure.seed}
    out.write(f"\nrepeat with: {_command(repeat)}\n")
    return 1


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    out = out or sys.stdout
    if args.command == "explore":
        return explore(args, out)
    return random(args, out)


if __name__ == "__main__":
    sys.exit(main())
