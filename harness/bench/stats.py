"""Small statistics and progress output shared by the benchmark's modules."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from datetime import datetime


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def pct(values: Sequence[float], q: int) -> float:
    """The q-th percentile (1-99), inclusive method; the value itself for one sample."""
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def log_time(ts: str) -> float:
    """An event-log timestamp (2026-11-27T02:41:03.123456Z) as seconds since the epoch."""
    return datetime.fromisoformat(ts).timestamp()


def say(text: str) -> None:
    """Progress, on standard error: the table alone goes to standard output."""
    print(text, file=sys.stderr, flush=True)
