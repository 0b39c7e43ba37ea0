"""Did each requested crash point fire? A run that asked for one and never reached it tested nothing.

Theory of operation. A node that reaches its crash point writes a ``crash``
line to its own log before it kills itself (harness.node.crash); the fault
proxy writes a ``cut`` line when it severs a link at a protocol point. So the
run folder alone says which ``--crash`` targets fired: :func:`unfired` lists the
others, and harness.run reports them and does not exit 0.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.events.schema import CRASH, CUT

PROXY_LOG = "proxy.log"


def _has_event(path: Path, event: str) -> bool:
    pattern = re.compile(rf"^\S+ \S+ {re.escape(event)}( |$)", re.M)
    try:
        return pattern.search(path.read_text(encoding="utf-8", errors="replace")) is not None
    except OSError:
        return False


def unfired(folder: Path, crashes: dict[str, str]) -> list[str]:
    """``target:POINT`` for every requested crash (harness.experiment.faults.parse_crashes) that left no trace."""
    missing = []
    for target, point in sorted(crashes.items()):
        if target == "partition":
            fired = _has_event(folder / PROXY_LOG, CUT.name)
        else:
            fired = _has_event(folder / f"{target}.log", CRASH.name)
        if not fired:
            missing.append(f"{target}:{point}")
    return missing
