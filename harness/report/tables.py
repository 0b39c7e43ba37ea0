"""Tables of a checked run, for the terminal and for summary.md.

One function builds each table's rows; the terminal and the markdown file
print the same rows in two tabulate formats, so they cannot disagree.
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from harness.report.lanes import lane_lines
from harness.verify.model import CheckReport, ClientStats

ABORT_CAUSES = ("no vote: locked", "no vote: other", "timeout", "unreachable")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def client_rows(report: CheckReport) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "client",
        "attempted",
        "committed",
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
                *aborted,
                c.unknown,
                c.abandoned,
                c.retries,
                _ms(c.latency(0.5)),
                _ms(c.latency(0.99)),
            ]
        )
    if len(rows) > 1:
        totals = [sum(r[i] for r in rows) for i in range(1, 3 + len(ABORT_CAUSES) + 3)]
        everyone = ClientStats(name="all", latencies_ms=[x for c in report.clients for x in c.latencies_ms])
        p50, p99 = everyone.latency(0.5), everyone.latency(0.99)
        rows.append(["all", *totals, _ms(p50), _ms(p99)])
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
    """Figures about faults and termination, for runs that had any."""
    lines = []
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
    if report.consistent:
        values = {(r.storage_server, r.version) for r in report.replicas}
        ((value, version),) = values if len(values) == 1 else {(None, None)}
        return f"CONSISTENT: {len(report.replicas)} replicas hold storage_server={value} (version {version})"
    return f"VIOLATION: {len(report.violations)} violation{'s' if len(report.violations) != 1 else ''} found"


def violation_lines(report: CheckReport, limit: int = 50) -> list[str]:
    lines = []
    for v in report.violations[:limit]:
        lines.append(f"- [{v.kind}] {v.message}")
        lines += [f"    {e}" for e in v.evidence]
    if len(report.violations) > limit:
        lines.append(f"- ... and {len(report.violations) - limit} more (summary.json lists them all)")
    return lines


def render(report: CheckReport, fmt: str = "simple", extra: list[str] | None = None) -> str:
    """The whole report as text: client table, replica table, verdict."""
    headers, rows = client_rows(report)
    if fmt == "github":  # markdown headers hold no line breaks
        headers = [h.replace("\n", ": ") for h in headers]
    out = [tabulate(rows, headers=headers, tablefmt=fmt), ""]
    headers, rows = replica_rows(report)
    if fmt == "github":
        headers = [h.replace("\n", " ") for h in headers]
    out += [tabulate(rows, headers=headers, tablefmt=fmt), ""]
    if report.faults:
        headers, rows = fault_rows(report)
        out += [tabulate(rows, headers=headers, tablefmt=fmt), ""]
        lanes = lane_lines(report)
        out += ["```", *lanes, "```", ""] if fmt == "github" else [*lanes, ""]
    figures = figure_lines(report)
    out += [*figures, ""] if figures else []
    out.append(verdict_line(report))
    out += violation_lines(report)
    out += extra or []
    return "\n".join(out)
