// Shared by the class view and the ride page: URL parameters, authenticated JSON, the hub connection.
// Plain ES module, no build step. Every string from the network goes into the page as text, never HTML.

export const params = new URLSearchParams(location.search);
export const token = params.get("token") || "";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// GET a JSON document with the page's token. Resolves to {status, body} (body null when not JSON);
// status 0 when the network failed. Never throws.
export async function getJSON(path) {
  try {
    const res = await fetch(path, {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      cache: "no-store",
    });
    let body = null;
    if ((res.headers.get("Content-Type") || "").includes("application/json")) {
      try {
        body = await res.json();
      } catch {
        body = null;
      }
    }
    return { status: res.status, body };
  } catch (err) {
    return { status: 0, body: null, error: String(err) };
  }
}

export function withToken(path, extra = {}) {
  const q = new URLSearchParams(extra);
  if (token) q.set("token", token);
  const qs = q.toString();
  return qs ? `${path}?${qs}` : path;
}

// Full jitter (as the publisher does): uniform in [0, min(cap, base * 2^attempt)].
export function backoff(attempt, base = 0.5, cap = 15) {
  return Math.random() * Math.min(cap, base * 2 ** Math.min(attempt, 20));
}

// The hub's clock as this browser sees it: each frame carries the hub's send time `ts`, so a value's age
// is (local now + skew) - t even when the screen's clock is off.
export const clock = {
  skew: 0,
  seen: false,
  observe(ts) {
    if (typeof ts !== "number") return;
    const sample = ts - Date.now() / 1000;
    this.skew = this.seen ? this.skew * 0.8 + sample * 0.2 : sample;
    this.seen = true;
  },
  now() {
    return Date.now() / 1000 + this.skew;
  },
};

// One class WebSocket (subscribe mode), reconnected with backoff. Calls
//   onState({state, detail}) with state "connecting" | "live" | "reconnecting" | "refused"
//   onFrame(frame, {first, received}) for every hub frame; `first` marks the snapshot a new subscription
//   starts with, `received` is Date.now() when the message arrived.
export class HubConnection {
  constructor(classId, { onFrame, onState, onSnapshot }) {
    this.classId = classId;
    this.onFrame = onFrame;
    this.onState = onState;
    this.onSnapshot = onSnapshot; // optional: the class's JSON snapshot fetched before each connect
    this.attempt = 0;
    this.opens = 0; // successful connections so far (shown as data-connects in the header)
    this.ws = null;
    this.timer = null;
  }

  async start() {
    clearTimeout(this.timer);
    this.onState({ state: "connecting", detail: "" });
    // A browser hides why a WebSocket upgrade failed; the snapshot endpoint answers with the reason.
    const probe = await getJSON(`/live/v1/classes/${encodeURIComponent(this.classId)}`);
    if (probe.status === 401 || probe.status === 403) {
      const detail = probe.body ? `${probe.body.error}: ${probe.body.detail}` : `HTTP ${probe.status}`;
      this.retry("refused", detail, 30);
      return;
    }
    if (probe.status === 200 && probe.body && this.onSnapshot) this.onSnapshot(probe.body);
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${proto}//${location.host}/live/v1/classes/${encodeURIComponent(this.classId)}/ws?${new URLSearchParams({ mode: "sub", token })}`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      this.retry("reconnecting", String(err));
      return;
    }
    this.ws = ws;
    let first = true;
    ws.onopen = () => {
      this.attempt = 0;
      this.opens += 1;
      this.onState({ state: "live", detail: "", opens: this.opens });
    };
    ws.onmessage = (ev) => {
      const received = Date.now(); // before parsing: the page's receipt time (latency.js)
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== "object") return;
      clock.observe(frame.ts);
      const isFirst = first && frame.type === "delta";
      if (frame.type === "delta") first = false;
      this.onFrame(frame, { first: isFirst, received });
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const why = ev.reason ? `closed ${ev.code}: ${ev.reason}` : `closed ${ev.code}`;
      this.retry(ev.code === 4403 ? "refused" : "reconnecting", why);
    };
  }

  retry(state, detail, floor = 0) {
    const delay = Math.max(floor, backoff(this.attempt));
    this.attempt += 1;
    const until = Date.now() + delay * 1000;
    this.onState({ state, detail, until, opens: this.opens });
    this.timer = setTimeout(() => this.start(), delay * 1000);
  }
}

export function connectionText({ state, detail, until }) {
  if (state === "live") return "live";
  if (state === "connecting") return "connecting…";
  const secs = until ? Math.max(0, Math.ceil((until - Date.now()) / 1000)) : 0;
  if (state === "refused") return `access refused — retry in ${secs} s`;
  return `reconnecting in ${secs} s`;
}

// Elapsed time as H:MM:SS or M:SS.
export function fmtElapsed(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

export function fmtAge(seconds) {
  if (!Number.isFinite(seconds)) return "";
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 120) return `${Math.round(s)} s`;
  return `${Math.floor(s / 60)} min`;
}
