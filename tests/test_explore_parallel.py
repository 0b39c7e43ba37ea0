"""The explorer on two cores (harness.sim.parallel) finds what it finds on one, in the same order.

Levels are split from two states up here (split_at=2), so that every level but
the first is shared with the forked worker, including those where a broken
variant breaks a property."""

from __future__ import annotations

import pytest
from test_sim import BROKEN, SMALL

from harness.sim.explore import Bounds, Explorer, ExploreResult


def _figures(result: ExploreResult) -> tuple[object, ...]:
    return (
        result.states,
        result.full_states,
        result.transitions,
        result.depth,
        result.complete,
        [(v.rule, v.detail) for v in result.violations],
        result.trace,
    )


def test_two_workers_explore_the_same_states_as_one() -> None:
    serial = Explorer(3, 2, Bounds(crashes=1)).run()
    parallel = Explorer(3, 2, Bounds(crashes=1), workers=2, split_at=2).run()
    assert serial.ok and serial.complete
    assert _figures(parallel) == _figures(serial)


def test_two_workers_stop_where_one_does_at_max_states() -> None:
    serial = Explorer(3, 2, Bounds(crashes=1), max_states=5_000).run()
    parallel = Explorer(3, 2, Bounds(crashes=1), max_states=5_000, workers=2, split_at=2).run()
    assert not serial.complete
    assert _figures(parallel) == _figures(serial)


@pytest.mark.parametrize("name", sorted(set(BROKEN) - {"forget-no-vote"}))
def test_two_workers_give_every_broken_variant_the_same_trace(name: str) -> None:
    participants, clients, crashes = SMALL[name]
    serial = Explorer(participants, clients, Bounds(crashes=crashes), **BROKEN[name]).run()
    parallel = Explorer(participants, clients, Bounds(crashes=crashes), workers=2, split_at=2, **BROKEN[name]).run()
    assert not serial.ok, name
    assert _figures(parallel) == _figures(serial)
