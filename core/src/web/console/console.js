// The Switchboard web console: JSON-RPC 2.0 over a WebSocket at /rpc. Lists update from the
// hub's event feed (SubscribeEventsRequest, then EventNotice notifications). Streams (live
// metrics, a shell) are in streams.js and terminal.js.
"use strict";

const $ = (id) => document.getElementById(id);
let ws = null;
let nextId = 1;
const calls = new Map();
const agents = new Map();
const channels = new Map();
let lastOrder = 0;
let running = null;

function call(method, params) {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    calls.set(id, { resolve, reject });
    ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params: params || {} }));
  });
}

function setStatus(text) { $("status").textContent = text; }

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const sock = new WebSocket(`${proto}//${location.host}/rpc`);
  sock.binaryType = "arraybuffer";
  ws = sock;
  sock.onopen = async () => {
    setStatus("connected");
    // The upgrade carried the session cookie if this browser has one (another tab logged
    // in, or this one before a reload): the session is then resumed, no login needed.
    try {
      await call("ListAgentsRequest", { after: "" });
    } catch {
      return; // a guest: the login form stays
    }
    enter(localStorage.getItem("switchboard.user") || "(resumed session)");
  };
  sock.onclose = () => {
    if (ws !== sock) return;
    setStatus("disconnected");
    for (const c of calls.values()) c.reject(new Error("connection closed"));
    calls.clear();
  };
  sock.onmessage = (m) => {
    if (typeof m.data !== "string") return onStreamBinary(new Uint8Array(m.data));
    const msg = JSON.parse(m.data);
    for (const one of Array.isArray(msg) ? msg : [msg]) handle(one);
  };
}

// Command messages keep RedPepper's field name `commandID` (proto3 JSON keeps it as is).
const commandOf = (p) => String(p.commandID ?? p.commandId);

function handle(msg) {
  if (msg.id !== undefined && calls.has(msg.id)) {
    const c = calls.get(msg.id);
    calls.delete(msg.id);
    if (msg.error) c.reject(new Error(`${msg.error.message} (${msg.error.code})`));
    else c.resolve(msg.result);
    return;
  }
  switch (msg.method) {
    case "EventNotice": onEvent(msg.params); break;
    case "StreamCredit":
    case "StreamClose": onStreamNotice(msg.method, msg.params); break;
    case "CommandProgress":
      if (running && commandOf(msg.params) === running) {
        $("run-state").textContent = `progress ${msg.params.current}/${msg.params.total}: ${msg.params.message}`;
      }
      break;
    case "CommandResult":
    case "CommandDone":
      if (running && commandOf(msg.params) === running) {
        $("run-state").textContent = `finished: ${msg.params.status}`;
        $("run-output").textContent = msg.params.output;
        running = null;
      }
      break;
  }
}

function onEvent(n) {
  lastOrder = Number(n.order);
  const e = n.event || {};
  const li = document.createElement("li");
  li.textContent = `#${n.order} ${n.kind} ${JSON.stringify(e)}`;
  $("events").prepend(li);
  switch (n.kind) {
    case "AgentConnected": agents.set(e.agentId, true); break;
    case "AgentDisconnected": agents.set(e.agentId, false); break;
    case "ChannelCreated": channels.set(String(e.chid), e); break;
    case "ChannelDeleted": channels.delete(String(e.chid)); break;
  }
  render();
}

function render() {
  const a = $("agents");
  a.replaceChildren(...[...agents.entries()].sort().map(([id, up]) => {
    const li = document.createElement("li");
    li.textContent = id;
    li.dataset.agent = id;
    li.className = up ? "connected" : "disconnected";
    li.addEventListener("click", () => { $("stream-agent").value = id; $("run-agent").value = id; });
    return li;
  }));
  const c = $("channels");
  c.replaceChildren(...[...channels.values()].map((ch) => {
    const li = document.createElement("li");
    li.textContent = `channel ${ch.chid} (port ${ch.port})`;
    li.dataset.chid = ch.chid;
    return li;
  }));
}

async function loadLists() {
  agents.clear();
  channels.clear();
  let after = "";
  for (;;) {
    const page = await call("ListAgentsRequest", { after });
    for (const ag of page.agents) agents.set(ag.agentId, ag.connected);
    if (!page.more || page.agents.length === 0) break;
    after = page.agents[page.agents.length - 1].agentId;
  }
  const ch = await call("ListChannelsRequest", {});
  for (const c of ch.channels || []) channels.set(String(c.chid), c);
  render();
}

// Logs in over POST /rpc, so that the hub's answer sets the HttpOnly session cookie, then
// reconnects the WebSocket, whose upgrade now carries it. Other tabs of this browser resume
// the same session by the cookie.
async function login(ev) {
  ev.preventDefault();
  $("login-error").textContent = "";
  const user = $("login-user").value;
  try {
    const resp = await fetch("/rpc", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({
        jsonrpc: "2.0", id: 1, method: "LoginRequest",
        params: { username: user, password: $("login-password").value, totp: Number($("login-totp").value) },
      }),
    });
    const answer = await resp.json();
    if (answer.error) throw new Error(`${answer.error.message} (${answer.error.code})`);
    if (answer.result.result !== "OK") {
      $("login-error").textContent = `login failed: ${answer.result.result}`;
      return;
    }
    localStorage.setItem("switchboard.user", user);
    $("login-password").value = "";
    const old = ws;
    ws = null;
    old.close();
    for (const c of calls.values()) c.reject(new Error("reconnecting"));
    calls.clear();
    connect();
  } catch (e) {
    $("login-error").textContent = String(e.message || e);
  }
}

async function enter(user) {
  $("whoami").textContent = user;
  $("login-view").hidden = true;
  $("main-view").hidden = false;
  try {
    const sub = await call("SubscribeEventsRequest", { fromOrder: 0 }).catch(() => null);
    if (!sub) {
      // The log no longer holds order 0: follow from now on, after loading the lists.
      const probe = await call("SubscribeEventsRequest", { fromOrder: String(lastOrder) }).catch(() => null);
      if (!probe) throw new Error("cannot follow the event feed");
    }
    await loadLists();
  } catch (e) {
    $("status").textContent = String(e.message || e);
  }
}

async function run(ev) {
  ev.preventDefault();
  $("run-output").textContent = "";
  try {
    const r = await call("RunCommandRequest", {
      agentId: $("run-agent").value,
      operation: $("run-operation").value,
      data: $("run-data").value || "{}",
    });
    running = String(r.commandId);
    $("run-state").textContent = `command ${r.commandId} started`;
  } catch (e) {
    $("run-state").textContent = `refused: ${e.message}`;
  }
}

async function logout() {
  localStorage.removeItem("switchboard.user");
  try { await call("LogoutRequest", {}); } finally { location.reload(); }
}

window.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("run-form").addEventListener("submit", run);
  $("logout").addEventListener("click", logout);
  connect();
});
