// Streams in the console: an agent's live metrics as a chart, and a shell in a terminal view.
// Streams are opened, credited and closed with JSON-RPC on the console's /rpc WebSocket; their
// data arrives as binary WebSocket messages, each one native `Message` (protobuf) carrying
// `StreamData` (field 103). Credit goes back as the data is drawn, so a slow tab slows only
// its own stream (a metrics tab that falls behind skips to the newest frame).
"use strict";

const streams = new Map();
let nextStreamId = 2; // a client opens even ids
const WINDOW = 256 * 1024;

// --- protobuf, just what StreamData needs -------------------------------------------------

function varint(b, pos) {
  let v = 0, mul = 1, byte;
  do {
    if (pos.i >= b.length) throw new Error("truncated varint");
    byte = b[pos.i++];
    v += (byte & 0x7f) * mul;
    mul *= 128;
  } while (byte & 0x80);
  return v;
}

function fields(b) {
  const out = new Map();
  const pos = { i: 0 };
  while (pos.i < b.length) {
    const key = varint(b, pos);
    const field = Math.floor(key / 8), wire = key % 8;
    let value;
    if (wire === 0) value = varint(b, pos);
    else if (wire === 2) {
      const n = varint(b, pos);
      if (pos.i + n > b.length) throw new Error("truncated field");
      value = b.subarray(pos.i, pos.i + n);
      pos.i += n;
    } else if (wire === 1) { pos.i += 8; continue; }
    else if (wire === 5) { pos.i += 4; continue; }
    else throw new Error(`wire type ${wire}`);
    out.set(field, value);
  }
  return out;
}

function decodeStreamData(bytes) {
  const msg = fields(bytes);
  const d = msg.get(103);
  if (!(d instanceof Uint8Array)) return null;
  const f = fields(d);
  return {
    streamId: f.get(1) || 0,
    sequence: f.get(2) || 0,
    keyFrame: f.get(3) === 1,
    channel: f.get(4) || 0,
    payload: f.get(5) instanceof Uint8Array ? f.get(5) : new Uint8Array(0),
  };
}

function base64(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

// --- the stream plumbing -------------------------------------------------------------------

async function openStream(kind, agentId, klass, params, handlers) {
  const id = nextStreamId;
  nextStreamId += 2;
  const s = { id, kind, agentId, handlers, sendCredit: 0, outQueue: [], sequence: 0, open: false };
  streams.set(id, s);
  try {
    const r = await call("StreamOpen", {
      streamId: String(id), kind, agentId, class: klass, initialCredit: WINDOW, params,
    });
    s.open = true;
    s.sendCredit = Number(r.initialCredit || 0);
    s.multicast = !!r.multicast;
    return s;
  } catch (e) {
    streams.delete(id);
    throw e;
  }
}

function closeStream(s) {
  if (!streams.has(s.id)) return;
  streams.delete(s.id);
  call("StreamClose", { streamId: String(s.id), code: "NORMAL", reason: "closed in the console" }).catch(() => {});
}

// Sends bytes from the sink to the source (keystrokes), within the source's credit; what
// does not fit waits for a StreamCredit (bounded: a console that cannot send loses nothing
// silently, it says so).
function sendOnStream(s, channel, bytes) {
  if (!s.open) return;
  s.outQueue.push({ channel, bytes });
  const queued = s.outQueue.reduce((n, m) => n + m.bytes.length, 0);
  if (queued > 64 * 1024) {
    s.outQueue.pop();
    if (s.handlers.onError) s.handlers.onError("input not sent: the source is not reading");
    return;
  }
  flushStream(s);
}

function flushStream(s) {
  while (s.outQueue.length && s.outQueue[0].bytes.length <= s.sendCredit) {
    const m = s.outQueue.shift();
    s.sendCredit -= m.bytes.length;
    s.sequence += 1;
    call("StreamData", {
      streamId: String(s.id), sequence: String(s.sequence), channel: m.channel, payload: base64(m.bytes),
    }).catch(() => {});
  }
}

function onStreamBinary(bytes) {
  let d;
  try { d = decodeStreamData(bytes); } catch (e) { console.warn("bad stream frame", e); return; }
  if (!d) return;
  const s = streams.get(d.streamId);
  if (!s) return;
  s.handlers.onData(d);
  if (d.payload.length) {
    call("StreamCredit", { streamId: String(s.id), bytes: d.payload.length }).catch(() => {});
  }
}

function onStreamNotice(method, p) {
  const s = streams.get(Number(p.streamId));
  if (!s) return;
  if (method === "StreamCredit") {
    s.sendCredit += Number(p.bytes || 0);
    flushStream(s);
  } else if (method === "StreamClose") {
    streams.delete(s.id);
    s.open = false;
    if (s.handlers.onClose) s.handlers.onClose(`${p.code || "NORMAL"}${p.reason ? ": " + p.reason : ""}`);
  }
}

// --- metrics -------------------------------------------------------------------------------

let metrics = null;

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function drawChart(canvas, samples) {
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  g.clearRect(0, 0, w, h);
  g.fillStyle = "#fff";
  g.fillRect(0, 0, w, h);
  g.strokeStyle = "#ddd";
  g.fillStyle = "#666";
  g.font = "11px sans-serif";
  for (const pct of [0, 25, 50, 75, 100]) {
    const y = h - pad / 2 - (pct / 100) * (h - pad);
    g.beginPath(); g.moveTo(pad, y); g.lineTo(w - 4, y); g.stroke();
    g.fillText(`${pct}%`, 2, y + 4);
  }
  const series = [
    { color: "#c0392b", value: (m) => m.cpu.total_percent, name: "CPU" },
    { color: "#2471a3", value: (m) => (m.memory.total_bytes ? (100 * m.memory.used_bytes) / m.memory.total_bytes : 0), name: "memory" },
  ];
  const n = 120;
  const step = (w - pad - 4) / (n - 1);
  series.forEach((sr, k) => {
    g.strokeStyle = sr.color;
    g.lineWidth = 2;
    g.beginPath();
    samples.forEach((m, i) => {
      const x = pad + (n - samples.length + i) * step;
      const y = h - pad / 2 - (Math.max(0, Math.min(100, sr.value(m))) / 100) * (h - pad);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
    g.fillStyle = sr.color;
    g.fillText(sr.name, pad + 8 + k * 70, 12);
  });
  g.lineWidth = 1;
}

async function openMetrics() {
  const agent = $("stream-agent").value.trim();
  const interval = $("metrics-interval").value || "1000";
  if (metrics) closeStream(metrics.stream);
  $("metrics-state").textContent = "opening…";
  const canvas = $("metrics-chart");
  const view = { samples: [], frames: 0, stream: null };
  metrics = view;
  try {
    view.stream = await openStream("metrics", agent, "LATEST", { interval_ms: interval }, {
      onData: (d) => {
        let m;
        try { m = JSON.parse(new TextDecoder().decode(d.payload)); } catch { return; }
        view.frames += 1;
        view.samples.push(m);
        if (view.samples.length > 120) view.samples.shift();
        canvas.dataset.frames = String(view.frames);
        drawChart(canvas, view.samples);
        const load = (m.load || []).map((x) => x.toFixed(2)).join(" ");
        $("metrics-figures").textContent =
          `CPU ${m.cpu.total_percent.toFixed(1)}% (${m.cpu.cores_percent.length} cores) · memory ${fmtBytes(m.memory.used_bytes)} of ${fmtBytes(m.memory.total_bytes)} · load ${load}`;
      },
      onClose: (why) => { $("metrics-state").textContent = `closed: ${why}`; },
    });
    $("metrics-state").textContent = `stream ${view.stream.id} open on ${agent || "the hub"}${view.stream.multicast ? " (shared with other viewers)" : ""}`;
    refreshStreams();
  } catch (e) {
    $("metrics-state").textContent = `refused: ${e.message}`;
  }
}

function closeMetrics() {
  if (!metrics) return;
  if (metrics.stream) closeStream(metrics.stream);
  metrics = null;
  $("metrics-state").textContent = "closed";
  refreshStreams();
}

// --- shell ---------------------------------------------------------------------------------

let shell = null;

function terminalSize(el) {
  const probe = document.createElement("span");
  probe.textContent = "M";
  el.appendChild(probe);
  const r = probe.getBoundingClientRect();
  probe.remove();
  const cols = Math.max(20, Math.min(300, Math.floor(el.clientWidth / (r.width || 8))));
  const rows = Math.max(5, Math.min(100, Math.floor(el.clientHeight / (r.height || 16))));
  return { cols, rows };
}

async function openShell() {
  const agent = $("stream-agent").value.trim();
  if (shell) closeShell();
  const el = $("terminal");
  el.hidden = false;
  const { cols, rows } = terminalSize(el);
  const enc = new TextEncoder();
  const view = { stream: null, term: null };
  shell = view;
  view.term = new Terminal(el, cols, rows, (text) => view.stream && sendOnStream(view.stream, 0, enc.encode(text)));
  view.term.render();
  $("shell-state").textContent = "opening…";
  try {
    view.stream = await openStream("shell", agent, "LOSSLESS", { cols: String(cols), rows: String(rows) }, {
      onData: (d) => {
        if (d.channel !== 0) return;
        view.term.write(d.payload);
        requestAnimationFrame(() => view.term.render());
        el.dataset.bytes = String(Number(el.dataset.bytes || 0) + d.payload.length);
      },
      onClose: (why) => { $("shell-state").textContent = `closed: ${why}`; },
      onError: (why) => { $("shell-state").textContent = why; },
    });
    $("shell-state").textContent = `stream ${view.stream.id}: a shell on ${agent} (${cols}×${rows}); click the terminal and type`;
    el.focus();
    refreshStreams();
  } catch (e) {
    $("shell-state").textContent = `refused: ${e.message}`;
  }
}

function closeShell() {
  if (!shell) return;
  if (shell.stream) closeStream(shell.stream);
  shell = null;
  $("shell-state").textContent = "closed";
  refreshStreams();
}

function terminalKey(e) {
  if (!shell || !shell.stream) return;
  const text = keyBytes(e);
  if (text === null) return;
  e.preventDefault();
  sendOnStream(shell.stream, 0, new TextEncoder().encode(text));
}

function terminalPaste(e) {
  if (!shell || !shell.stream) return;
  e.preventDefault();
  const text = (e.clipboardData || window.clipboardData).getData("text");
  sendOnStream(shell.stream, 0, new TextEncoder().encode(text));
}

function terminalResized() {
  if (!shell || !shell.stream) return;
  const el = $("terminal");
  const { cols, rows } = terminalSize(el);
  if (cols === shell.term.cols && rows === shell.term.rows) return;
  shell.term.resize(cols, rows);
  shell.term.render();
  sendOnStream(shell.stream, 1, new TextEncoder().encode(JSON.stringify({ cols, rows })));
}

// --- the hub's streams ----------------------------------------------------------------------

async function refreshStreams() {
  try {
    const r = await call("ListStreamsRequest", {});
    const ul = $("streams-list");
    ul.replaceChildren(...(r.groups || []).map((g) => {
      const li = document.createElement("li");
      const sinks = g.sinks || [];
      li.textContent = `group ${g.group}: ${g.agentId || "hub"} ${g.kind} ${g.key ? "key " + g.key + " " : ""}(${g.class}), ${sinks.length} sink(s), ${g.bytesIn || 0} bytes in`;
      li.dataset.kind = g.kind;
      li.dataset.sinks = String(sinks.length);
      return li;
    }));
  } catch (e) {
    $("streams-list").replaceChildren(document.createTextNode(`cannot list: ${e.message}`));
  }
}

window.addEventListener("DOMContentLoaded", () => {
  $("metrics-open").addEventListener("click", openMetrics);
  $("metrics-close").addEventListener("click", closeMetrics);
  $("shell-open").addEventListener("click", openShell);
  $("shell-close").addEventListener("click", closeShell);
  $("streams-refresh").addEventListener("click", refreshStreams);
  const t = $("terminal");
  t.addEventListener("keydown", terminalKey);
  t.addEventListener("paste", terminalPaste);
  t.addEventListener("click", () => t.focus());
  if (window.ResizeObserver) new ResizeObserver(terminalResized).observe(t);
});
