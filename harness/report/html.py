"""report.html: one self-contained page that draws a run folder.

Theory of operation. ``rundata.read_run`` turns the folder into columns;
this module packs them into one binary blob of little-endian typed arrays
(times delta-encoded, so that they are small numbers that compress well),
gzips it, and inlines it as base64 in the page beside a small JSON header
(lanes, faults, violations, where each column lies in the blob). The page's
script (``assets/report.js``) inflates the blob with the browser's own
DecompressionStream, and draws the diagram on a canvas, only what is in view;
the charts use uPlot (MIT, vendored in ``assets/``). Nothing is fetched when
the page is viewed: every script and style is inside it.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import operator
import re
import sys
import zlib
from array import array
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from harness.report.columns import Kind, Mark, Result, RunData
from harness.verify.model import CheckReport

_ASSETS = ("uPlot.min.css", "report.css", "uPlot.iife.min.js", "report.js")
COMPRESSION = 3  # zlib level: on a million lines, 6 took 40% longer for a page no smaller
_EVIDENCE = re.compile(r"([\w.-]+\.log):(\d+): (\S+)")


class _Blob:
    """Typed arrays, one after another, each 8-byte aligned so that the page
    can view them in place."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.columns: dict[str, list[Any]] = {}

    def add(self, name: str, code: str, values: Any) -> None:
        raw = array(code, values).tobytes() if not isinstance(values, bytes) else values
        if sys.byteorder != "little" and code != "B":
            a = array(code, raw)
            a.byteswap()
            raw = a.tobytes()
        self.columns[name] = [code, self.size, len(raw)]
        self.parts.append(raw)
        self.size += len(raw)
        pad = -self.size % 8
        if pad:
            self.parts.append(bytes(pad))
            self.size += pad

    def gzipped(self) -> bytes:
        z = zlib.compressobj(COMPRESSION, zlib.DEFLATED, 31)  # 31: a gzip header, as DecompressionStream wants
        return z.compress(b"".join(self.parts)) + z.flush()


def _delta(values: list[int]) -> list[int]:
    return list(map(operator.sub, values, [0, *values[:-1]])) if values else []


def _sorted(order: list[int], *columns: list[Any]) -> list[list[Any]]:
    return [[c[i] for i in order] for c in columns]


def _evidence(data: RunData, evidence: tuple[str, ...]) -> list[dict[str, Any]]:
    """Where each cited log line is: file, line, lane, time (from the line's own timestamp)."""
    out = []
    for e in evidence:
        m = _EVIDENCE.match(e)
        item: dict[str, Any] = {"text": e}
        if m:
            file, line, ts = m.group(1), int(m.group(2)), m.group(3)
            item.update(file=file, line=line)
            node = file[: -len(".log")]
            if node in data.lanes:
                item["lane"] = data.lanes.index(node)
            with contextlib.suppress(ValueError):  # a damaged timestamp: no place in time
                item["t"] = round((datetime.fromisoformat(ts).timestamp() - data.origin) * 1e6)
        out.append(item)
    return out


def page(data: RunData, report: CheckReport | None) -> str:
    """The HTML text of the report of ``data`` (checked as ``report``)."""
    blob = _Blob()
    # messages, in the order of their first time (send, or receipt when no send is logged)
    first = [s if s >= 0 else r for s, r in zip(data.m_send, data.m_recv, strict=True)]
    order = sorted(range(len(first)), key=first.__getitem__)
    t0, recv, src, dst, kind, tx, det, sline, rline, dropped, has_send = _sorted(
        order, first, data.m_recv, data.m_src, data.m_dst, data.m_kind, data.m_tx, data.m_detail,
        data.m_send_line, data.m_recv_line, data.m_dropped, data.m_send,
    )  # fmt: skip
    blob.add("m_t", "i", _delta(t0))
    blob.add("m_dur", "i", [r - t if r >= 0 else -1 for t, r in zip(t0, recv, strict=True)])
    blob.add("m_src", "B", src)
    blob.add("m_dst", "B", dst)
    # the kind, and in its high bits: dropped by the proxy (16), no send line (32)
    blob.add(
        "m_kind", "B", [k | (d << 4) | (32 if s < 0 else 0) for k, d, s in zip(kind, dropped, has_send, strict=True)]
    )
    blob.add("m_tx", "i", _delta(tx))
    blob.add("m_detail", "i", det)
    blob.add("m_sline", "i", sline)
    blob.add("m_rline", "i", rline)
    # marks
    order = sorted(range(len(data.k_t)), key=data.k_t.__getitem__)
    kt, klane, kkind, ktx, kline, kdet = _sorted(
        order, data.k_t, data.k_lane, data.k_kind, data.k_tx, data.k_line, data.k_detail
    )
    blob.add("k_t", "i", _delta(kt))
    blob.add("k_lane", "B", klane)
    blob.add("k_kind", "B", kkind)
    blob.add("k_tx", "i", _delta(ktx))
    blob.add("k_line", "i", kline)
    blob.add("k_detail", "i", kdet)
    # locks, by start
    order = sorted(range(len(data.l_from)), key=data.l_from.__getitem__)
    lf, lt, llane, ltx, lline, lend = _sorted(
        order, data.l_from, data.l_to, data.l_lane, data.l_tx, data.l_line, data.l_end_line
    )
    blob.add("l_t", "i", _delta(lf))
    blob.add("l_dur", "i", [b - a for a, b in zip(lf, lt, strict=True)])
    blob.add("l_lane", "B", llane)
    blob.add("l_tx", "i", ltx)
    blob.add("l_line", "i", lline)
    blob.add("l_endline", "i", lend)
    blob.add("n_t", "i", data.n_t)
    blob.add("n_lane", "B", data.n_lane)
    blob.add("n_tx", "i", data.n_tx)
    blob.add("n_holder", "i", data.n_holder)
    # operations, by begin
    order = sorted(range(len(data.o_begin)), key=data.o_begin.__getitem__)
    ob, oe, olane, otx, ores, ocause, olat, oval, oline = _sorted(
        order, data.o_begin, data.o_end, data.o_lane, data.o_tx, data.o_result, data.o_cause,
        data.o_latency_us, data.o_value, data.o_line,
    )  # fmt: skip
    blob.add("o_t", "i", _delta(ob))
    blob.add("o_dur", "i", [e - b if e >= 0 else -1 for b, e in zip(ob, oe, strict=True)])
    blob.add("o_lane", "B", olane)
    blob.add("o_tx", "i", otx)
    blob.add("o_result", "B", ores)
    blob.add("o_cause", "i", ocause)
    blob.add("o_latency", "i", olat)
    blob.add("o_value", "d", oval)
    blob.add("o_line", "i", oline)
    blob.add("txids", "B", "\n".join(data.txids).encode())
    blob.add("strings", "B", "\n".join(s.replace("\n", " ") for s in data.strings).encode())
    packed = blob.gzipped()

    run = report.run if report is not None else {}
    violations = []
    if report is not None:
        violations = [
            {"kind": str(v.kind), "txid": v.txid, "message": v.message, "evidence": _evidence(data, v.evidence)}
            for v in report.violations
        ]
    header = {
        "title": report.folder.resolve().name if report is not None else "",
        "command": run.get("command"),
        "seed": run.get("seed"),
        "origin": data.origin,
        "end": data.end,
        "lines": data.lines,
        "lanes": data.lanes,
        "laneKinds": data.lane_kinds,
        "faults": data.faults,
        "checked": report is not None,
        "violations": violations,
        "kinds": [k.name for k in Kind],
        "marks": [k.name for k in Mark],
        "results": [k.name for k in Result],
        "columns": blob.columns,
        "rawBytes": blob.size,
        "messages": len(first),
    }
    assets = {name: resources.files("harness.report").joinpath("assets", name).read_text() for name in _ASSETS}
    # "</" cannot end a script block from inside JSON or base64 once escaped
    header_json = json.dumps(header, separators=(",", ":")).replace("</", "<\\/")
    title = html.escape(f"2PC run {header['title']}")
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{title}</title>"
        f"<style>{assets['uPlot.min.css']}\n{assets['report.css']}</style></head><body>\n"
        "<div id=app></div>\n"
        f"<script id=header type=application/json>{header_json}</script>\n"
        f"<script id=blob type=application/octet-stream>{base64.b64encode(packed).decode()}</script>\n"
        f"<script>{assets['uPlot.iife.min.js']}</script>\n"
        f"<script>{assets['report.js']}</script>\n"
        "</body></html>\n"
    )


def write(folder: Path, data: RunData, report: CheckReport | None) -> Path:
    """Write ``folder``/report.html; returns its path."""
    path = folder / "report.html"
    path.write_text(page(data, report), encoding="utf-8")
    return path
