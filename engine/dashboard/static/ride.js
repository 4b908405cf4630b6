// The ride page: heart rate, power and cadence over the ride, its shared title and rating, from the backend's resolved view
// (GET /v1/rides/{id} and GET /v1/rides/{id}/series, see engine/dashboard/README.md).
// Until the backend serves those, the page says so plainly and charts the rider's live trace instead.
import { drawChart, fmtClock } from "./chart.js";
import { HubConnection, connectionText, el, getJSON, params, withToken } from "./common.js";

const LIVE_KEEP_S = 3600;
const rideId = decodeURIComponent(location.pathname.replace(/^\/rides\//, "").replace(/\/$/, ""));
const hrCanvas = document.getElementById("hr-chart");
const pwrCanvas = document.getElementById("pwr-chart");
const cadCanvas = document.getElementById("cad-chart");
const METRICS = ["hr", "pwr", "cad"];
let mode = "none"; // "ride" | "live" | "none"
let series = { hr: [], pwr: [], cad: [] };
// No power meter on this bike: the stored ride has no power value at all (totals.output_kj null), or the
// live record carries no power. The chart then says so instead of "no data yet".
let noPowerMeter = false;
let finished = false; // the ride has ended (or is finalized): no live trace, and no note about one
let rideName = null;
let rideTitle = null;

function message(text) {
  const m = document.getElementById("ride-message");
  m.hidden = false;
  m.textContent = text;
}

function redraw() {
  drawChart(hrCanvas, { points: series.hr, color: "#ff5c6c", yLabel: "bpm" });
  drawChart(pwrCanvas, {
    points: series.pwr,
    color: "#ffc14d",
    yLabel: "W",
    yMin: 0,
    empty: noPowerMeter ? "No power meter" : "no data yet",
  });
  drawChart(cadCanvas, { points: series.cad, color: "#4cc2ff", yLabel: "rpm", yMin: 0 });
}

function renderTitle() {
  // The shared title (set from the app: `ridesync app --set title=...`) first, then who rode it.
  const who = rideName || null;
  const parts = [rideTitle, who, rideTitle || who ? null : `Ride ${rideId}`].filter(Boolean);
  document.getElementById("title").textContent = parts.join(" — ");
  document.title = `ridesync — ${parts.join(" — ")}`;
}

function stat(k, v) {
  return el("div", { class: "stat" }, el("div", { class: "k", text: k }), el("div", { class: "v", text: v }));
}

function renderSummary(body) {
  const s = document.getElementById("ride-summary");
  const totals = body.totals && typeof body.totals === "object" ? body.totals : {};
  const sync = body.sync && typeof body.sync === "object" ? body.sync.state : body.sync_state;
  const shared = body.shared && typeof body.shared === "object" ? body.shared : {};
  if (typeof shared.title === "string" && shared.title.trim()) rideTitle = shared.title.trim();
  const rating = document.getElementById("rating");
  if (typeof shared.rating === "number" && shared.rating >= 1) {
    const n = Math.max(1, Math.min(5, Math.round(shared.rating)));
    rating.textContent = "★".repeat(n) + "☆".repeat(5 - n);
    rating.title = `rated ${shared.rating} of 5`;
    rating.dataset.rating = String(shared.rating);
    rating.hidden = false;
  }
  renderTitle();
  finished = body.phase !== "active" && body.phase !== "pending" && body.phase !== undefined;
  const stored = Object.values(body.samples && typeof body.samples === "object" ? body.samples : {}).reduce(
    (a, b) => a + (typeof b === "number" ? b : 0),
    0,
  );
  if (totals.output_kj === null && stored > 0) noPowerMeter = true;
  const items = [
    stat("phase", String(body.phase ?? "—")),
    stat("authority", String(body.authority ?? "—")),
    stat("duration", typeof body.duration_s === "number" ? fmtClock(body.duration_s) : "—"),
    stat("sync", typeof sync === "string" ? sync : "—"),
    stat("end events", String(body.end_events_counted ?? "—")),
  ];
  for (const [k, label, unit] of [
    ["avg_hr", "avg HR", "bpm"],
    ["max_hr", "max HR", "bpm"],
    ["avg_power_w", "avg power", "W"],
    ["output_kj", "output", "kJ"],
    ["avg_cadence", "avg cadence", "rpm"],
  ]) {
    if (typeof totals[k] === "number") items.push(stat(label, `${Math.round(totals[k])} ${unit}`));
  }
  if (noPowerMeter) items.push(stat("output", "no power meter"));
  s.replaceChildren(...items);
  s.hidden = false;
}

// One download link per format: GET /v1/rides/{id}/export?format=… with the page's token (the backend
// names the file in Content-Disposition).
function renderExport() {
  const nav = document.getElementById("ride-export");
  for (const a of nav.querySelectorAll("a[data-format]")) {
    a.href = withToken(`/v1/rides/${encodeURIComponent(rideId)}/export`, { format: a.dataset.format });
  }
  nav.hidden = false;
}

// {"series": {"hr": [[t_s, v|null], ...], "pwr": [...]}}: t_s seconds from the ride's start.
function takeSeries(body) {
  const src = body && typeof body.series === "object" && body.series ? body.series : null;
  if (!src) return false;
  const clean = (arr) =>
    Array.isArray(arr)
      ? arr.filter((p) => Array.isArray(p) && typeof p[0] === "number").map((p) => [p[0], typeof p[1] === "number" ? p[1] : null])
      : [];
  const got = { hr: clean(src.hr), pwr: clean(src.pwr), cad: clean(src.cad) };
  if (!got.hr.length && !got.pwr.length && !got.cad.length) return false; // no samples yet: keep the live trace
  series = got;
  mode = "ride";
  if (!series.pwr.some((p) => p[1] !== null) && series.hr.length) noPowerMeter = true;
  for (const key of METRICS) {
    const n = series[key].filter((p) => p[1] !== null).length;
    document.getElementById(`${key}-note`).textContent =
      key === "pwr" && noPowerMeter
        ? "This bike has no power meter: the ride has heart rate and cadence only."
        : `${n} points from the backend's resolved ride`;
  }
  redraw();
  return true;
}

async function loadRide() {
  const path = `/v1/rides/${encodeURIComponent(rideId)}`;
  const res = await getJSON(path);
  if (res.status === 200 && res.body) {
    renderSummary(res.body);
    renderExport();
    if (takeSeries(res.body)) return true;
    const s = await getJSON(`${path}/series`);
    if (s.status === 200 && takeSeries(s.body)) return true;
    message(
      s.status === 200
        ? "The backend holds no samples of this ride yet. The charts below show the rider's live trace since the page opened."
        : `The backend has this ride's summary but no series to chart (GET ${path}/series → HTTP ${s.status}).`,
    );
    return false;
  }
  if (res.status === 404 && !(res.body && res.body.error)) {
    message(
      `Ride history is not available: this backend does not serve GET ${path} yet (HTTP 404), so the durable ` +
        "sync lane is not running here. The charts below show this rider's live trace since the page opened.",
    );
  } else if (res.status === 404) {
    message(`The backend has no copy of ride ${rideId} yet.`);
  } else if (res.status === 401 || res.status === 403) {
    message(`This token may not read ride ${rideId}: ${res.body?.detail || `HTTP ${res.status}`}.`);
  } else if (res.status === 0) {
    message("The backend is unreachable.");
  } else {
    message(`GET ${path} answered HTTP ${res.status}.`);
  }
  return false;
}

async function liveTrace() {
  const entry = await getJSON(`/dashboard/v1/rides/${encodeURIComponent(rideId)}`);
  if (entry.status !== 200 || !entry.body) {
    // A finished ride (or one charted from the backend) needs no live trace, so no note about one.
    if (mode !== "ride" && !finished) {
      document.getElementById("hr-note").textContent = "No live trace: this ride is not in a class this token can see.";
    }
    redraw();
    return;
  }
  const { class: classId, device, name } = entry.body;
  rideName = name || device;
  renderTitle();
  const back = document.getElementById("back");
  back.href = withToken(`/classes/${encodeURIComponent(classId)}`);
  back.hidden = false;
  if (mode === "ride" || finished) return;
  mode = "live";
  for (const key of METRICS) {
    document.getElementById(`${key}-note`).textContent = "Live trace since this page opened (not the stored ride).";
  }
  const conn = document.getElementById("conn");
  conn.hidden = false;
  const last = { hr: -1, pwr: -1, cad: -1 };
  let t0 = null;
  const hub = new HubConnection(classId, {
    onState: (s) => {
      conn.dataset.state = s.state;
      conn.textContent = connectionText(s);
      conn.title = s.detail || "";
    },
    onFrame: (frame) => {
      const rec = frame.type === "delta" && frame.riders ? frame.riders[device] : null;
      if (!rec) return;
      // The bike reports cadence but no power: no power meter (not "not yet").
      if (rec.presence === "here") noPowerMeter = Boolean(rec.cad) && !rec.pwr;
      for (const key of METRICS) {
        const m = rec[key];
        if (!m || typeof m.t !== "number" || m.seq === last[key]) continue;
        last[key] = m.seq;
        if (t0 === null) t0 = m.t;
        // A value that is not live is a gap in the line, never a 0.
        series[key].push([m.t - t0, m.state === "live" && typeof m.v === "number" ? m.v : null]);
        const cutoff = m.t - t0 - LIVE_KEEP_S;
        while (series[key].length && series[key][0][0] < cutoff) series[key].shift();
      }
    },
  });
  hub.start();
  setInterval(redraw, 1000);
}

renderTitle();
if (params.get("class")) {
  const back = document.getElementById("back");
  back.href = withToken(`/classes/${encodeURIComponent(params.get("class"))}`);
  back.hidden = false;
}
new ResizeObserver(() => redraw()).observe(document.body);
redraw();
loadRide().then(() => liveTrace());
