"""The conflict-policy figures of the benchmark: fairness and throughput under contention, per policy.

Theory of operation. For each conflict policy (harness.protocol.conflict) and
each client count, one run through the runner with ``--retry backoff`` for a
fixed time: an aborted operation is retried (with its age kept), so that the
commits each client gets measure how the lock was shared, not how often a
client gave up. Each run gives its committed/s (of client work, as the run's
own report counts it), its ratio to the committed/s of one client under the
same policy in the same benchmark run, Jain's index of commits per client
(harness.report.fairness), and how many clients committed nothing.

Targets (issue "fair contention"): under wait-die, 20 clients for 10 s keep
Jain's index >= 0.9 and at least 0.7 x one client's committed/s, and with 100
clients none commits nothing. The default policy is measured beside it.
"""

from __future__ import annotations

import math
from typing import Any

from harness.bench.measure import Runs
from harness.experiment.config import RunConfig
from harness.experiment.workload import RetryMode
from harness.protocol.conflict import ConflictPolicy
from harness.report.fairness import committed_per_second, jain_index

TARGET_POLICY = ConflictPolicy.WAIT_DIE
TARGET_FAIR_CLIENTS = 20
TARGET_JAIN = 0.9  # Jain's index of commits per client, 20 clients
TARGET_FAIR_RATIO = 0.7  # 20 clients: at least this times one client's committed/s, same policy
TARGET_NONE_STARVED_CLIENTS = 100  # with this many clients, none commits nothing

CONFLICT_CLIENTS = (1, 20, 100)  # the client counts measured under each policy
CONFLICTS = (ConflictPolicy.NOK, ConflictPolicy.WAIT_DIE)


def conflict_run(runs: Runs, clients: int, duration: float, policy: ConflictPolicy) -> dict[str, Any]:
    """One contended run under ``policy``: committed/s, Jain's index, clients with no commit."""
    _, report, cpu = runs.run(
        f"conflict-{policy}-{clients}",
        RunConfig(clients=clients, retry=RetryMode.BACKOFF, duration=duration, conflict=policy),
    )
    commits = [c.committed for c in report.clients]
    committed = sum(commits)
    aborted = sum(c.aborted_total for c in report.clients)
    return {
        "committed": committed,
        "committed_s": committed_per_second(report) or 0.0,
        "jain": jain_index(commits) or 0.0,
        "zero_clients": sum(1 for n in commits if n == 0),
        "min_client_commits": min(commits),
        "aborts_per_commit": aborted / committed if committed else math.inf,
        "cpu_ms_per_commit": cpu / max(1, committed) * 1000,
        "consistent": report.consistent,
    }


def with_ratios(results: dict[str, dict[str, Any]]) -> None:
    """Add to each run its ratio to the one-client committed/s of its policy (when measured)."""
    for r in results.values():
        single = results.get(f"{r['policy']}-1")
        r["ratio_to_one"] = r["committed_s"] / single["committed_s"] if single and single["committed_s"] else None
