"""The benchmark's table: every figure beside its floor, its ratio and its target."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from harness.bench import report as rb
from harness.bench.conflict import (
    TARGET_FAIR_CLIENTS,
    TARGET_FAIR_RATIO,
    TARGET_JAIN,
    TARGET_NONE_STARVED_CLIENTS,
    TARGET_POLICY,
)
from harness.bench.floor import FSYNC_APPEND, PARTICIPANTS, STARTUP_CLIENTS
from harness.bench.suite import (
    CHECKER_SMALL,
    STARVATION_RUN,
    TARGET_CHECKER,
    TARGET_CHECKER_MIB,
    TARGET_CLIENT_MIB,
    TARGET_CONTENTION,
    TARGET_CONTENTION_CLIENTS,
    TARGET_CPU,
    TARGET_DURABLE_FSYNCS,
    TARGET_DURABLE_RATIO,
    TARGET_FLAT_MIB,
    TARGET_MANY_PARTICIPANTS,
    TARGET_NOT_DURABLE,
    TARGET_PARTICIPANT_MIB,
    TARGET_STARTUP,
    BenchConfig,
)


@dataclass
class Row:
    """One line of the table: a figure, its floor, and its target if it has one."""

    section: str
    figure: str
    value: float
    unit: str
    floor: float | None = None  # the same kind of figure, measured on the floor in this run
    floor_name: str = ""
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        return self.value / self.floor if self.floor else None


def _conflict_rows(conflict: dict[str, Any] | None) -> list[Row]:
    """Per policy and client count: committed/s against one client's (same policy), Jain, starved clients."""
    rows: list[Row] = []
    for r in (conflict or {}).values():
        n, policy = r["clients"], r["policy"]
        section = f"{policy}, {n} clients"
        single = r["committed_s"] / r["ratio_to_one"] if r.get("ratio_to_one") else None
        aimed = policy == TARGET_POLICY and n == TARGET_FAIR_CLIENTS
        short = f" ({r['duration_s']:g} s runs)" if r["duration_s"] < STARVATION_RUN else ""
        target, met = "", None
        if aimed and single is not None:
            target, met = f">= {TARGET_FAIR_RATIO} x one client{short}", r["committed_s"] >= TARGET_FAIR_RATIO * single
        rows.append(Row(section, "committed/s", r["committed_s"], "committed/s", single, "1 client", target, met))
        if n > 1:
            target, met = (f">= {TARGET_JAIN}{short}", r["jain"] >= TARGET_JAIN) if aimed else ("", None)
            rows.append(Row(section, "Jain's index of commits per client", r["jain"], "", None, "", target, met))
            starved = policy == TARGET_POLICY and n >= TARGET_NONE_STARVED_CLIENTS
            target, met = (f"0{short}", r["zero_clients"] == 0) if starved else ("", None)
            rows.append(
                Row(section, "clients with no commit (worst run)", r["zero_clients"], "count", None, "", target, met)
            )
    return rows


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if unit in ("tx/s", "lines/s", "committed/s"):
        return f"{value:,.0f}"
    if unit in ("ms", "ms CPU"):
        return f"{value:.2f}"
    if unit == "s":
        return f"{value:.3f}"
    if unit == "MiB":
        return f"{value:.1f}"
    if unit == "":
        return f"{value:.2f}"
    return f"{value:g}"


def build_rows(results: dict[str, Any], config: BenchConfig) -> list[Row]:
    rows: list[Row] = []
    f = results["floor"]
    floor_tx, floor_p50, floor_p99, fsync = f["tx_s"], f["p50_ms"], f["p99_ms"], f["fsync_ms"]
    rows += [
        Row("floor", "echo fan-out, 3 processes x 2 rounds", floor_tx, "tx/s", floor_tx, "echo tx/s"),
        Row("floor", "echo fan-out latency p50", floor_p50, "ms", floor_p50, "echo p50"),
        Row("floor", "echo fan-out latency p99", floor_p99, "ms", floor_p99, "echo p99"),
        Row("floor", f"fsync of a {FSYNC_APPEND}-byte append (median)", fsync, "ms", fsync, "fsync"),
        Row("floor", "storage durable write, 1 record", f["storage_write_ms"], "ms", fsync, "fsync"),
        Row("floor", "CPU per tx, client + 3 echo processes", f["cpu_ms_per_tx"], "ms CPU", f["cpu_ms_per_tx"], "echo"),
    ]
    floor_cpu = f["cpu_ms_per_tx"]
    one = results.get("one_client")
    if one:
        d, n = one["durable"], one["not_durable"]
        limit = floor_p50 + TARGET_DURABLE_FSYNCS * fsync
        rows += [
            Row(
                "one client",
                "not durable: committed/s",
                n["tx_s"],
                "tx/s",
                floor_tx,
                "echo tx/s",
                f">= {TARGET_NOT_DURABLE} x floor = {TARGET_NOT_DURABLE * floor_tx:,.0f}",
                n["tx_s"] >= TARGET_NOT_DURABLE * floor_tx,
            ),
            Row("one client", "not durable: latency p50", n["p50_ms"], "ms", floor_p50, "echo p50"),
            Row("one client", "not durable: latency p99", n["p99_ms"], "ms", floor_p99, "echo p99"),
            Row(
                "one client", "not durable: CPU per tx, all processes", n["cpu_ms_per_tx"], "ms CPU", floor_cpu, "echo"
            ),
            *_marginal_cpu("one client", n, floor_cpu, "echo"),
            Row("one client", "durable: committed/s", d["tx_s"], "tx/s", floor_tx, "echo tx/s"),
            Row(
                "one client",
                "durable: latency p50",
                d["p50_ms"],
                "ms",
                floor_p50,
                "echo p50",
                f"<= floor p50 + {TARGET_DURABLE_FSYNCS} fsyncs = {limit:.2f}",
                d["p50_ms"] <= limit,
            ),
            Row("one client", "durable: latency p99", d["p99_ms"], "ms", floor_p99, "echo p99"),
            Row("one client", "durable: CPU per tx, all processes", d["cpu_ms_per_tx"], "ms CPU", floor_cpu, "echo"),
            Row("one client", "durable - not durable p50, in fsyncs", (d["p50_ms"] - n["p50_ms"]) / fsync, ""),
            _durable_ratio("one client", d, n),
        ]
    uv = results.get("uvloop")
    if uv:  # the same on uvloop, each beside the floor on the same loop
        uf = uv["floor"]
        rows += [
            Row("uvloop", "echo fan-out, 3 processes x 2 rounds", uf["tx_s"], "tx/s", floor_tx, "asyncio echo"),
            Row("uvloop", "CPU per tx, client + 3 echo processes", uf["cpu_ms_per_tx"], "ms CPU", floor_cpu, "asyncio"),
        ]
        if "one_client" in uv:
            d, n = uv["one_client"]["durable"], uv["one_client"]["not_durable"]
            rows += [
                Row("uvloop", "one client not durable: committed/s", n["tx_s"], "tx/s", uf["tx_s"], "uvloop echo"),
                Row(
                    "uvloop",
                    "one client not durable: CPU per tx",
                    n["cpu_ms_per_tx"],
                    "ms CPU",
                    uf["cpu_ms_per_tx"],
                    "uvloop",
                ),
                *_marginal_cpu("uvloop", n, uf["cpu_ms_per_tx"], "uvloop echo", floor_cpu),
                Row("uvloop", "one client durable: committed/s", d["tx_s"], "tx/s", uf["tx_s"], "uvloop echo"),
                _durable_ratio("uvloop", d, n),
            ]
    rows += _participant_rows(results.get("participants"))
    mem = results.get("memory")
    if mem:
        echo = mem["echo_mib"]
        per = f"after {config.memory_transactions} tx"
        rows += [
            Row(
                "memory",
                f"participant VmRSS {per}",
                mem["participant_mib"],
                "MiB",
                echo,
                "echo RSS",
                f"< {TARGET_PARTICIPANT_MIB:g}",
                mem["participant_mib"] < TARGET_PARTICIPANT_MIB,
            ),
            Row(
                "memory",
                f"client VmRSS {per}",
                mem["client_mib"],
                "MiB",
                echo,
                "echo RSS",
                f"< {TARGET_CLIENT_MIB:g}",
                mem["client_mib"] < TARGET_CLIENT_MIB,
            ),
            Row(
                "memory",
                "participant private (USS)",
                mem["participant_private_mib"],
                "MiB",
                mem["echo_private_mib"],
                "echo USS",
            ),
            Row(
                "memory", "client private (USS)", mem["client_private_mib"], "MiB", mem["echo_private_mib"], "echo USS"
            ),
            Row("memory", "participant growth per 1000 tx", mem["participant_growth_mib_per_1000"], "MiB"),
            Row("memory", "client growth per 1000 tx", mem["client_growth_mib_per_1000"], "MiB"),
        ]
    flat = results.get("state")
    if flat:
        per = "per 100k tx"
        million = 10  # 100k steps in a million transactions: the target extrapolates the slope
        roles = (("participant", " (compacting)"), ("client", ""))
        rows += [
            Row(
                "state",
                f"{role} RSS growth {per}{note}",
                flat[f"{role}_mib_per_100k"],
                "MiB",
                target=f"x{million} < {TARGET_FLAT_MIB:g}",
                met=abs(flat[f"{role}_mib_per_100k"]) * million < TARGET_FLAT_MIB,
            )
            for role, note in roles
        ]
        rows += [
            Row(
                "state",
                f"{role} RSS after {flat['transactions']:,} tx",
                flat[f"{role}_mib_end"],
                "MiB",
                flat[f"{role}_mib_start"],
                f"at {flat['start_at']:,} tx",
            )
            for role, _ in roles
        ]
        rows += [
            Row("state", f"store size growth {per}", flat["store_kib_per_100k"], "KiB"),
            Row("state", f"restart (load + restore) growth {per}", flat["restart_ms_per_100k"], "ms"),
            Row("state", f"records left after {flat['transactions']:,} tx", flat["records_end"], "records"),
        ]
    st = results.get("startup")
    if st:
        rows += [
            Row(
                "start-up",
                f"{PARTICIPANTS} participants + {STARTUP_CLIENTS} clients ready (runner)",
                st["all_ready_s"],
                "s",
                st["floor_s"],
                "fork+ready",
                f"< {TARGET_STARTUP}",
                st["all_ready_s"] < TARGET_STARTUP,
            ),
            Row(
                "start-up", "of which participants ready", st["participants_ready_s"], "s", st["floor_s"], "fork+ready"
            ),
            Row("start-up", "python -c 'import harness.run'", st["import_s"], "s", st["python_s"], "python -c pass"),
        ]
    cont = results.get("contention")
    if cont:
        single = one["durable"]["tx_s"] if one else None
        for key, r in cont.items():
            n = r["clients"]
            target, met = "", None
            if n == TARGET_CONTENTION_CLIENTS and single is not None:
                target = f">= {TARGET_CONTENTION} x one client = {TARGET_CONTENTION * single:,.0f}"
                met = r["committed_s"] >= TARGET_CONTENTION * single
            starve = f">= 1 in a {STARVATION_RUN:g} s run"
            if r["duration_s"] < STARVATION_RUN:
                # Short runs (--quick) weigh the start of every client at once and
                # the retries of their last transactions: say so next to the verdict.
                starve += f" (this run: {r['duration_s']:g} s)"
                if target:
                    target += f" ({r['duration_s']:g} s runs)"
            rows += [
                Row(
                    f"{key} clients", "committed/s", r["committed_s"], "committed/s", floor_tx, "echo tx/s", target, met
                ),
                Row(f"{key} clients", "aborts per commit", r["aborts_per_commit"], ""),
                Row(
                    f"{key} clients",
                    "CPU per commit, all processes",
                    r["cpu_ms_per_commit"],
                    "ms CPU",
                    floor_cpu,
                    "echo",
                ),
                Row(
                    f"{key} clients",
                    "min commits of any client (worst run)",
                    r["min_client_commits"],
                    "count",
                    None,
                    "",
                    starve,
                    r["min_client_commits"] >= 1,
                ),
            ]
    rows += _conflict_rows(results.get("conflict"))
    ch = results.get("checker")
    if ch:
        for label in ("large", "small"):
            r = ch[label]
            target, met = "", None
            if label == "large":
                target, met = f">= {TARGET_CHECKER:,}", r["lines_s"] >= TARGET_CHECKER
            rows.append(
                Row(
                    "checker",
                    f"check_run on {r['lines']:,} lines",
                    r["lines_s"],
                    "lines/s",
                    r["floor_lines_s"],
                    "read+split",
                    target,
                    met,
                )
            )
        rows.append(Row("checker", f"linearity (time/line, {CHECKER_SMALL}x larger / smaller)", ch["linearity"], ""))
        large = ch["large"]
        if "peak_mib" in large:
            # 100 MB, read both ways: the whole process, and above importing the checker.
            target = f"<= {TARGET_CHECKER_MIB:.1f} MiB (100 MB)"
            above = large["peak_mib"] - large["floor_peak_mib"]
            rows += [
                Row(
                    "checker",
                    f"peak memory checking {large['lines']:,} lines",
                    large["peak_mib"],
                    "MiB",
                    large["floor_peak_mib"],
                    "import only",
                    target,
                    large["peak_mib"] <= TARGET_CHECKER_MIB,
                ),
                Row(
                    "checker",
                    "peak memory above importing the checker",
                    above,
                    "MiB",
                    None,
                    "",
                    target,
                    above <= TARGET_CHECKER_MIB,
                ),
            ]
    rows += report_rows(results.get("report"))
    return rows


def _marginal_cpu(
    section: str, not_durable: dict[str, Any], floor_cpu: float, floor_name: str, asyncio_floor: float | None = None
) -> list[Row]:
    """CPU per transaction without a run's start-up and stop, against the floor (which counts
    transactions only): the target is TARGET_CPU x the asyncio floor, on either loop."""
    if "marginal_cpu_ms_per_tx" not in not_durable:
        return []
    value = not_durable["marginal_cpu_ms_per_tx"]
    limit = TARGET_CPU * (asyncio_floor if asyncio_floor is not None else floor_cpu)
    return [
        Row(section, "not durable: CPU per tx, all processes, start and stop left out", value, "ms CPU",
            floor_cpu, floor_name, f"<= {TARGET_CPU:g} x asyncio floor = {limit:.2f}", value <= limit)
    ]  # fmt: skip


def _durable_ratio(section: str, durable: dict[str, Any], not_durable: dict[str, Any]) -> Row:
    """Durable committed/s over not durable's, both from this run: what the fsyncs cost."""
    return Row(
        section,
        "durable committed/s, x not durable",
        durable["tx_s"],
        "tx/s",
        not_durable["tx_s"],
        "not durable",
        f">= {TARGET_DURABLE_RATIO:g} x not durable",
        durable["tx_s"] >= TARGET_DURABLE_RATIO * not_durable["tx_s"],
    )


def _participant_rows(r: dict[str, Any] | None) -> list[Row]:
    """One client with many participants against three, and the echo fan-out likewise."""
    if not r:
        return []
    (few, few_r), (many, many_r) = sorted(((int(k), v) for k, v in r.items()))
    section = f"{many} participants"
    return [
        Row(section, f"echo fan-out, {many} processes x 2 rounds", many_r["echo"]["tx_s"], "tx/s",
            few_r["echo"]["tx_s"], f"echo, {few}"),
        Row(section, "one client not durable: committed/s", many_r["one_client"]["tx_s"], "tx/s",
            few_r["one_client"]["tx_s"], f"{few} participants",
            f">= {TARGET_MANY_PARTICIPANTS:g} x {few} participants",
            many_r["one_client"]["tx_s"] >= TARGET_MANY_PARTICIPANTS * few_r["one_client"]["tx_s"]),
        Row(section, "one client: CPU per tx, all processes", many_r["one_client"]["cpu_ms_per_tx"], "ms CPU",
            few_r["one_client"]["cpu_ms_per_tx"], f"{few} participants"),
    ]  # fmt: skip


def report_rows(r: dict[str, Any] | None) -> list[Row]:
    """The report section: its time as a multiple of the check, its size, its speed in a browser."""
    if not r:
        return []
    lines = f"{r['lines']:,} lines"
    rows = [
        Row("report", f"report.html + history.jsonl, {lines}", r["report_s"], "s", r["check_s"], "check_run",
            f"<= {rb.TARGET_RATIO:g} x", r["ratio"] <= rb.TARGET_RATIO),
        Row("report", "report.html size per log line", r["bytes_per_line"], "bytes"),
        Row("report", f"events.jsonl, {lines} (apart)", r["events_s"], "s", r["check_s"], "check_run"),
    ]  # fmt: skip
    if "first_paint_ms" in r:
        rows += [
            Row("report", "Chromium: first paint", r["first_paint_ms"], "ms", None, "",
                f"< {rb.TARGET_FIRST_PAINT_MS:g}", r["first_paint_ms"] < rb.TARGET_FIRST_PAINT_MS),
            Row("report", f"Chromium: zoom redraw, worst of {len(r['redraw_ms'])}", r["redraw_max_ms"], "ms", None, "",
                f"< {rb.TARGET_REDRAW_MS:g}", r["redraw_max_ms"] < rb.TARGET_REDRAW_MS),
        ]  # fmt: skip
    return rows


def render(results: dict[str, Any], config: BenchConfig, rows: list[Row]) -> str:
    m = results["machine"]
    load = " ".join(f"{x:.1f}" for x in m["load_at_start"])
    load_end = " ".join(f"{x:.1f}" for x in m["load_at_end"])
    head = [
        f"harness.bench: {m['cpus']} CPUs, Python {m['python']}, load average {load} at start, {load_end} at end; "
        f"data in {m['workdir']} ({m['workdir_filesystem']})",
        f"medians of {config.repeat} repetitions; x floor = the figure divided by its floor, measured in this run",
        "",
    ]
    table = tabulate(
        [
            [
                r.section,
                r.figure,
                _fmt(r.value, r.unit),
                r.unit,
                f"{_fmt(r.floor, r.unit)} ({r.floor_name})" if r.floor is not None else "",
                f"{r.ratio:.2f}" if r.ratio is not None else "",
                r.target,
                "" if r.met is None else ("yes" if r.met else "NO"),
            ]
            for r in rows
        ],
        headers=["section", "figure", "median", "unit", "floor (same run)", "x floor", "target", "met"],
        disable_numparse=True,
    )
    targets = [r for r in rows if r.met is not None]
    missed = [f"{r.section}: {r.figure}" for r in targets if not r.met]
    tail = ["", f"targets met: {len(targets) - len(missed)} of {len(targets)}"]
    tail += [f"  not met: {x}" for x in missed]
    ch = results.get("checker")
    if ch:
        s = ch["shapes"]
        tail.append(
            f"checker folder: {s['synthetic']} line shapes, {len(s['synthetic_not_in_real'])} not seen in a real run"
        )
    for bad in results.get("inconsistent_runs", []):
        tail.append(f"INCONSISTENT: {bad}")
    for name, error in results.get("failed_sections", {}).items():
        tail.append(f"FAILED: section {name}, not measured: {error}")
    return "\n".join([*head, table, *tail])
