"""``python -m harness.bench`` works: a smoke test in a tiny configuration, not a timed test.

It proves the command runs every section end to end (floor, one client,
contention, start-up, memory, checker), prints its table, writes its JSON,
stops every process it started, and that the checker's synthetic folder is
consistent and shaped like a real run's. No figure is compared with a target:
the machine running the tests is shared and noisy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, child_env

from harness.bench.suite import Bench, BenchConfig
from harness.bench.synth import synthesize_run
from harness.bench.table import build_rows, render
from harness.experiment.processes import RunError
from harness.verify.checker import check_run

TINY = [
    "--quick",
    "--state-transactions",
    "100",
    "--repeat",
    "1",
    "--transactions",
    "20",
    "--duration",
    "0.3",
    "--clients",
    "2",
    "--conflict-clients",
    "1,2",
    "--checker-lines",
    "8000",
    "--memory-transactions",
    "10",
    "--fsyncs",
    "3",
]


@pytest.mark.timeout(180)
def test_bench_quick_measures_every_section_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.bench", *TINY, "--workdir", str(tmp_path / "work"), "--json", str(out)],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=150,  # about 15 s alone; the margin is for a loaded machine
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "x floor" in proc.stdout and "targets met:" in proc.stdout
    assert f"figures: {out}" in proc.stdout
    results = json.loads(out.read_text())
    assert results["inconsistent_runs"] == []
    floor = results["floor"]
    assert floor["tx_s"] > 0 and 0 < floor["p50_ms"] <= floor["p99_ms"] and floor["fsync_ms"] > 0
    one = results["one_client"]
    assert one["durable"]["reps"][0]["committed"] == 20 and one["not_durable"]["reps"][0]["committed"] == 20
    assert one["not_durable"]["marginal_cpu_ms_per_tx"] > 0  # start-up and stop left out (a short run's CPU)
    many = results["participants"]
    assert many["3"]["one_client"]["reps"][0]["committed"] == 20 == many["9"]["one_client"]["reps"][0]["committed"]
    assert many["9"]["echo"]["tx_s"] > 0 and many["3"]["echo"]["tx_s"] > 0
    assert results["contention"]["2"]["committed"] >= 1
    for policy in ("nok", "wait-die"):
        conflict = results["conflict"][f"{policy}-2"]
        assert conflict["committed"] >= 1 and 0 < conflict["jain"] <= 1 and conflict["ratio_to_one"] > 0
    assert 0 < results["startup"]["participants_ready_s"] <= results["startup"]["all_ready_s"]
    assert results["memory"]["participant_mib"] > 0 and results["memory"]["client_mib"] > 0
    assert results["state"]["committed"] == 100 and results["state"]["records_end"] <= 3
    checker = results["checker"]
    assert checker["large"]["lines"] >= 8000 and checker["small"]["lines"] >= 2000
    assert checker["shapes"]["synthetic_not_in_real"] == []
    assert checker["large"]["peak_mib"] >= checker["large"]["floor_peak_mib"] > 0
    # the peak against 100 MB both ways: the whole process's, and above importing the checker
    peaks = {r["figure"]: r for r in results["rows"] if r["section"] == "checker" and r["unit"] == "MiB"}
    above = peaks.pop("peak memory above importing the checker")
    [whole] = peaks.values()
    assert whole["value"] - whole["floor"] == pytest.approx(above["value"])
    assert whole["target"] == above["target"] == "<= 95.4 MiB (100 MB)"
    # every figure of the table has its row in the JSON, with its ratio to the floor where it has one
    assert {r["section"] for r in results["rows"]} >= {
        "floor",
        "one client",
        "9 participants",
        "memory",
        "start-up",
        "checker",
    }
    assert all(r["ratio"] is not None for r in results["rows"] if r["floor"] is not None)
    # the run folders were removed (no --keep)
    assert not any((tmp_path / "work").iterdir())


def test_synthetic_checker_folder_is_consistent_and_its_size_as_asked(tmp_path: Path) -> None:
    lines = synthesize_run(tmp_path / "run", 5000)
    assert 5000 <= lines < 5000 + 100  # whole rounds of transactions
    report = check_run(tmp_path / "run")
    assert report.violations == []
    assert report.lines == lines
    committed = sum(c.committed for c in report.clients)
    assert committed > sum(c.aborted_total for c in report.clients) > 0  # contended, as a real run


def test_bench_refuses_bad_flags() -> None:
    for flags in (["--repeat", "0"], ["--clients", "0"], ["--only", "nothing"]):
        proc = subprocess.run(
            [sys.executable, "-m", "harness.bench", *flags], cwd=ROOT, env=child_env(), capture_output=True, text=True
        )
        assert proc.returncode == 2, (flags, proc.stderr)


def test_contention_verdict_says_when_its_runs_were_short() -> None:
    # --quick judges 20 clients on 1 s runs: the target column says so, and a
    # 10 s run's does not (the figures are made up; only the wording is tested).
    floor = {"tx_s": 3000.0, "p50_ms": 0.3, "p99_ms": 0.5, "fsync_ms": 0.2, "storage_write_ms": 0.4}
    one = {k: {"tx_s": 300.0, "p50_ms": 3.0, "p99_ms": 5.0, "cpu_ms_per_tx": 3.0} for k in ("durable", "not_durable")}

    def target(duration: float) -> str:
        run = {
            "clients": 20,
            "duration_s": duration,
            "committed_s": 100.0,
            "aborts_per_commit": 1.0,
            "cpu_ms_per_commit": 5.0,
            "min_client_commits": 1,
        }
        results = {"floor": {**floor, "cpu_ms_per_tx": 0.5}, "one_client": one, "contention": {"20": run}}
        (row,) = [r for r in build_rows(results, BenchConfig()) if r.figure == "committed/s"]
        assert row.met is False
        return row.target

    assert target(1.0).endswith("(1 s runs)")
    assert "runs)" not in target(10.0)


def test_state_section_samples_a_compacting_cluster(tmp_path: Path) -> None:
    from harness.bench.state import slope_per_100k, state

    assert slope_per_100k([0, 1, 2], [1.0, 2.0, 3.0]) == pytest.approx(100_000)
    assert slope_per_100k([5], [1.0]) == 0.0
    out = state(tmp_path, 120, 20)
    assert out["committed"] == 120 and len(out["samples"]) == 6
    assert out["records_end"] <= 3  # compacted: the last transactions only, not 120 records
    assert out["participant_mib_end"] > 0 and out["client_mib_end"] > 0


def test_a_failed_section_is_reported_and_the_others_still_measured(tmp_path: Path) -> None:
    bench = Bench(BenchConfig(), tmp_path)
    bench.results["failed_sections"] = {}

    def half_then_fail() -> None:
        bench.results["state"] = {"transactions": 10}  # half measured when the run fails
        raise RunError("the state client exited (code -9)")

    def measured() -> None:
        bench.results["startup"] = {"participants_ready_s": 0.1, "all_ready_s": 0.2}

    bench.measure_section("state", half_then_fail)
    bench.measure_section("startup", measured)
    assert "state" not in bench.results  # no half-measured section reaches the table
    assert bench.results["failed_sections"] == {"state": "the state client exited (code -9)"}
    assert bench.results["startup"]["all_ready_s"] == 0.2
    machine = {"cpus": 2, "python": "3.11", "workdir": "w", "workdir_filesystem": "ext4"}
    results = {**bench.results, "machine": {**machine, "load_at_start": [0.0] * 3, "load_at_end": [0.0] * 3}}
    text = render(results, bench.config, [])
    assert "FAILED: section state, not measured: the state client exited (code -9)" in text
