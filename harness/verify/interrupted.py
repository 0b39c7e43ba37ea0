"""Interrupted runs: what their folders can still prove, and what they cannot be held to.

Theory of operation. A run stopped by SIGINT or SIGTERM (run.json says which),
or whose runner died before it read the participants' storage (no
final_states.json), is checked like any other: every rule that the logs
prove still holds of what it did. Its clients were stopped mid-way, though,
and its participants maybe before they could finish what those had begun or
before their storage was read: so termination (no lock held, nothing left
prepared) and the comparison with storage cannot be asked of it. Those
violations become notes of what was not checked, printed under the verdict,
never dropped silently.
"""

from __future__ import annotations

from harness.verify.model import CheckReport, ViolationKind

# What an interrupted run cannot be held to: its clients were stopped mid-way and the
# participants maybe before they could finish what those had begun, or before their
# storage was read. Every other rule (stability, agreement, validity, durability, the
# lock, clients told the truth against what storage was read) still holds of what it did.
_EXCUSED = {
    ViolationKind.MISSING_FINAL_STATE: "storage not read at the end: replicas and clients' outcomes not compared to it",
    ViolationKind.LOCK_HELD: "termination: a lock held, or no STATUS answer, at the end",
    ViolationKind.UNDECIDED: "termination: a transaction still prepared at the end",
}


def excuse_interrupted(report: CheckReport, why: str) -> CheckReport:
    """``report`` of a run stopped by ``why``: the violations it could not avoid become
    notes of what was not checked (CheckReport.unchecked)."""
    kept, notes = [], []
    for v in report.violations:
        if v.kind in _EXCUSED:
            notes.append(f"{_EXCUSED[v.kind]} ({v.message})")
        else:
            kept.append(v)
    report.violations = kept
    report.interrupted = why
    report.unchecked = notes
    return report
