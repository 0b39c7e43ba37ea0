// report.js: draws a 2PC run folder (harness/report/html.py inlines this file).
//
// Theory of operation. The page holds a JSON header and a gzipped blob of
// typed arrays (columns: one array per field, times delta-encoded in
// microseconds since the run's first log line). The browser inflates the blob
// (DecompressionStream) and turns deltas into times once; then the diagram is
// a canvas redrawn on each zoom or pan, drawing only what is in view: items
// are sorted by time, so the first and last in view are found by binary
// search, and when more messages are in view than a frame can draw legibly,
// one in every k is drawn (the page says so). Hover and click search the items
// drawn in the last frame. The charts are uPlot's.
"use strict";
(function () {
  const H = JSON.parse(document.getElementById("header").textContent);
  const R = (window.REPORT = { ready: false, errors: [], header: H, drawnMessages: 0, lastDrawMs: 0 });
  const KIND_COLOURS = ["#1f77b4", "#2ca02c", "#d62728", "#17becf", "#ff7f0e", "#9467bd", "#8c564b", "#b0b0b0", "#e377c2"];
  const KIND_NAMES = ["PREPARE", "vote ok", "vote NOK", "COMMIT", "ABORT", "RESOLVE", "OUTCOME", "STATUS/STATE", "ERROR"];
  const FAULT_COLOURS = {"kill-participant": "rgba(214,39,40,0.13)", "kill-client": "rgba(255,127,14,0.13)",
    pause: "rgba(148,103,189,0.13)", partition: "rgba(140,86,75,0.15)", crash: "rgba(214,39,40,0.13)"};
  const LIMIT = 12000; // messages drawn in one frame at most: more would be a smear in 1,000-odd pixels, and slow
  const MARK_LIMIT = 6000;
  const LANE_H = 36, LOCK_H = 20, TOP = 26, LEFT = 96;
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  };
  const ms = (us) => (us / 1000).toFixed(us < 10000 ? 3 : 1) + " ms";
  const secs = (us) => (us / 1e6).toFixed(3) + " s";

  async function inflate() {
    const b64 = document.getElementById("blob").textContent;
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer();
  }

  function columns(buf) {
    const C = {};
    for (const [name, [code, off, len]] of Object.entries(H.columns)) {
      C[name] = code === "i" ? new Int32Array(buf, off, len / 4)
        : code === "d" ? new Float64Array(buf, off, len / 8) : new Uint8Array(buf, off, len);
    }
    const sum = (d) => { const o = new Float64Array(d.length); let s = 0; for (let i = 0; i < d.length; i++) { s += d[i]; o[i] = s; } return o; };
    C.m_t = sum(C.m_t); C.k_t = sum(C.k_t); C.l_t = sum(C.l_t); C.o_t = sum(C.o_t);
    C.m_tx = Int32Array.from(sum(C.m_tx)); C.k_tx = Int32Array.from(sum(C.k_tx));
    const dec = new TextDecoder();
    C.txids = dec.decode(C.txids).split("\n");
    C.strings = dec.decode(C.strings).split("\n");
    let maxDur = 0;
    for (let i = 0; i < C.m_dur.length; i++) if (C.m_dur[i] > maxDur) maxDur = C.m_dur[i];
    C.maxDur = maxDur;
    let maxLock = 0;
    for (let i = 0; i < C.l_dur.length; i++) if (C.l_dur[i] > maxLock) maxLock = C.l_dur[i];
    C.maxLock = maxLock;
    C.opOfTx = new Int32Array(C.txids.length).fill(-1); // a transaction's client operation, if any
    for (let i = 0; i < C.o_tx.length; i++) if (C.o_tx[i] >= 0) C.opOfTx[C.o_tx[i]] = i;
    return C;
  }

  function lowerBound(a, x) { let lo = 0, hi = a.length; while (lo < hi) { const m = (lo + hi) >> 1; if (a[m] < x) lo = m + 1; else hi = m; } return lo; }

  // one colour per transaction, from a palette: neighbours differ, and a frame sets few fill styles
  // (no reds: red is a lock never released, and aborts)
  const PALETTE = Array.from({length: 48}, (_, k) => `hsl(${30 + ((k * 137.508) % 290)},58%,${45 + (k % 3) * 8}%)`);
  function txColour(tx) { return PALETTE[tx % PALETTE.length]; }

  function logOf(lane) { const n = H.lanes[lane]; return escapeHtml(n === "proxy" ? "proxy.log" : n + ".log"); }

  // ---------------------------------------------------------------- header
  function summary(C) {
    const app = document.getElementById("app");
    const nOps = C.o_lane.length;
    let committed = 0;
    for (let i = 0; i < nOps; i++) if (C.o_result[i] === 0) committed++;
    app.append(el("h1", {}, `2PC run ${H.title}`));
    if (H.command) app.append(el("p", {class: "cmd"}, el("code", {}, H.command)));
    const verdict = el("div", {id: "verdict", class: H.violations.length ? "bad" : "good"});
    if (!H.checked) verdict.append("not checked");
    else if (!H.violations.length) verdict.append(`CONSISTENT: the checker found no violation (${H.lines.toLocaleString()} log lines).`);
    else {
      verdict.append(el("b", {}, `${H.violations.length} violation${H.violations.length > 1 ? "s" : ""}`), " (click a log line to see it in the diagram)");
      const list = el("ol", {id: "violations"});
      H.violations.forEach((v, i) => {
        const ev = el("ul", {});
        v.evidence.forEach((e, j) => {
          const link = el("a", {href: "#", class: "evidence", "data-v": i, "data-e": j,
            onclick: (event) => { event.preventDefault(); jumpToViolation(i, j); }}, e.file ? `${e.file}:${e.line}` : "(line)");
          ev.append(el("li", {}, link, " ", el("code", {}, e.text.slice(e.text.indexOf(": ") + 2, 260))));
        });
        const go = el("a", {href: "#", class: "violation", "data-v": i, onclick: (event) => { event.preventDefault(); jumpToViolation(i, -1); }},
          v.kind);
        list.append(el("li", {}, go, ` ${v.txid || ""}: ${v.message}`, ev));
      });
      verdict.append(list);
    }
    app.append(verdict);
    app.append(el("p", {class: "facts"},
      `${H.messages.toLocaleString()} messages, ${nOps.toLocaleString()} transactions (${committed.toLocaleString()} committed), ` +
      `${H.faults.length} faults, ${secs(H.end)}. Wheel: zoom; drag: pan; click a message or a lock: its transaction; Esc: clear.`));
  }

  // ---------------------------------------------------------------- diagram
  const V = { v0: 0, v1: 1, sel: -1, selMsgs: null, selLocks: null, pins: [], hover: null };
  let C, canvas, ctx, tip, width = 0, laneY = [], lockY = {}, height = 0, drawn = null, drawnMarks = null, drawnLocks = null, drawnNoks = [];

  function layout() {
    laneY = H.lanes.map((_, i) => TOP + LANE_H * i + LANE_H / 2);
    let y = TOP + LANE_H * H.lanes.length + 18;
    lockY = {};
    H.laneKinds.forEach((k, i) => { if (k === "participant") { lockY[i] = y; y += LOCK_H + 4; } });
    height = y + 6;
  }

  function diagram() {
    const app = document.getElementById("app");
    const legend = el("div", {class: "legend"});
    KIND_NAMES.forEach((n, k) => legend.append(el("span", {}, el("i", {style: `background:${KIND_COLOURS[k]}`}), n)));
    legend.append(el("span", {}, "\u25a0 durable: ", el("b", {style: "color:#1f77b4"}, "prepared "), el("b", {style: "color:#2ca02c"}, "committed "),
      el("b", {style: "color:#d62728"}, "aborted")), el("span", {}, "\u2715 crash/kill, \u25b2 start, \u2016 pause"));
    const fit = el("button", {onclick: () => setView(0, H.end * 1.0 + 1)}, "whole run");
    app.append(el("h2", {}, "Messages (space-time) and locks"), el("div", {class: "bar"}, fit, el("span", {id: "viewinfo"}), legend));
    canvas = el("canvas", {id: "diagram"});
    const wrap = el("div", {class: "wrap"}, canvas);
    tip = el("div", {id: "tip", class: "tip"});
    wrap.append(tip);
    app.append(wrap, el("div", {id: "selection"}));
    ctx = canvas.getContext("2d");
    layout();
    resize();
    window.addEventListener("resize", () => { resize(); draw(); });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const t = tAt(e.offsetX), f = Math.exp(e.deltaY * 0.0015);
      setView(t - (t - V.v0) * f, t + (V.v1 - t) * f);
    }, {passive: false});
    let dragging = null;
    canvas.addEventListener("mousedown", (e) => { dragging = {x: e.offsetX, v0: V.v0, v1: V.v1, moved: false}; });
    window.addEventListener("mouseup", () => { setTimeout(() => { dragging = null; }, 0); });
    canvas.addEventListener("mousemove", (e) => {
      if (dragging && e.buttons) {
        const dt = (e.offsetX - dragging.x) * (dragging.v1 - dragging.v0) / (width - LEFT);
        if (Math.abs(e.offsetX - dragging.x) > 2) dragging.moved = true;
        setView(dragging.v0 - dt, dragging.v1 - dt);
        return;
      }
      hover(e.offsetX, e.offsetY);
    });
    canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    canvas.addEventListener("click", (e) => {
      if (dragging && dragging.moved) return;
      const h = pick(e.offsetX, e.offsetY);
      select(h && h.tx >= 0 ? h.tx : -1);
    });
    window.addEventListener("keydown", (e) => { if (e.key === "Escape") { V.pins = []; select(-1); } });
  }

  function resize() {
    width = canvas.parentElement.clientWidth || 1200;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = width * dpr; canvas.height = height * dpr;
    canvas.style.width = width + "px"; canvas.style.height = height + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  const xAt = (t) => LEFT + (t - V.v0) * (width - LEFT) / (V.v1 - V.v0);
  const tAt = (x) => V.v0 + (x - LEFT) * (V.v1 - V.v0) / (width - LEFT);

  let pending = false;
  function setView(v0, v1) {
    if (v1 - v0 < 20) { const c = (v0 + v1) / 2; v0 = c - 10; v1 = c + 10; }
    V.v0 = v0; V.v1 = v1;
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); }
  }

  function niceStep(span, n) {
    const raw = span / n, p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  function draw() {
    const start = performance.now();
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px sans-serif";
    ctx.textBaseline = "middle";
    // lanes
    H.lanes.forEach((name, i) => {
      ctx.fillStyle = i % 2 ? "#fafafa" : "#f2f4f7";
      ctx.fillRect(LEFT, laneY[i] - LANE_H / 2, width - LEFT, LANE_H);
      ctx.strokeStyle = "#c8ccd2"; ctx.beginPath(); ctx.moveTo(LEFT, laneY[i]); ctx.lineTo(width, laneY[i]); ctx.stroke();
      ctx.fillStyle = "#222"; ctx.fillText(name, 6, laneY[i]);
    });
    for (const [lane, y] of Object.entries(lockY)) {
      ctx.fillStyle = "#f7f3ea"; ctx.fillRect(LEFT, y, width - LEFT, LOCK_H);
      ctx.fillStyle = "#222"; ctx.fillText("lock " + H.lanes[lane], 6, y + LOCK_H / 2);
    }
    // faults: shaded windows, named
    for (const f of H.faults) {
      const a = Math.max(LEFT, xAt(f.start)), b = Math.min(width, xAt(f.end >= 0 ? f.end : H.end));
      if (b < LEFT || a > width) continue;
      ctx.fillStyle = FAULT_COLOURS[f.kind] || "rgba(120,120,120,0.12)";
      ctx.fillRect(a, TOP, Math.max(2, b - a), height - TOP);
      for (const name of f.lanes || [f.target]) {
        const lane = H.lanes.indexOf(name);
        if (lane >= 0) ctx.fillRect(a, laneY[lane] - LANE_H / 2, Math.max(2, b - a), LANE_H);
      }
      ctx.fillStyle = "#6b3a2a"; ctx.fillText(`${f.kind} ${f.target}`, a + 3, TOP + 7);
    }
    axis();
    ctx.save();
    ctx.beginPath(); ctx.rect(LEFT, TOP, width - LEFT, height - TOP); ctx.clip();
    const t1 = performance.now();
    drawLocks();
    const t2 = performance.now();
    drawMessages();
    const t3 = performance.now();
    drawMarks();
    const t4 = performance.now();
    drawSelection();
    drawPins();
    R.parts = {background: t1 - start, locks: t2 - t1, messages: t3 - t2, marks: t4 - t3};
    ctx.restore();
    R.lastDrawMs = performance.now() - start;
    R.view = {v0: V.v0, v1: V.v1};
    document.getElementById("viewinfo").textContent =
      `${secs(V.v0)} to ${secs(V.v1)}: ${R.visibleMessages.toLocaleString()} messages in view` +
      (R.stride > 1 ? `, 1 in ${R.stride} drawn (zoom in to see all)` : "");
  }

  function axis() {
    const step = niceStep(V.v1 - V.v0, Math.max(2, (width - LEFT) / 110));
    ctx.fillStyle = "#444"; ctx.strokeStyle = "#e0e0e0";
    for (let t = Math.ceil(V.v0 / step) * step; t <= V.v1; t += step) {
      const x = xAt(t);
      ctx.beginPath(); ctx.moveTo(x, TOP - 4); ctx.lineTo(x, height); ctx.stroke();
      ctx.fillText(step >= 1e6 ? (t / 1e6).toFixed(step >= 1e6 ? 0 : 1) + " s" : step >= 1000 ? (t / 1000).toFixed(0) + " ms" : (t / 1000).toFixed(3) + " ms", x + 2, TOP - 12);
    }
  }

  function messageEnds(i) {
    const x1 = xAt(C.m_t[i]), y1 = laneY[C.m_src[i]];
    const dur = C.m_dur[i], dst = C.m_dst[i];
    if (dur >= 0) return [x1, y1, xAt(C.m_t[i] + dur), laneY[dst], false];
    // never received: a stub towards its receiver (or to the proxy that dropped it)
    const proxy = H.lanes.indexOf("proxy");
    const yEnd = (C.m_kind[i] & 16) && proxy >= 0 ? laneY[proxy] : y1 + (laneY[dst] - y1) * 0.35;
    return [x1, y1, x1 + 14, yEnd, true];
  }

  function drawMessages() {
    const n = C.m_t.length, others = H.lanes.indexOf("others");
    const lo = lowerBound(C.m_t, V.v0 - C.maxDur), hi = lowerBound(C.m_t, V.v1 + 1);
    const first = lowerBound(C.m_t, V.v0);
    R.visibleMessages = hi - first;
    const stride = Math.max(1, Math.ceil((hi - lo) / LIMIT));
    R.stride = stride;
    const paths = KIND_NAMES.map(() => new Path2D());
    const stubs = new Path2D();
    drawn = new Int32Array(Math.ceil((hi - lo) / stride) + 1);
    let count = 0;
    for (let i = lo; i < hi && i < n; i += stride) {
      const [x1, y1, x2, y2, stub] = messageEnds(i);
      if (Math.max(x1, x2) < LEFT || Math.min(x1, x2) > width) continue;
      const p = paths[C.m_kind[i] & 15];
      p.moveTo(x1, y1); p.lineTo(x2, y2);
      // a cross where a message was lost; none towards "others", whose receipt no log records
      if (stub && C.m_dst[i] !== others) { stubs.moveTo(x2 - 3, y2 - 3); stubs.lineTo(x2 + 3, y2 + 3); stubs.moveTo(x2 + 3, y2 - 3); stubs.lineTo(x2 - 3, y2 + 3); }
      drawn[count++] = i;
    }
    drawn = drawn.subarray(0, count);
    R.drawnMessages = count;
    const heads = count < 4000;
    ctx.lineWidth = count < 2000 ? 1.4 : 1;
    ctx.globalAlpha = count < 5000 ? 0.9 : 0.45;
    paths.forEach((p, k) => { ctx.strokeStyle = KIND_COLOURS[k]; ctx.stroke(p); });
    ctx.globalAlpha = 1;
    ctx.strokeStyle = "#d62728"; ctx.lineWidth = 1.5; ctx.stroke(stubs);
    if (heads) {
      for (let j = 0; j < count; j++) {
        const i = drawn[j];
        const [x1, y1, x2, y2, stub] = messageEnds(i);
        if (!stub) arrowHead(x1, y1, x2, y2, KIND_COLOURS[C.m_kind[i] & 15]);
      }
    }
  }

  function arrowHead(x1, y1, x2, y2, colour) {
    const a = Math.atan2(y2 - y1, x2 - x1), s = 6;
    ctx.fillStyle = colour; ctx.beginPath(); ctx.moveTo(x2, y2);
    ctx.lineTo(x2 - s * Math.cos(a - 0.4), y2 - s * Math.sin(a - 0.4));
    ctx.lineTo(x2 - s * Math.cos(a + 0.4), y2 - s * Math.sin(a + 0.4)); ctx.fill();
  }

  const MARK_STYLE = [
    ["sq", "#1f77b4"], ["sq", "#2ca02c"], ["sq", "#d62728"], ["hollow", "#555"], ["start", "#2ca02c"], ["crash", "#d62728"],
    ["bar", "#777"], ["circle", "#ff7f0e"], ["dash", "#999"], ["dash", "#bbb"], ["crash", "#d62728"], ["crash", "#8c564b"],
    ["pause", "#9467bd"], ["start", "#9467bd"], ["tick", "#888"], ["sq", "#333"],
  ];

  // Durable writes, begins and decisions are many: sampled like messages when too many are in
  // view. Starts, crashes, pauses, timeouts and the proxy's drops are few: always drawn.
  const FREQUENT = new Set([0, 1, 2, 14, 15]);

  function markPath(p, shape, x, y) {
    if (shape === "sq") p.rect(x - 2.5, y - 2.5, 5, 5);
    else if (shape === "hollow") p.rect(x - 2.5, y - 2.5, 5, 5);
    else if (shape === "crash") { p.moveTo(x - 6, y - 6); p.lineTo(x + 6, y + 6); p.moveTo(x + 6, y - 6); p.lineTo(x - 6, y + 6); }
    else if (shape === "start") { p.moveTo(x, y - 7); p.lineTo(x + 6, y + 5); p.lineTo(x - 6, y + 5); p.closePath(); }
    else if (shape === "pause") { p.rect(x - 4, y - 7, 3, 14); p.rect(x + 1, y - 7, 3, 14); }
    else if (shape === "bar") p.rect(x - 1, y - 10, 3, 20);
    else if (shape === "circle") { p.moveTo(x + 4, y); p.arc(x, y, 4, 0, 7); }
    else if (shape === "diamond") { p.moveTo(x, y - 4); p.lineTo(x + 4, y); p.lineTo(x, y + 4); p.lineTo(x - 4, y); p.closePath(); }
    else if (shape === "tick") p.rect(x - 0.5, y - 4, 1, 8);
    else p.rect(x - 3, y - 0.5, 6, 1.5);
  }

  function drawMarks() {
    const lo = lowerBound(C.k_t, V.v0), hi = lowerBound(C.k_t, V.v1 + 1);
    const stride = Math.max(1, Math.ceil((hi - lo) / MARK_LIMIT));
    const byKind = MARK_STYLE.map(() => []);
    drawnMarks = [];
    let seen = 0;
    for (let i = lo; i < hi; i++) {
      const kind = C.k_kind[i];
      if (FREQUENT.has(kind) && seen++ % stride) continue;
      (byKind[kind] || byKind[8]).push(i);
      drawnMarks.push(i);
    }
    ctx.lineWidth = 2;
    byKind.forEach((list, k) => {
      if (!list.length) return;
      const [shape, colour] = MARK_STYLE[k];
      ctx.fillStyle = colour; ctx.strokeStyle = colour;
      if (shape === "sq" || shape === "tick") { // the many: plain rectangles, Skia's fastest path
        const [w, h] = shape === "sq" ? [5, 5] : [1.5, 8];
        for (const i of list) ctx.fillRect(xAt(C.k_t[i]) - w / 2, laneY[C.k_lane[i]] + markOffset(k) - h / 2, w, h);
        return;
      }
      const p = new Path2D();
      for (const i of list) markPath(p, shape, xAt(C.k_t[i]), laneY[C.k_lane[i]] + markOffset(k));
      if (shape === "crash" || shape === "circle" || shape === "hollow") ctx.stroke(p); else ctx.fill(p);
    });
  }

  const markOffset = (kind) => (kind <= 3 ? 8 : kind >= 14 ? -8 : 0);

  function drawLocks() {
    const lo = lowerBound(C.l_t, V.v0 - C.maxLock), hi = lowerBound(C.l_t, V.v1 + 1);
    drawnLocks = [];
    const lastX = {}, bars = PALETTE.map(() => new Path2D()), held = new Path2D(), labels = [];
    for (let i = lo; i < hi; i++) {
      const lane = C.l_lane[i], y = lockY[lane];
      if (y === undefined) continue;
      const a = xAt(C.l_t[i]), b = xAt(C.l_t[i] + C.l_dur[i]);
      if (b < LEFT) continue;
      const w = Math.max(1, b - a), px = Math.round(a);
      if (w < 1.5 && lastX[lane] === px) continue; // sub-pixel: one bar per pixel is enough
      lastX[lane] = px;
      (C.l_endline[i] ? bars[C.l_tx[i] % PALETTE.length] : held).rect(a, y + 2, w, LOCK_H - 8);
      if (w > 60) labels.push(i);
      drawnLocks.push(i);
    }
    bars.forEach((p, k) => { ctx.fillStyle = PALETTE[k]; ctx.fill(p); });
    ctx.fillStyle = "#d62728"; ctx.fill(held);
    ctx.fillStyle = "#fff";
    for (const i of labels) {
      const a = Math.max(LEFT, xAt(C.l_t[i])), b = xAt(C.l_t[i] + C.l_dur[i]);
      ctx.fillText(C.txids[C.l_tx[i]], a + 3, lockY[C.l_lane[i]] + LOCK_H / 2 - 2, b - a - 6);
    }
    // refused while locked: a NOK tick under the bar
    const nlo = lowerBound(C.n_t, V.v0), nhi = lowerBound(C.n_t, V.v1 + 1);
    const stride = Math.max(1, Math.ceil((nhi - nlo) / MARK_LIMIT));
    ctx.fillStyle = "#d62728";
    drawnNoks = [];
    for (let i = nlo; i < nhi; i += stride) {
      const y = lockY[C.n_lane[i]];
      if (y === undefined) continue;
      ctx.fillRect(xAt(C.n_t[i]) - 0.5, y + LOCK_H - 6, 1.5, 6);
      drawnNoks.push(i);
    }
  }

  function drawSelection() {
    if (V.sel < 0) return;
    ctx.lineWidth = 3;
    for (const i of V.selMsgs) {
      const [x1, y1, x2, y2, stub] = messageEnds(i);
      if (Math.max(x1, x2) < LEFT || Math.min(x1, x2) > width) continue;
      ctx.strokeStyle = "#000"; ctx.beginPath(); ctx.moveTo(x1, y1); ctx.lineTo(x2, y2); ctx.stroke();
      ctx.strokeStyle = KIND_COLOURS[C.m_kind[i] & 15]; ctx.lineWidth = 2; ctx.beginPath(); ctx.moveTo(x1, y1); ctx.lineTo(x2, y2); ctx.stroke();
      ctx.lineWidth = 3;
      if (!stub) arrowHead(x1, y1, x2, y2, "#000");
    }
    for (const i of V.selLocks) {
      const y = lockY[C.l_lane[i]], a = xAt(C.l_t[i]), b = xAt(C.l_t[i] + C.l_dur[i]);
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2; ctx.strokeRect(a, y + 1, Math.max(2, b - a), LOCK_H - 6);
    }
  }

  function drawPins() {
    for (const p of V.pins) {
      if (p.t === undefined) continue;
      const x = xAt(p.t), y = p.lane !== undefined ? laneY[p.lane] : TOP + 10;
      ctx.strokeStyle = "#d62728"; ctx.lineWidth = 1.5; ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(x, TOP); ctx.lineTo(x, height); ctx.stroke(); ctx.setLineDash([]);
      ctx.beginPath(); ctx.arc(x, y, 7, 0, 7); ctx.stroke();
      ctx.fillStyle = "#d62728"; ctx.fillText(`${p.file}:${p.line}`, x + 9, y - 10);
    }
  }

  function segDist(px, py, x1, y1, x2, y2) {
    const dx = x2 - x1, dy = y2 - y1, l = dx * dx + dy * dy;
    let t = l ? ((px - x1) * dx + (py - y1) * dy) / l : 0;
    t = Math.max(0, Math.min(1, t));
    const x = x1 + t * dx - px, y = y1 + t * dy - py;
    return Math.sqrt(x * x + y * y);
  }

  function pick(x, y) {
    let best = null, bd = 6;
    if (drawnMarks) for (const i of drawnMarks) {
      const kind = C.k_kind[i];
      const d = Math.hypot(xAt(C.k_t[i]) - x, laneY[C.k_lane[i]] + markOffset(kind) - y);
      if (d < bd) { bd = d; best = {type: "mark", i, tx: C.k_tx[i]}; }
    }
    if (best) return best;
    if (drawn) for (const i of drawn) {
      const [x1, y1, x2, y2] = messageEnds(i);
      const d = segDist(x, y, x1, y1, x2, y2);
      if (d < bd) { bd = d; best = {type: "msg", i, tx: C.m_tx[i]}; }
    }
    if (best) return best;
    for (const i of drawnNoks) { // a PREPARE refused while the lock was held: the tick under the bar
      const ly = lockY[C.n_lane[i]];
      if (y >= ly + LOCK_H - 8 && y <= ly + LOCK_H + 2 && Math.abs(xAt(C.n_t[i]) - x) < 3) return {type: "nok", i, tx: C.n_tx[i]};
    }
    if (drawnLocks) for (const i of drawnLocks) {
      const ly = lockY[C.l_lane[i]];
      if (y >= ly && y <= ly + LOCK_H && x >= xAt(C.l_t[i]) - 1 && x <= xAt(C.l_t[i] + C.l_dur[i]) + 1) return {type: "lock", i, tx: C.l_tx[i]};
    }
    return null;
  }

  function describe(h) {
    const i = h.i;
    const tx = h.tx >= 0 ? escapeHtml(C.txids[h.tx]) : ""; // what a log says is text, never markup
    if (h.type === "msg") {
      const k = C.m_kind[i] & 15, op = h.tx >= 0 ? C.opOfTx[h.tx] : -1;
      const det = C.m_detail[i] >= 0 ? C.strings[C.m_detail[i]] : k === 0 && op >= 0 ? `value=${C.o_value[op]}` : "";
      const dur = C.m_dur[i];
      const from = C.m_kind[i] & 32 ? "(a sender without a log)" : `${logOf(C.m_src[i])}:${C.m_sline[i]}`;
      const to = dur >= 0 ? `${logOf(C.m_dst[i])}:${C.m_rline[i]}` : C.m_kind[i] & 16 ? "dropped by the proxy"
        : H.lanes[C.m_dst[i]] === "others" ? "(a receiver without a log)" : "never received";
      return `<b>${KIND_NAMES[k]}</b> ${laneName(C.m_src[i])} \u2192 ${laneName(C.m_dst[i])}<br>${tx ? "txid " + tx + "<br>" : ""}` +
        `${det ? escapeHtml(det) + "<br>" : ""}sent ${secs(C.m_t[i])}${dur >= 0 ? ", took " + ms(dur) : ""}<br>${from} \u2192 ${to}`;
    }
    if (h.type === "mark") {
      const det = C.k_detail[i] >= 0 ? C.strings[C.k_detail[i]] : "";
      const line = C.k_line[i] < 0 ? `nemesis.log:${-C.k_line[i]}` : `${logOf(C.k_lane[i])}:${C.k_line[i]}`;
      return `<b>${H.marks[C.k_kind[i]].toLowerCase()}</b> at ${laneName(C.k_lane[i])}<br>${tx ? "txid " + tx + "<br>" : ""}` +
        `${det ? escapeHtml(det) + "<br>" : ""}${secs(C.k_t[i])}<br>${line}`;
    }
    if (h.type === "nok") {
      return `<b>vote NOK</b> at ${laneName(C.n_lane[i])}: ${tx} refused<br>its lock held by ${escapeHtml(C.txids[C.n_holder[i]] || "?")}<br>${secs(C.n_t[i])}`;
    }
    return `<b>lock</b> of ${laneName(C.l_lane[i])} held by ${tx}<br>from ${secs(C.l_t[i])} for ${ms(C.l_dur[i])}` +
      `${C.l_endline[i] ? "" : " (never released)"}<br>${logOf(C.l_lane[i])}:${C.l_line[i]}` +
      (C.l_endline[i] ? ` to :${C.l_endline[i]}` : "");
  }

  const laneName = (i) => escapeHtml(H.lanes[i]);
  function escapeHtml(s) { return s.replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]); }

  function hover(x, y) {
    const h = pick(x, y);
    if (!h) { tip.style.display = "none"; return; }
    tip.innerHTML = describe(h);
    tip.style.display = "block";
    tip.style.left = Math.min(x + 14, width - 320) + "px";
    tip.style.top = y + 14 + "px";
  }

  function select(tx) {
    V.sel = tx;
    R.selected = tx >= 0 ? C.txids[tx] : null;
    const box = document.getElementById("selection");
    box.textContent = "";
    if (tx < 0) { V.selMsgs = V.selLocks = null; draw(); return; }
    const msgs = [], locks = [];
    for (let i = 0; i < C.m_tx.length; i++) if (C.m_tx[i] === tx) msgs.push(i);
    for (let i = 0; i < C.l_tx.length; i++) if (C.l_tx[i] === tx) locks.push(i);
    V.selMsgs = msgs; V.selLocks = locks;
    const op = C.opOfTx[tx];
    const result = op >= 0 ? H.results[C.o_result[op]].toLowerCase() : "no client outcome";
    box.append(el("b", {}, `transaction ${C.txids[tx]}`),
      `: ${result}${op >= 0 ? `, value ${C.o_value[op]}, ${H.lanes[C.o_lane[op]]}` : ""}; ${msgs.length} messages, ` +
      `${locks.length} lock intervals. `, el("a", {href: "#", onclick: (e) => { e.preventDefault(); fitTx(); }}, "fit it"));
    draw();
  }

  function fitTx() {
    let a = Infinity, b = -Infinity;
    for (const i of V.selMsgs) { a = Math.min(a, C.m_t[i]); b = Math.max(b, C.m_t[i] + Math.max(0, C.m_dur[i])); }
    for (const i of V.selLocks) { a = Math.min(a, C.l_t[i]); b = Math.max(b, C.l_t[i] + C.l_dur[i]); }
    for (const p of V.pins) if (p.t !== undefined) { a = Math.min(a, p.t); b = Math.max(b, p.t); }
    if (a === Infinity) return false;
    const pad = Math.max(500, (b - a) * 0.15);
    setView(a - pad, b + pad);
    return true;
  }

  function jumpToViolation(v, e) {
    const viol = H.violations[v];
    V.pins = (e >= 0 ? [viol.evidence[e]] : viol.evidence).filter((p) => p.t !== undefined);
    const tx = viol.txid ? C.txids.indexOf(viol.txid) : -1;
    select(tx);
    if (e >= 0 && V.pins.length) {
      const t = V.pins[0].t, w = 20000; // 20 ms either side of the cited line
      setView(t - w, t + w);
    } else if (!fitTx() && V.pins.length) setView(V.pins[0].t - 20000, V.pins[0].t + 20000);
    canvas.scrollIntoView({block: "center"});
    R.jumps = (R.jumps || 0) + 1;
  }

  // ---------------------------------------------------------------- charts
  function charts() {
    const app = document.getElementById("app");
    app.append(el("h2", {}, "Over time"));
    const n = C.o_t.length, end = Math.max(H.end, 1);
    const buckets = Math.max(10, Math.min(300, Math.ceil(end / 1e5)));
    const w = end / buckets, sec = w / 1e6;
    const xs = Array.from({length: buckets}, (_, b) => ((b + 0.5) * w) / 1e6);
    const causes = new Map(), commits = new Float64Array(buckets), lat = Array.from({length: buckets}, () => []);
    for (let i = 0; i < n; i++) {
      const dur = C.o_dur[i];
      const t = dur >= 0 ? C.o_t[i] + dur : C.o_t[i];
      const b = Math.min(buckets - 1, Math.max(0, Math.floor(t / w)));
      const r = C.o_result[i];
      if (r === 0) { commits[b] += 1 / sec; lat[b].push(C.o_latency[i] / 1000); continue; }
      const name = r === 1 ? "aborted: " + (C.strings[C.o_cause[i]] || "?") : H.results[r].toLowerCase();
      if (!causes.has(name)) causes.set(name, new Float64Array(buckets));
      causes.get(name)[b] += 1 / sec;
    }
    const q = (a, p) => { if (!a.length) return null; a.sort((x, y) => x - y); return a[Math.min(a.length - 1, Math.floor(p * a.length))]; };
    const p50 = lat.map((a) => q(a, 0.5)), p90 = lat.map((a) => q(a, 0.9)), p99 = lat.map((a) => q(a, 0.99));
    const faultPlugin = {hooks: {drawClear: (u) => {
      const c = u.ctx;
      for (const f of H.faults) {
        const a = u.valToPos(f.start / 1e6, "x", true), b = u.valToPos((f.end >= 0 ? f.end : H.end) / 1e6, "x", true);
        c.fillStyle = FAULT_COLOURS[f.kind] || "rgba(120,120,120,0.12)";
        c.fillRect(a, u.bbox.top, Math.max(2, b - a), u.bbox.height);
        c.fillStyle = "#6b3a2a"; c.font = `${10 * devicePixelRatio}px sans-serif`;
        c.fillText(`${f.kind} ${f.target}`, a + 3, u.bbox.top + 12 * devicePixelRatio);
      }
    }}};
    const wdt = Math.min(1100, (app.clientWidth || 1200) - 20);
    const palette = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
    const series = [{label: "s"}, {label: "committed/s", stroke: "#2ca02c", width: 2}];
    const rows = [xs, Array.from(commits)];
    [...causes.keys()].sort().forEach((name, k) => { series.push({label: name + "/s", stroke: palette[k % palette.length]}); rows.push(Array.from(causes.get(name))); });
    const box1 = el("div", {id: "rate"}), box2 = el("div", {id: "latency"});
    app.append(box1, box2);
    R.charts = [
      new uPlot({title: "transactions per second, by outcome (faults shaded)", width: wdt, height: 230, series, plugins: [faultPlugin],
        scales: {x: {time: false}}, axes: [{label: "seconds since start"}, {}]}, rows, box1),
      new uPlot({title: "latency of committed transactions, ms", width: wdt, height: 230, plugins: [faultPlugin], scales: {x: {time: false}},
        series: [{label: "s"}, {label: "p50", stroke: "#1f77b4"}, {label: "p90", stroke: "#ff7f0e"}, {label: "p99", stroke: "#d62728"}],
        axes: [{label: "seconds since start"}, {}]}, [xs, p50, p90, p99], box2),
    ];
    // fairness: per client, committed vs aborted vs unknown
    const per = H.lanes.map(() => [0, 0, 0, 0]);
    for (let i = 0; i < n; i++) per[C.o_lane[i]][C.o_result[i]]++;
    const max = Math.max(1, ...per.map((p) => p[0] + p[1] + p[2] + p[3]));
    const table = el("table", {class: "fair"}, el("tr", {}, el("th", {}, "client"), el("th", {}, "committed / aborted / unknown / abandoned"), el("th", {}, "")));
    H.lanes.forEach((name, lane) => {
      if (H.laneKinds[lane] !== "client") return;
      const p = per[lane], bar = el("div", {class: "stack"});
      ["#2ca02c", "#d62728", "#ff7f0e", "#7f7f7f"].forEach((c, k) => bar.append(el("span", {style: `width:${(p[k] / max) * 100}%;background:${c}`, title: `${p[k]}`})));
      table.append(el("tr", {}, el("td", {}, name), el("td", {class: "bars"}, bar), el("td", {}, `${p[0]} / ${p[1]} / ${p[2]} / ${p[3]}`)));
    });
    app.append(el("h2", {}, "Per client: commits vs aborts"), table);
    if (H.faults.length) {
      const ft = el("table", {class: "faults"}, el("tr", {}, ...["id", "kind", "target", "from", "to", "detail"].map((h) => el("th", {}, h))));
      for (const f of H.faults) ft.append(el("tr", {}, ...[f.id, f.kind, f.target, secs(f.start), f.end >= 0 ? secs(f.end) : "never healed", f.detail || ""].map((v) => el("td", {}, String(v)))));
      app.append(el("h2", {}, "Faults (nemesis.log)"), ft);
    }
  }

  window.addEventListener("error", (e) => R.errors.push(String(e.message)));
  const t0 = performance.now();
  inflate().then((buf) => {
    C = R.C = columns(buf);
    R.messages = C.m_t.length;
    summary(C);
    diagram();
    V.v0 = 0; V.v1 = Math.max(H.end, 1) * 1.0 + 1;
    draw();
    R.firstPaintMs = performance.now(); // since the navigation began: the page's parsing included
    R.decodeMs = performance.now() - t0;
    R.setView = setView;
    R.redraw = (v0, v1) => { V.v0 = v0; V.v1 = v1; draw(); return R.lastDrawMs; }; // a zoom, drawn now (the benchmark)
    R.select = select;
    // for tests and the console: where message i is drawn (canvas pixels), and how many of each kind
    R.ends = (i) => messageEnds(i);
    R.kindCounts = KIND_NAMES.map(() => 0);
    for (let i = 0; i < C.m_kind.length; i++) R.kindCounts[C.m_kind[i] & 15]++;
    try { charts(); } catch (e) { R.errors.push("charts: " + e); console.error(e); }
    R.ready = true;
    document.body.dataset.ready = "1";
  }).catch((e) => { R.errors.push(String(e)); console.error(e); document.body.dataset.ready = "error"; });
})();
