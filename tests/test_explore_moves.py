"""The explorer's memoised successors (harness.sim.moves) are the steps' own, state by state.

Each configuration is searched breadth-first through Moves.successors, and at
every state its answer is compared with the one built from the steps
themselves (steps, successor, canonical, pack): the same successors in the
same order, with the same class sizes and healing ranks, and None exactly
where a step breaks a property. The budgets between them reach every kind of
step (losses, duplicates, early timers, crashes inside steps and while a
client handles a reply), with symmetry and without, with ordered prepare
(its first participant never renamed) and with broken variants."""

from __future__ import annotations

from typing import Any

import pytest
from test_sim import BROKEN, SMALL

from harness.sim.explore import Bounds, Explorer
from harness.sim.model import ordered_coordinator


def _stepwise(ex: Explorer, data: bytes) -> tuple[int, list[tuple[bytes, int, int]]] | None:
    """What successors must answer, from the steps themselves."""
    state = ex.packer.unpack(data)
    items = []
    for step in ex.steps(state):
        nxt, violations = ex.successor(state, step)
        if violations:
            return None
        key = ex.packer.pack(ex.canonical(nxt))
        items.append((key, ex.group_size // ex.stabiliser, ex.heal_rank(step)))
    return len(items), items


def _compare_everywhere(ex: Explorer) -> tuple[int, int, int]:
    """Search every state through successors, comparing each answer; the
    states, the distinct heads among them, and the states with a violating step."""
    init = ex.packer.pack(ex.canonical(ex.initial_state()))
    queue, seen = [init], {init}
    heads = set()
    broken = 0
    for data in queue:
        heads.add(data[: ex.packer.net_at])
        fast = ex.successors(data)
        assert fast == _stepwise(ex, data)
        if fast is None:
            broken += 1
            continue
        for key, _, _ in fast[1]:
            if key not in seen:
                seen.add(key)
                queue.append(key)
    return len(queue), len(heads), broken


CONFIGS: dict[str, tuple[int, int, Bounds, dict[str, Any]]] = {
    "2x1, every fault": (2, 1, Bounds(crashes=1, losses=1, duplicates=1, early=1), {}),
    "2x2, a crash and a loss": (2, 2, Bounds(crashes=1, losses=1), {}),
    "2x2, a crash and a duplicate, no symmetry": (2, 2, Bounds(crashes=1, duplicates=1), {"symmetry": False}),
    "3x2, a crash, ordered prepare": (3, 2, Bounds(crashes=1), {"coordinator_factory": ordered_coordinator}),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_memoised_successors_are_the_steps_own(name: str) -> None:
    participants, clients, bounds, kwargs = CONFIGS[name]
    states, heads, broken = _compare_everywhere(Explorer(participants, clients, bounds, **kwargs))
    assert broken == 0
    # Heads recur, so most answers came from the memo, not from the steps.
    assert states > 2 * heads


@pytest.mark.parametrize("name", ["commit-with-missing-vote", "nok-releases-lock", "vote-before-persist"])
def test_memoised_successors_give_up_where_a_step_breaks_a_property(name: str) -> None:
    participants, clients, crashes = SMALL[name]
    states, _, broken = _compare_everywhere(Explorer(participants, clients, Bounds(crashes=crashes), **BROKEN[name]))
    assert broken > 0 and states > broken
