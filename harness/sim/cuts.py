"""Where a crash may cut a node's step: the explorer's model of a crash inside a step.

Theory of operation. A node performs the actions of one step in order (its
persists, its replies and sends, its timers) and may crash between any two;
besides, any of the sends in the run of consecutive sends just before the
crash may not have left, since the driver writes each to its own connection
and nothing orders those writes. ``mid_step_cuts`` lists every distinct
outcome as a Cut (harness.sim.model): how many actions were reached, and
which of the last sends never left. This is a superset of crashing after the
first k actions, so what the explorer proves on it holds for the real driver;
and it is symmetric in the participants (harness.sim.symmetry).
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.protocol import coordinator as co
from harness.protocol.participant import CancelTimer, Close, Reply, SendPeer, StartTimer
from harness.sim.model import Cut

_SENDS = (Reply, SendPeer, co.Send)
# Actions a crash right after makes moot: timers die with the node, a finished
# coordinator and a crashed one are alike to everyone else.
_MOOT = (StartTimer, CancelTimer, Close, co.SetTimer, co.Finished)


def mid_step_cuts(actions: Sequence[object]) -> tuple[Cut, ...]:
    """Every distinct way a crash may cut a step that returned ``actions``.

    The node performs its actions in order and may crash between any two, as
    in the random simulator; and besides, any of the sends of a run of
    consecutive sends just before the crash may not have left (the driver
    writes them to different connections, which nothing orders). Two cuts
    that leave the same actions done, moot ones aside, are one; so is a cut
    that leaves nothing done (a crash before the step, a CRASH step) or
    everything (the step, then a CRASH step)."""
    n = len(actions)
    send = [isinstance(a, _SENDS) for a in actions]
    matters = 0
    for i, a in enumerate(actions):
        if not isinstance(a, _MOOT):
            matters |= 1 << i
    seen = {0, matters}
    out: list[Cut] = []
    for reached in range(1, n + 1):
        start = reached
        while start > 0 and send[start - 1]:
            start -= 1
        run = range(start, reached)  # the sends just before the crash
        for chosen in range(1 << len(run)):
            unsent = 0
            for b, i in enumerate(run):
                if chosen >> b & 1:
                    unsent |= 1 << i
            done = ((1 << reached) - 1) & ~unsent & matters
            if done not in seen:
                seen.add(done)
                out.append(Cut(reached, unsent))
    return tuple(out)
