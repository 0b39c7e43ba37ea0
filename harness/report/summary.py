"""A checked run's summaries in its folder: summary.json for programs, summary.md for people.

summary.json carries ``version`` (the harness that wrote it) and
``schema_version`` (the shape of the file: bumped when a field changes
meaning or type, so that a program reading old folders can tell). Every
figure is a JSON number, never a string. ``interrupted`` is true when the run
was stopped by SIGINT or SIGTERM and the verdict covers only what it had done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import __version__
from harness.report import fairness
from harness.report.tables import render
from harness.verify.model import CheckReport

# 1: the first shape; 2: numbers typed (fault times and pids were strings), version,
# schema_version, interrupted, throughput and fairness added.
SCHEMA_VERSION = 2


def summary(report: CheckReport, **extra: Any) -> dict[str, Any]:
    """The machine-readable summary (summary.json)."""
    run = report.run
    fair = fairness.fairness(report)
    return {
        "version": __version__,
        "schema_version": SCHEMA_VERSION,
        "verdict": report.verdict,
        "interrupted": report.interrupted is not None,
        "interrupted_by": report.interrupted,
        "unchecked": report.unchecked,
        "seed": run.get("seed"),
        "command": run.get("command"),
        "replicas": [
            {
                "node": r.node,
                "address": r.address,
                "storage_server": r.storage_server,
                "version": r.version,
                "lock": r.lock,
                "commits": r.commits,
                "aborts": r.aborts,
                "yes_votes": r.yes_votes,
                "no_votes": r.no_votes,
                "restarts": r.restarts,
            }
            for r in report.replicas
        ],
        "clients": [
            {
                "name": c.name,
                "attempted": c.attempted,
                "committed": c.committed,
                "aborted": c.aborted_total,
                "aborted_by_cause": dict(sorted(c.aborted.items())),
                "unknown": c.unknown,
                "abandoned": c.abandoned,
                "retries": c.retries,
                "latency_p50_ms": c.latency(0.5),
                "latency_p99_ms": c.latency(0.99),
                "committed_per_s": _round(fairness.per_second(c.committed, fairness.client_seconds(c))),
            }
            for c in report.clients
        ],
        "committed_per_s": _round(fairness.committed_per_second(report)),
        "client_seconds": _round(fairness.run_seconds(report)),
        "fairness": None
        if fair is None
        else {
            "fewest_commits": fair.fewest,
            "fewest_client": fair.fewest_client,
            "most_commits": fair.most,
            "most_client": fair.most_client,
            "jain_index": round(fair.jain, 4),
            "uneven": fair.uneven,
        },
        "violations": [v.as_dict() for v in report.violations],
        "faults": report.faults,
        "resolved_by_participants": report.resolved_by_peers,
        "abandoned": report.abandoned,
        "longest_lock_held_s": round(report.longest_lock[0], 6),
        "log_lines_checked": report.lines,
        **extra,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def write(report: CheckReport, folder: Path, **extra: Any) -> None:
    """summary.json and summary.md in the run folder."""
    (folder / "summary.json").write_text(json.dumps(summary(report, **extra), indent=2) + "\n")
    run = report.run
    md = [f"# Run {folder.name}", "", "```", str(run.get("command", "")), "```", "", render(report, fmt="github"), ""]
    (folder / "summary.md").write_text("\n".join(md))
