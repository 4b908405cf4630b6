// The class view: one tile per rider (heart rate, zone, cadence, power, age, sync state) and the
// leaderboard, from the hub's WebSocket (engine/live/README.md). `/classes/{class}?token=T`.
import {
  HubConnection,
  clock,
  connectionText,
  el,
  fmtAge,
  fmtElapsed,
  getJSON,
  params,
  token,
  withToken,
} from "./common.js";
import { LatencyWindow, latencyText, latencyTitle } from "./latency.js";

// The hub marks values stale after its limit (default 3 s); the page applies the same limit itself, so a
// dead connection can never leave a frozen number on screen.
const STALE_AFTER_S = Number(params.get("stale")) > 0 ? Number(params.get("stale")) : 3;
const LEFT_TILE_KEEP_S = 60;
const SYNC_POLL_S = 5;
const SYNC_MISSING_POLL_S = 30;
const DIRECTORY_POLL_S = 15;
// The rider's kind of bike (the hub's record `bike`, from the rider's hello) as the tile says it. The same
// words as engine/bike_kinds.py LABELS (a test holds the two equal); an unknown word is shown as it is.
// prettier-ignore
const BIKE_LABELS = {"peloton": "Peloton bus", "line": "DIY cadence", "ble-ftms": "BLE FTMS", "ble-cps": "BLE power", "ble-csc": "BLE CSC", "hr-only": "HR only"};

const riders = new Map(); // device -> {record, leftAt, tile}
const board = { rows: new Map(), seq: 0, updated: 0, sort: "kj" };
let classStarted = null; // unix seconds: when the class started (the hub's first rider join), for the timer
const rides = new Map(); // device -> ride_id
const sync = new Map(); // ride_id -> {text, state, title}
let syncEndpoint = "unknown"; // unknown | present | missing
let connState = { state: "connecting", detail: "" };
// Sensor timestamp -> this page, per heart-rate value (latency.js); read by tests and `ridesync bench demo`.
const latency = new LatencyWindow();
window.ridesyncLatency = Object.assign(() => latency.summary(), {
  samples: () => latency.samples(),
  entries: () => latency.entries(),
  reset: () => latency.reset(),
});

function classFromPath() {
  const m = location.pathname.match(/^\/classes\/([^/]+)\/?$/);
  return m ? decodeURIComponent(m[1]) : null;
}

// --- the picker (/) -----------------------------------------------------------------------------------

async function showPicker() {
  document.getElementById("picker").hidden = false;
  document.getElementById("title").textContent = "Pick a class";
  document.getElementById("conn").hidden = true;
  const cls = params.get("class");
  if (cls && token) {
    location.replace(withToken(`/classes/${encodeURIComponent(cls)}`));
    return;
  }
  const tokenInput = document.getElementById("pick-token");
  tokenInput.value = token;
  document.getElementById("pick-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const c = document.getElementById("pick-class").value.trim();
    const t = tokenInput.value.trim();
    if (c && t) location.assign(`/classes/${encodeURIComponent(c)}?${new URLSearchParams({ token: t })}`);
  });
  if (token) {
    const me = await getJSON("/dashboard/v1/me");
    const msg = document.getElementById("pick-message");
    if (me.status === 200 && me.body) {
      const list = document.getElementById("pick-classes");
      for (const c of me.body.classes) list.append(el("option", { value: c }));
      if (me.body.classes.length === 1) document.getElementById("pick-class").value = me.body.classes[0];
    } else {
      msg.hidden = false;
      msg.textContent = me.body ? `This token is refused: ${me.body.detail}` : "This token is refused.";
    }
  }
}

// --- frames -----------------------------------------------------------------------------------------

function applyFrame(frame, { first, received }) {
  if (frame.type === "delta" && frame.riders && typeof frame.riders === "object") {
    latency.observe(frame.riders, received, first);
    if (first) {
      // A new subscription starts with a snapshot of every present rider: anyone else left meanwhile.
      for (const [device, entry] of riders) {
        if (!(device in frame.riders)) markLeft(device, entry);
      }
    }
    for (const [device, record] of Object.entries(frame.riders)) {
      if (!record || typeof record !== "object") continue;
      const entry = riders.get(device) || { record: null, leftAt: null, tile: null };
      if (record.presence === "left") {
        riders.set(device, entry);
        markLeft(device, entry);
      } else {
        entry.record = record;
        entry.leftAt = null;
        riders.set(device, entry);
      }
    }
    render();
  } else if (frame.type === "leaderboard") {
    applyLeaderboard(frame);
  }
}

function markLeft(device, entry) {
  if (entry.leftAt === null) entry.leftAt = Date.now() / 1000;
}

function applyLeaderboard(frame) {
  if (!frame.rows || typeof frame.rows !== "object") return;
  if (frame.full) board.rows.clear();
  for (const [device, row] of Object.entries(frame.rows)) board.rows.set(device, row);
  for (const device of frame.removed || []) board.rows.delete(device);
  board.seq = typeof frame.seq === "number" ? frame.seq : board.seq + 1;
  board.updated = Date.now() / 1000;
  renderBoard();
}

// --- tiles ------------------------------------------------------------------------------------------

// What a metric shows: {text, state, age}. Never a frozen number, never a 0 for "no reading".
function metricView(m, now) {
  if (!m || typeof m !== "object") return { text: "—", state: "none", age: null };
  const age = typeof m.t === "number" ? now - m.t : null;
  if (m.state === "live" && typeof m.v === "number") {
    if (age !== null && age > STALE_AFTER_S) return { text: "stale", state: "stale", age };
    return { text: String(Math.round(m.v)), state: "live", age };
  }
  if (m.state === "no_contact") return { text: "no contact", state: "no_contact", age };
  return { text: "stale", state: "stale", age };
}

function makeTile(device) {
  const tile = el("article", { class: "tile", "data-device": device, "data-zone": "0" });
  const name = el("a", { class: "name", text: device });
  const presence = el("span", { class: "presence" });
  const bike = el("span", { class: "bike", "data-bike": "" });
  const hrValue = el("span", { class: "hr-value", "data-state": "none", text: "—" });
  const hrUnit = el("span", { class: "hr-unit", text: "bpm" });
  const zone = el("span", { class: "zone-chip", text: "" });
  const cad = el("dd", { class: "cad", "data-state": "none", text: "—" });
  const pwr = el("dd", { class: "pwr", "data-state": "none", text: "—" });
  const age = el("span", { class: "age" });
  const syncEl = el("span", { class: "sync", "data-sync": "none", "data-link": "unknown", text: "sync: —" });
  tile.append(
    el("header", { class: "tile-head" }, name, bike, presence),
    el("div", { class: "hr" }, hrValue, hrUnit, zone),
    el(
      "dl",
      { class: "metrics" },
      el("div", {}, el("dt", { text: "cadence" }), cad),
      el("div", {}, el("dt", { text: "power" }), pwr),
    ),
    el("footer", { class: "tile-foot" }, age, syncEl),
  );
  return { tile, name, bike, presence, hrValue, hrUnit, zone, cad, pwr, age, sync: syncEl };
}

function setMetric(node, view, unit) {
  node.dataset.state = view.state;
  node.textContent = view.state === "live" ? `${view.text} ${unit}` : view.text;
}

function renderTile(device, entry, now) {
  if (!entry.tile) {
    entry.tile = makeTile(device);
    // Tiles keep a stable order (by device id), whatever order riders join or change in.
    const tiles = document.getElementById("tiles");
    const next = [...tiles.children].find((c) => c.dataset.device > device);
    tiles.insertBefore(entry.tile.tile, next || null);
  }
  const t = entry.tile;
  const rec = entry.record || {};
  const rideId = rides.get(device);
  t.name.textContent = rec.name || device;
  t.name.title = rec.name ? `${rec.name} (${device})` : device;
  if (typeof rec.max_hr === "number") t.tile.dataset.maxHr = String(rec.max_hr);
  if (rideId) t.name.href = withToken(`/rides/${encodeURIComponent(rideId)}`, { class: classId });
  else t.name.removeAttribute("href");
  // Nothing until the rider's hello says (an older publisher never does; a BLE bike once it connects).
  const bikeKind = typeof rec.bike === "string" ? rec.bike : "";
  t.bike.dataset.bike = bikeKind;
  t.bike.textContent = BIKE_LABELS[bikeKind] || bikeKind;
  t.bike.title = bikeKind ? `bike: ${bikeKind}` : "";
  const left = entry.leftAt !== null;
  t.tile.dataset.presence = left ? "left" : "here";
  t.presence.textContent = left ? "left the class" : "here";

  const hr = left ? { text: "—", state: "none", age: null } : metricView(rec.hr, now);
  t.hrValue.textContent = hr.text;
  t.hrValue.dataset.state = hr.state;
  t.hrUnit.hidden = hr.state !== "live";
  const zone = hr.state === "live" && typeof rec.zone === "number" ? rec.zone : 0;
  t.tile.dataset.zone = String(zone);
  t.zone.textContent = zone ? `Z${zone}` : "";
  t.zone.title = typeof rec.max_hr === "number" ? `zones from this rider's max HR of ${rec.max_hr} bpm` : "";
  setMetric(t.cad, left ? metricView(null, now) : metricView(rec.cad, now), "rpm");
  setMetric(t.pwr, left ? metricView(null, now) : metricView(rec.pwr, now), "W");
  if (!rec.pwr && rec.cad && !left) {
    // A bike without a power meter: say so instead of a dash that looks like a fault.
    t.pwr.textContent = "no meter";
    t.pwr.dataset.state = "absent";
    t.pwr.title = "this bike reports no power";
  }

  if (left) t.age.textContent = `left ${fmtAge(now - entry.leftAt)} ago`;
  else if (hr.age === null) t.age.textContent = "waiting for the strap";
  else if (hr.state === "live") t.age.textContent = `HR ${fmtAge(hr.age)} old`;
  else if (hr.state === "no_contact") t.age.textContent = `no contact for ${fmtAge(hr.age)}`;
  else t.age.textContent = `last HR ${fmtAge(hr.age)} ago`;

  const s = rideId ? sync.get(rideId) : null;
  const shown = s || {
    text: "sync: —",
    state: "none",
    title: rideId ? "checking the ride's sync state…" : "no ride is registered for this rider",
  };
  t.sync.textContent = shown.text;
  t.sync.dataset.sync = shown.state;
  t.sync.dataset.link = shown.link || "unknown";
  t.sync.title = shown.title;
}

function render() {
  const now = clock.now();
  const wall = Date.now() / 1000;
  for (const [device, entry] of riders) {
    if (entry.leftAt !== null && wall - entry.leftAt > LEFT_TILE_KEEP_S) {
      entry.tile?.tile.remove();
      riders.delete(device);
      continue;
    }
    renderTile(device, entry, now);
  }
  fitTiles();
  const here = [...riders.values()].filter((e) => e.leftAt === null).length;
  document.getElementById("rider-count").textContent = `${here} rider${here === 1 ? "" : "s"}`;
  const empty = document.getElementById("empty");
  empty.hidden = riders.size > 0;
  if (!empty.hidden && rides.size && token && !empty.dataset.results) {
    // Nobody rides now, but the class has rides: after the class (or a restart), point at its results.
    empty.dataset.results = "1";
    empty.replaceChildren(
      "No one is riding in this class right now. ",
      el("a", { href: withToken(`/classes/${encodeURIComponent(classId)}/results`), text: "See the class's results" }),
      ` (${rides.size} ride${rides.size === 1 ? "" : "s"}).`,
    );
  }
  const conn = document.getElementById("conn");
  conn.dataset.state = connState.state;
  conn.textContent = connectionText(connState);
  conn.title = connState.detail || "";
  conn.dataset.connects = String(connState.opens || 0);
  // A refusal's reason on the page itself, not only in the tooltip: the instructor has to act on it.
  const detail = document.getElementById("conn-detail");
  const refused = connState.state === "refused";
  detail.hidden = !refused;
  if (refused) detail.textContent = `The class hub refused this page: ${connState.detail || "no reason given"}.`;
  document.getElementById("clock").textContent = new Date().toLocaleTimeString();
  renderTimer(now);
  renderBoardMeta();
  renderLatency();
}

function renderTimer(now) {
  const timer = document.getElementById("timer");
  if (typeof classStarted !== "number") {
    timer.hidden = true;
    return;
  }
  const elapsed = Math.max(0, now - classStarted);
  timer.hidden = false;
  timer.dataset.elapsed = String(Math.floor(elapsed));
  timer.textContent = fmtElapsed(elapsed);
  timer.title = `class started ${new Date(classStarted * 1000).toLocaleTimeString()}`;
}

function takeStarted(body) {
  if (body && typeof body.started === "number") classStarted = body.started;
}

let latencyShownAt = 0;

function renderLatency() {
  // Once a second: the numbers move slowly and a readout that flickers 4x/s is noise in a room.
  if (Date.now() - latencyShownAt < 1000) return;
  latencyShownAt = Date.now();
  const s = latency.summary();
  const foot = document.getElementById("latency");
  const view = latencyText(s);
  foot.textContent = view.text;
  foot.dataset.state = view.state;
  foot.dataset.count = String(s.count);
  foot.title = latencyTitle(s);
}

// Pick the fewest columns (largest tiles) that fit every tile on one screen, as a room's wall needs; when
// even the narrowest readable tiles do not fit, use the most columns that stay readable and scroll.
const MIN_TILE_REM = 11;
let tileAspect = 1.3; // width / height, measured from a rendered tile
let fitted = "";

function fitTiles() {
  const tiles = document.getElementById("tiles");
  const n = tiles.children.length;
  if (!n) return;
  const first = tiles.children[0];
  if (first.offsetHeight > 0) tileAspect = first.offsetWidth / first.offsetHeight;
  const rem = parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;
  const gap = parseFloat(getComputedStyle(tiles).columnGap) || 0;
  const width = tiles.clientWidth;
  // The latency footer sits under the tiles and stays on screen too.
  const foot = document.querySelector(".page-foot");
  const below = foot ? foot.offsetHeight + (parseFloat(getComputedStyle(tiles.parentElement).rowGap) || 0) : 0;
  const height = window.innerHeight - tiles.getBoundingClientRect().top - gap - below;
  let cols = 0;
  for (let c = 1; c <= n; c++) {
    const w = (width - gap * (c - 1)) / c;
    if (w < MIN_TILE_REM * rem) break;
    const rows = Math.ceil(n / c);
    if (rows * (w / tileAspect) + gap * (rows - 1) <= height) {
      cols = c;
      break;
    }
  }
  if (!cols) {
    const readable = Math.floor((width + gap) / (MIN_TILE_REM * rem + gap));
    cols = Math.max(1, Math.min(n, readable));
  }
  const key = `${cols}`;
  if (key === fitted) return;
  fitted = key;
  if (cols) {
    tiles.style.setProperty("--cols", String(cols));
    tiles.dataset.fit = "";
  } else {
    tiles.style.removeProperty("--cols");
    delete tiles.dataset.fit;
  }
}

addEventListener("resize", () => {
  fitted = "";
});

// --- leaderboard ------------------------------------------------------------------------------------

const RANK_KEY = { kj: "rank_kj", pwr: "rank_pwr", cad: "rank_cad", zone: "rank_zone" };
// Ranking by output (kJ) or power leaves bikes without a power meter out of the main table: they are
// ranked among themselves by their time at zone 3+ (zones from each rider's own max HR), not last with "—".
const POWER_SORTS = new Set(["kj", "pwr"]);

function cell(value, cls = "num", digits = 0) {
  const text = value === null || value === undefined ? "—" : Number(value).toFixed(digits);
  return el("td", { class: cls, text });
}

function byRank(key) {
  return (a, b) => {
    const ra = typeof a[1][key] === "number" ? a[1][key] : Infinity;
    const rb = typeof b[1][key] === "number" ? b[1][key] : Infinity;
    return ra - rb || a[0].localeCompare(b[0]);
  };
}

function who(device) {
  return riders.get(device)?.record?.name || device;
}

function renderBoard() {
  const table = document.getElementById("board");
  table.dataset.seq = String(board.seq);
  table.dataset.sort = board.sort;
  const key = RANK_KEY[board.sort];
  const apart = POWER_SORTS.has(board.sort);
  const all = [...board.rows.entries()];
  // A row from an older hub carries no "power" flag: treat it as powered, as before.
  const main = apart ? all.filter(([, r]) => r.power !== false) : all;
  const body = document.getElementById("board-rows");
  body.replaceChildren(
    ...main.sort(byRank(key)).map(([device, row]) =>
      el(
        "tr",
        { "data-device": device, "data-zone": String(row.zone || 0) },
        el("td", { class: "rank", text: typeof row[key] === "number" ? String(row[key]) : "—" }),
        el("td", { class: "who", text: who(device) }),
        row.power === false ? el("td", { class: "num muted", text: "no meter" }) : cell(row.kj, "num", 1),
        row.power === false ? el("td", { class: "num muted", text: "" }) : cell(row.pwr),
        cell(row.cad),
        cell(row.hr),
        cell(row.zone || null),
      ),
    ),
  );
  const unpowered = apart ? all.filter(([, r]) => r.power === false) : [];
  document.getElementById("effort").hidden = unpowered.length === 0;
  document.getElementById("effort-rows").replaceChildren(
    ...unpowered.sort(byRank("rank_effort")).map(([device, row]) =>
      el(
        "tr",
        { "data-device": device, "data-zone": String(row.zone || 0) },
        el("td", { class: "rank", text: typeof row.rank_effort === "number" ? String(row.rank_effort) : "—" }),
        el("td", { class: "who", text: who(device) }),
        el("td", { class: "num", text: fmtElapsed(typeof row.hard_s === "number" ? row.hard_s : 0) }),
        cell(row.cad),
        cell(row.hr),
        cell(row.zone || null),
      ),
    ),
  );
  renderBoardMeta();
}

function renderBoardMeta() {
  if (!board.updated) return;
  const ago = Date.now() / 1000 - board.updated;
  document.getElementById("board-meta").textContent = `update #${board.seq}, ${fmtAge(ago)} ago`;
}

// --- rides and sync state (the durable lane) --------------------------------------------------------

async function refreshDirectory() {
  const res = await getJSON(`/dashboard/v1/classes/${encodeURIComponent(classId)}/rides`);
  if (res.status === 200 && res.body && res.body.rides) {
    takeStarted(res.body);
    for (const [device, entry] of Object.entries(res.body.rides)) {
      if (entry && typeof entry.ride_id === "string") rides.set(device, entry.ride_id);
    }
  }
  // Sooner while the class has not started: the timer should appear with the first rider.
  setTimeout(refreshDirectory, (typeof classStarted === "number" ? DIRECTORY_POLL_S : 3) * 1000);
}

// GET /v1/rides/{id}: "sync_state" (syncing | failed | reconciled) and "sync_reason", or "sync": {state, reason}.
function syncFrom(body) {
  if (!body || typeof body !== "object") return null;
  let state = body.sync_state;
  let reason = body.sync_reason;
  if (body.sync && typeof body.sync === "object") {
    state = body.sync.state;
    reason = body.sync.reason;
  }
  if (typeof state !== "string") return null;
  return { state, reason: typeof reason === "string" ? reason : "" };
}

async function pollSync() {
  let next = SYNC_POLL_S;
  for (const rideId of new Set(rides.values())) {
    const res = await getJSON(`/v1/rides/${encodeURIComponent(rideId)}`);
    if (res.status === 200 && res.body) {
      syncEndpoint = "present";
      const s = syncFrom(res.body);
      if (s) {
        const title = s.reason || `phase ${res.body.phase ?? "?"}, ride ${rideId}`;
        // The backend's state stays `syncing` through a dead network (it cannot tell a partition from a
        // quiet bike), but it knows nobody is connected for the ride: say so, or the wall shows nothing.
        const offline = s.state === "syncing" && res.body.connected_devices === 0;
        sync.set(rideId, {
          text: offline ? `sync: ${s.state} · offline` : `sync: ${s.state}`,
          state: s.state,
          link: offline ? "offline" : typeof res.body.connected_devices === "number" ? "online" : "unknown",
          title: offline
            ? `${title}. No replica of this ride is connected to the backend right now: the bike keeps its ` +
              "samples and syncs them when its network is back."
            : title,
        });
      } else {
        sync.set(rideId, { text: "sync: —", state: "none", title: "the backend reports no sync state for this ride" });
      }
    } else if (res.status === 404 && !(res.body && res.body.error)) {
      // aiohttp's plain 404: no such route, so no durable lane on this backend (yet).
      syncEndpoint = "missing";
      next = SYNC_MISSING_POLL_S;
      const title =
        "Sync state unknown: this backend does not serve GET /v1/rides/{id} (HTTP 404), so the durable sync lane is not running here.";
      for (const id of new Set(rides.values())) sync.set(id, { text: "sync: —", state: "none", title });
      break;
    } else if (res.status === 404) {
      sync.set(rideId, { text: "sync: —", state: "none", title: "the backend has no copy of this ride yet" });
    } else if (res.status === 401 || res.status === 403) {
      sync.set(rideId, {
        text: "sync: —",
        state: "none",
        title: `this token may not read the ride (${res.body?.detail || `HTTP ${res.status}`})`,
      });
    } else {
      sync.set(rideId, {
        text: "sync: ?",
        state: "unknown",
        title: res.status ? `GET /v1/rides/${rideId} answered HTTP ${res.status}` : "backend unreachable",
      });
    }
  }
  setTimeout(pollSync, (rides.size ? next : 2) * 1000);
}

// --- start ------------------------------------------------------------------------------------------

const classId = classFromPath();

function startClass() {
  document.getElementById("class-view").hidden = false;
  document.getElementById("title").textContent = classId;
  document.title = `ridesync — ${classId}`;
  const results = document.getElementById("results-link");
  results.href = withToken(`/classes/${encodeURIComponent(classId)}/results`);
  results.hidden = !token;
  for (const button of document.querySelectorAll(".board-sort button")) {
    button.addEventListener("click", () => {
      board.sort = button.dataset.sort;
      for (const b of document.querySelectorAll(".board-sort button")) {
        b.setAttribute("aria-pressed", String(b === button));
      }
      renderBoard();
    });
  }
  if (!token) {
    connState = { state: "refused", detail: "no token in the URL: add ?token=<viewer token>" };
    document.getElementById("conn").textContent = "no token in the URL";
    document.getElementById("conn").dataset.state = "refused";
    document.getElementById("empty").hidden = false;
    document.getElementById("empty").textContent =
      "This page needs a viewer token: /classes/<class>?token=<token> (see `ridesync token issue --role viewer`).";
    return;
  }
  const hub = new HubConnection(classId, {
    onFrame: applyFrame,
    onSnapshot: (body) => takeStarted(body),
    onState: (s) => {
      connState = s;
      render();
    },
  });
  hub.start();
  refreshDirectory().then(pollSync);
  // Ages tick, and a value that stops arriving turns stale on screen even with the connection down.
  setInterval(render, 250);
}

if (classId) startClass();
else showPicker();
