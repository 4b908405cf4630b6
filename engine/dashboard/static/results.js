// The results page: every ride of a class with its totals, after the class and after a server restart.
// `/classes/{class}/results?token=T`: the rides come from GET /dashboard/v1/classes/{class}/results (kept
// on disk by the server), each ride's totals from the backend's resolved view, GET /v1/rides/{id}.
import { fmtClock } from "./chart.js";
import { el, getJSON, token, withToken } from "./common.js";

const m = location.pathname.match(/^\/classes\/([^/]+)\/results\/?$/);
const classId = m ? decodeURIComponent(m[1]) : "";

function message(text) {
  const p = document.getElementById("results-message");
  p.hidden = false;
  p.textContent = text;
}

function num(v, digits = 0) {
  return typeof v === "number" ? v.toFixed(digits) : "—";
}

function td(text, cls) {
  return el("td", { class: cls, text });
}

function rating(v) {
  if (typeof v !== "number" || v < 1) return "—";
  const n = Math.max(1, Math.min(5, Math.round(v)));
  return "★".repeat(n) + "☆".repeat(5 - n);
}

function row(entry, view) {
  const totals = view && typeof view.totals === "object" && view.totals ? view.totals : {};
  const shared = view && typeof view.shared === "object" && view.shared ? view.shared : {};
  const sync = view ? (view.sync && typeof view.sync === "object" ? view.sync.state : view.sync_state) : null;
  const rideLink = el("a", {
    href: withToken(`/rides/${encodeURIComponent(entry.ride_id)}`, { class: classId }),
    text: entry.ride_id,
  });
  const noPower = view && totals.output_kj === null;
  return el(
    "tr",
    { "data-ride": entry.ride_id, "data-device": entry.device },
    td(entry.name || entry.device, "who"),
    el("td", {}, rideLink),
    td(typeof shared.title === "string" && shared.title ? shared.title : "—"),
    td(view && typeof view.duration_s === "number" ? fmtClock(view.duration_s) : "—", "num"),
    noPower ? td("no meter", "num muted") : td(num(totals.output_kj, 1), "num kj"),
    noPower ? td("—", "num muted") : td(num(totals.avg_power_w), "num"),
    td(num(totals.avg_cadence), "num"),
    td(num(totals.avg_hr), "num"),
    td(num(totals.max_hr), "num"),
    el("td", { class: rating(shared.rating) === "—" ? "muted" : "rating", text: rating(shared.rating) }),
    td(view ? `${view.phase ?? "?"}${typeof sync === "string" ? ` · ${sync}` : ""}` : "not on this backend", "muted"),
  );
}

async function load() {
  document.getElementById("title").textContent = `${classId} — results`;
  document.title = `ridesync — ${classId} results`;
  const back = document.getElementById("back");
  back.href = withToken(`/classes/${encodeURIComponent(classId)}`);
  back.hidden = false;
  if (!token) {
    message("This page needs a viewer token: /classes/<class>/results?token=<token>.");
    return;
  }
  const res = await getJSON(`/dashboard/v1/classes/${encodeURIComponent(classId)}/results`);
  if (res.status !== 200 || !res.body || !Array.isArray(res.body.rides)) {
    message(`The class's rides cannot be listed: ${res.body?.detail || `HTTP ${res.status}`}.`);
    return;
  }
  const entries = res.body.rides;
  const table = document.getElementById("results");
  table.dataset.rides = String(entries.length);
  document.getElementById("results-count").textContent = `${entries.length} ride${entries.length === 1 ? "" : "s"}`;
  if (!entries.length) message("No rides in this class yet.");
  const views = await Promise.all(
    entries.map(async (e) => {
      const r = await getJSON(`/v1/rides/${encodeURIComponent(e.ride_id)}`);
      return r.status === 200 && r.body ? r.body : null;
    }),
  );
  // Most output first; rides without a power meter after them, longest first.
  const order = entries.map((e, i) => ({ e, v: views[i] }));
  const kj = (x) => (typeof x.v?.totals?.output_kj === "number" ? x.v.totals.output_kj : -1);
  const dur = (x) => (typeof x.v?.duration_s === "number" ? x.v.duration_s : -1);
  order.sort((a, b) => kj(b) - kj(a) || dur(b) - dur(a) || (a.e.name || a.e.device).localeCompare(b.e.name || b.e.device));
  document.getElementById("results-rows").replaceChildren(...order.map((x) => row(x.e, x.v)));
  table.dataset.loaded = String(views.filter(Boolean).length);
}

load();
