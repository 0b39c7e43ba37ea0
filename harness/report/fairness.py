"""Throughput and fairness of a checked run, from its clients' logs.

Theory of operation. Throughput is commits per second of the time the
clients were at work: from the first ``begin`` line of any client to the last
``outcome`` line of any (per client: its own first and last), so that start-up,
settling and checking do not dilute it, and a re-check of the folder finds the
same figure. Fairness is how evenly the commits went to the clients: the
fewest and the most commits of one client, and Jain's index,
(sum x)^2 / (n * sum x^2), which is 1 when every client committed as many as
the others and 1/n when one client had them all (Jain, Chiu and Hawe, 1984).
A run whose index is below UNEVEN_BELOW (and whose clients committed enough
for the split to mean something) is flagged: under contention without
backoff, a few clients can starve the others, which is worth seeing even
though nothing is wrong with the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.verify.model import CheckReport, ClientStats
from harness.verify.reader import micros

# Jain's index below this is called uneven: one client in five getting nothing while
# the others share the rest evenly gives 0.8.
UNEVEN_BELOW = 0.8
# With fewer commits than this per client on average, any split looks uneven: not flagged.
UNEVEN_MIN_MEAN = 2


def jain_index(values: list[int]) -> float | None:
    """Jain's fairness index of ``values``; None when there are none, 1.0 when all are zero."""
    if not values:
        return None
    squares = sum(v * v for v in values)
    if squares == 0:
        return 1.0
    return sum(values) ** 2 / (len(values) * squares)


def seconds_between(start: str, end: str) -> float | None:
    """Seconds between two log timestamps, None if either does not parse."""
    a, b = micros(start), micros(end)
    return None if a < 0 or b < 0 else (b - a) / 1e6


def client_seconds(c: ClientStats) -> float | None:
    """Seconds from the client's first begin to its last outcome, None if it has not both."""
    if c.first_begin is None or c.last_outcome is None:
        return None
    return seconds_between(c.first_begin, c.last_outcome)


def per_second(count: int, seconds: float | None) -> float | None:
    """``count`` per second, None when no time was measured."""
    if seconds is None or seconds <= 0:
        return None
    return count / seconds


def run_seconds(report: CheckReport) -> float | None:
    """Seconds from the first begin of any client to the last outcome of any."""
    firsts = [c.first_begin for c in report.clients if c.first_begin]
    lasts = [c.last_outcome for c in report.clients if c.last_outcome]
    if not firsts or not lasts:
        return None
    return seconds_between(min(firsts), max(lasts))  # ISO timestamps of one width sort in time order


def committed_per_second(report: CheckReport) -> float | None:
    """The run's throughput: commits of every client per second of client work."""
    return per_second(sum(c.committed for c in report.clients), run_seconds(report))


@dataclass(frozen=True)
class Fairness:
    """How evenly commits went to the clients."""

    fewest: int
    fewest_client: str
    most: int
    most_client: str
    jain: float
    mean: float  # commits per client

    @property
    def uneven(self) -> bool:
        return self.jain < UNEVEN_BELOW and self.mean >= UNEVEN_MIN_MEAN


def fairness(report: CheckReport) -> Fairness | None:
    """The fairness of a run of two clients or more; None with fewer."""
    if len(report.clients) < 2:
        return None
    least = min(report.clients, key=lambda c: c.committed)
    most = max(report.clients, key=lambda c: c.committed)
    index = jain_index([c.committed for c in report.clients])
    assert index is not None
    mean = sum(c.committed for c in report.clients) / len(report.clients)
    return Fairness(least.committed, least.name, most.committed, most.name, index, mean)


def throughput_line(report: CheckReport) -> str | None:
    """``throughput: 812.4 committed/s (4061 commits in 5.00 s of client work)``, None if unmeasured."""
    seconds = run_seconds(report)
    rate = committed_per_second(report)
    if rate is None or seconds is None:
        return None
    committed = sum(c.committed for c in report.clients)
    return f"throughput: {rate:.1f} committed/s ({committed} commits in {seconds:.2f} s of client work)"


def fairness_line(report: CheckReport) -> str | None:
    """The fairness figures as one line, UNEVEN when Jain's index is low; None for one client."""
    f = fairness(report)
    if f is None:
        return None
    line = (
        f"fairness: fewest commits {f.fewest} ({f.fewest_client}), most {f.most} ({f.most_client}), "
        f"Jain's index {f.jain:.2f}"
    )
    if f.uneven:
        line += f" - UNEVEN (below {UNEVEN_BELOW}): some clients starved" + _remedy(report)
    return line


def _remedy(report: CheckReport) -> str:
    """What the run could add against starvation: a flag it did not have already."""
    config = report.run.get("config", {})
    if config.get("retry") != "backoff":
        return "; try --retry backoff"
    if config.get("conflict") != "wait-die" and config.get("backend") != "postgres":  # our participants' policy
        return "; try --conflict wait-die (the oldest operation waits instead of losing)"
    return ""
