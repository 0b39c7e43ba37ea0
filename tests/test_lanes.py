"""The report's lanes: each fault drawn on the nodes it hit, over the run's time."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.report.lanes import LANE_WIDTH, lane_lines
from harness.verify.model import CheckReport, ReplicaStats


def report(faults: list[dict[str, object]]) -> CheckReport:
    replicas = [ReplicaStats(node=n, address="127.0.0.1:1") for n in ("pg1", "pg2", "pg3")]
    return CheckReport(Path("."), [], [], replicas, 0, {}, faults=faults)


@pytest.mark.timeout(10)
def test_each_fault_is_drawn_on_the_lanes_of_the_nodes_it_hit() -> None:
    lines = lane_lines(
        report(
            [
                {"kind": "kill-postmaster", "target": "pg2", "t": "0.0", "healed": "5.0"},
                {"kind": "cut", "target": "client3->pg3", "t": "5.0", "healed": "10.0"},
                {"kind": "terminate-backend", "target": "client1 at pg1", "t": "10.0", "healed": "10.0"},
            ]
        )
    )
    lanes = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert list(lanes) == ["pg1", "pg2", "pg3", "client3", "client1"]  # the clusters first, in order
    assert all(len(lane) == LANE_WIDTH for lane in lanes.values())
    half = LANE_WIDTH // 2
    assert lanes["pg2"][:half] == "x" * half and set(lanes["pg2"][half + 1 :]) == {"."}
    assert lanes["pg3"][half:] == "/" * half and lanes["client3"] == lanes["pg3"]
    assert lanes["pg1"].count("!") == 1 and lanes["pg1"].endswith("!")  # an instant fault: one column
    assert "0 to 10.0 s" in lines[0] and "! terminate-backend" in lines[0]


@pytest.mark.timeout(10)
def test_a_run_without_faults_has_no_lanes() -> None:
    assert lane_lines(report([])) == []
