"""Tables of a checked run, for the terminal and for summary.md.

One function builds each table's rows; the terminal and the markdown file
print the same rows in two tabulate formats, so they cannot disagree. On the
terminal, ``render`` is given the width to fit (harness.console.terminal):
columns that are zero everywhere are hidden, tables too wide are folded,
prose is wrapped and quoted log lines are cut.
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from harness.console.terminal import clip, fit_table, wrap
from harness.report import fairness
from harness.report.lanes import lane_lines
from harness.verify.model import CheckReport, ClientStats

ABORT_CAUSES = ("no vote: locked", "no vote: other", "timeout", "unreachable")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def client_rows(report: CheckReport) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "client",
        "attempted",
        "committed",
        "commit/s",
        *(f"aborted\n{c.removeprefix('no vote: ')}" for c in ABORT_CAUSES),
        "unknown",
        "abandoned",
        "retries",
        "p50 ms",
        "p99 ms",
    ]
    rows: list[list[Any]] = []
    for c in report.clients:
        other = c.aborted_total - sum(c.aborted.get(k, 0) for k in ABORT_CAUSES)
        aborted = [c.aborted.get(k, 0) + (other if k == "no vote: other" else 0) for k in ABORT_CAUSES]
        rows.append(
            [
                c.name,
                c.attempted,
                c.committed,
                _rate(fairness.per_second(c.committed, fairness.client_seconds(c))),
                *aborted,
                c.unknown,
                c.abandoned,
                c.retries,
                _ms(c.latency(0.5)),
                _ms(c.latency(0.99)),
            ]
        )
    if len(rows) > 1:
        counts = [1, 2, *range(4, 4 + len(ABORT_CAUSES) + 3)]  # the columns that add up
        totals = {i: sum(r[i] for r in rows) for i in counts}
        everyone = ClientStats(name="all", latencies_ms=[x for c in report.clients for x in c.latencies_ms])
        p50, p99 = everyone.latency(0.5), everyone.latency(0.99)
        rate = _rate(fairness.committed_per_second(report))
        rows.append(["all", totals[1], totals[2], rate, *(totals[i] for i in counts[2:]), _ms(p50), _ms(p99)])
    return headers, rows


def replica_rows(report: CheckReport) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "replica",
        "address",
        "storage_server",
        "version",
        "commits",
        "aborts",
        "yes\nvotes",
        "no\nvotes",
        "restarts",
    ]
    rows = [
        [r.node, r.address, r.storage_server, r.version, r.commits, r.aborts, r.yes_votes, r.no_votes, r.restarts]
        for r in report.replicas
    ]
    return headers, rows


def fault_rows(report: CheckReport) -> tuple[list[str], list[list[Any]]]:
    headers = ["fault", "kind", "target", "at s", "healed at s"]
    rows = [
        [
            f["id"],
            f["kind"] + (f" ({f['point']})" if f.get("point") else ""),
            f["target"],
            f["t"],
            f["healed"] if f["healed"] is not None else "NOT HEALED",
        ]
        for f in report.faults
    ]
    return headers, rows


def figure_lines(report: CheckReport) -> list[str]:
    """Throughput and fairness; figures about faults and termination, for runs that had any."""
    lines = [line for line in (fairness.throughput_line(report), fairness.fairness_line(report)) if line]
    if report.faults:
        lines.append(
            f"faults injected: {len(report.faults)}, all healed before the checks"
            if all(f["healed"] is not None for f in report.faults)
            else f"faults injected: {len(report.faults)}, SOME NOT HEALED"
        )
    if report.resolved_by_peers or report.faults:
        postgres = report.run.get("backend") == "postgres"
        who = "the resolver decided" if postgres else "the participants decided among themselves"
        lines.append(f"transactions {who}, without their client: {report.resolved_by_peers}")
    if report.abandoned:
        lines.append(f"transactions abandoned by a client killed before it could report: {report.abandoned}")
    held, node, txid = report.longest_lock
    if node is not None:
        lines.append(f"longest time a lock was held: {held * 1000:.1f} ms ({node}, {txid})")
    return lines


def verdict_line(report: CheckReport) -> str:
    if report.interrupted:
        found = (
            "no violation in what it did"
            if report.consistent
            else f"VIOLATION: {len(report.violations)} violation{'s' if len(report.violations) != 1 else ''} found"
        )
        return f"INTERRUPTED ({report.interrupted}): {found}; checked as far as it went"
    if report.consistent:
        values = {(r.storage_server, r.version) for r in report.replicas}
        ((value, version),) = values if len(values) == 1 else {(None, None)}
        return f"CONSISTENT: {len(report.replicas)} replicas hold storage_server={value} (version {version})"
    return f"VIOLATION: {len(report.violations)} violation{'s' if len(report.violations) != 1 else ''} found"


def unchecked_lines(report: CheckReport) -> list[str]:
    """What an interrupted run's folder could not show, one line each."""
    return [f"- not checked: {note}" for note in report.unchecked]


def violation_lines(report: CheckReport, limit: int = 50) -> list[str]:
    lines = []
    for v in report.violations[:limit]:
        lines.append(f"- [{v.kind}] {v.message}")
        lines += [f"    {e}" for e in v.evidence]
    if len(report.violations) > limit:
        lines.append(f"- ... and {len(report.violations) - limit} more (summary.json lists them all)")
    return lines


def render(report: CheckReport, fmt: str = "simple", extra: list[str] | None = None, width: int | None = None) -> str:
    """The whole report as text: client table, replica table, figures, verdict.
    ``width``: fit it to that many columns (harness.console.terminal); None: lines as long as they come."""
    markdown = fmt == "github"

    def table(headers: list[str], rows: list[list[Any]], keep: tuple[int, ...] = (0,)) -> str:
        if markdown:  # markdown headers hold no line breaks
            return tabulate(rows, headers=[h.replace("\n", " ") for h in headers], tablefmt=fmt)
        return fit_table(headers, rows, width, keep=keep, fmt=fmt)

    headers, rows = client_rows(report)
    out = [table(headers, rows, keep=(0, 1, 2)), ""]
    headers, rows = replica_rows(report)
    out += [table(headers, rows, keep=(0, 1, 2, 3)), ""]
    if report.faults:
        headers, rows = fault_rows(report)
        out += [table(headers, rows, keep=tuple(range(len(headers)))), ""]
        lanes = lane_lines(report, None if markdown else width)
        out += ["```", *lanes, "```", ""] if markdown else [*lanes, ""]
    prose = figure_lines(report)
    prose += [""] if prose else []
    prose.append(verdict_line(report))
    prose += unchecked_lines(report)
    for line in violation_lines(report):
        prose += [clip(line, width)] if line.startswith("    ") else wrap(line, width)  # a quoted log line: cut
    prose += extra or []
    out += [part for line in prose for part in wrap(line, width)]
    return "\n".join(out)
