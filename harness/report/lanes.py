"""Lanes: one line per participant (or cluster) and per client, the run's faults drawn on them in time.

Theory of operation. The faults of a run (nemesis.log, as the checker reads
them: kind, target, start and heal times in seconds from the start of the
run) are drawn over LANE_WIDTH columns (fewer on a narrow terminal): each node named by a fault's target or
links (server2, pg3, client1, ...) gets the fault's mark over its columns,
from its start to its heal (one column at least, so that instant faults such
as a terminated session show). Participants come first, in the run's order,
then the clients that were hit. Text only, so that the terminal and
summary.md show the same drawing.
"""

from __future__ import annotations

import re

from harness.verify.model import CheckReport

LANE_WIDTH = 60
# The mark of each fault kind (harness.experiment.faults.FaultKind values).
MARKS = {
    "kill-participant": "x",
    "kill-postmaster": "x",
    "kill-client": "k",
    "pause": "z",
    "partition": "/",
    "cut": "/",
    "terminate-backend": "!",
    "crash": "c",
}
_NODE = re.compile(r"\b(?:server|pg|client)\d+\b")


def _seconds(value: object) -> float | None:
    try:
        return float(str(value))
    except ValueError:
        return None


def lane_lines(report: CheckReport, columns: int | None = None) -> list[str]:
    """The lanes as text lines, or none if the run had no faults; within
    ``columns`` characters when given (a terminal's width)."""
    faults = report.faults
    if not faults:
        return []
    names = [r.node for r in report.replicas] + [n for f in faults for n in _NODE.findall(f"{f.get('target', '')}")]
    cols = LANE_WIDTH
    if columns is not None:  # narrowed so that a lane and its node's name fit
        cols = max(10, min(LANE_WIDTH, columns - max(map(len, names), default=0) - 2))
    ends = [t for f in faults for t in (_seconds(f.get("t")), _seconds(f.get("healed"))) if t is not None]
    span = max(ends, default=0.0) or 1.0
    lanes: dict[str, list[str]] = {r.node: ["."] * cols for r in report.replicas}
    for f in faults:
        start = _seconds(f.get("t"))
        if start is None:
            continue
        end = _seconds(f.get("healed"))
        end = span if end is None else end
        first = min(cols - 1, int(start / span * cols))
        last = max(first, min(cols - 1, int(end / span * cols)))
        mark = MARKS.get(str(f.get("kind")), "?")
        for node in _NODE.findall(f"{f.get('target', '')} {f.get('links', '')}"):
            lane = lanes.setdefault(node, ["."] * cols)
            for i in range(first, last + 1):
                lane[i] = mark
    width = max(len(n) for n in lanes)
    used = sorted({m for lane in lanes.values() for m in lane} - {"."})
    legend = ", ".join(f"{m} {'/'.join(k for k, v in MARKS.items() if v == m)}" for m in used)
    lines = [f"lanes: 0 to {span:.1f} s, {span / cols:.2f} s a column ({legend})"]
    lines += [f"{node.ljust(width)}  {''.join(lane)}" for node, lane in lanes.items()]
    return lines
