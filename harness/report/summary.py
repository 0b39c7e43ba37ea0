"""A checked run's summaries in its folder: summary.json for programs, summary.md for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.report.tables import render
from harness.verify.model import CheckReport


def summary(report: CheckReport, **extra: Any) -> dict[str, Any]:
    """The machine-readable summary (summary.json)."""
    run = report.run
    return {
        "verdict": report.verdict,
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
            }
            for c in report.clients
        ],
        "violations": [v.as_dict() for v in report.violations],
        "faults": report.faults,
        "resolved_by_participants": report.resolved_by_peers,
        "abandoned": report.abandoned,
        "longest_lock_held_s": round(report.longest_lock[0], 6),
        "log_lines_checked": report.lines,
        **extra,
    }


def write(report: CheckReport, folder: Path, **extra: Any) -> None:
    """summary.json and summary.md in the run folder."""
    (folder / "summary.json").write_text(json.dumps(summary(report, **extra), indent=2) + "\n")
    run = report.run
    md = [f"# Run {folder.name}", "", "```", str(run.get("command", "")), "```", "", render(report, fmt="github"), ""]
    (folder / "summary.md").write_text("\n".join(md))
