// End-to-end live latency as this page sees it: for every heart-rate value newly seen, by (device, seq),
// the page's receipt time minus the value's sensor timestamp `t`. `t` is stamped by the bike's sensor
// adapter when it received the strap's notification (adapters/ble/source.py), and the hub passes it on
// unchanged (rounded to 1 ms), so this spans strap adapter -> publisher -> hub -> this page.
//
// Clock assumption: `t` is the bike's unix time and the receipt time is this browser's Date.now(). That is
// only meaningful when both run on one machine (`ridesync demo` and a browser on the same laptop), which
// is what this readout is for; with another machine's clock the numbers include the clock offset (the
// readout says so when values come out clearly negative). The hub-clock skew used for ages (common.js
// `clock`) is not applied here on purpose: it would hide the very delay being measured.
//
// Read it from a console or a test: window.ridesyncLatency() -> {count, window, p50_ms, p99_ms, max_ms, ...};
// window.ridesyncLatency.samples() -> the window's latencies (ms, oldest first); .entries() -> the same as
// [receipt time (unix ms), latency (ms)] pairs, so a bench can cut exactly the seconds it measured; .reset()
// starts over.

export const WINDOW_SIZE = 4096; // the most recent samples kept (about 8 min of an 8-rider class at 1 Hz)
// Receipt before `t` by more than this cannot be rounding (t is rounded to 1 ms): the clocks differ.
const CLOCK_MISMATCH_MS = -50;

export class LatencyWindow {
  constructor(size = WINDOW_SIZE) {
    this.size = size;
    this.reset();
  }

  reset() {
    this.ring = new Float64Array(this.size);
    this.at = new Float64Array(this.size); // receipt time (unix ms) of each sample
    this.next = 0; // where the next sample goes
    this.filled = 0;
    this.count = 0; // samples recorded since the last reset (the window holds the last `size`)
    this.lastSeq = new Map(); // device -> seq of the last heart-rate value seen
    this.snapshotValues = 0; // values first seen in a subscription's snapshot: seen, not measured
    this.since = Date.now();
  }

  // One hub frame's riders, received at `receivedMs` (Date.now() when the message arrived). `snapshot`:
  // the frame a new subscription starts with, whose values were published before we subscribed; they are
  // marked seen but not measured (their delay is our subscribe time, not the pipeline's).
  observe(riders, receivedMs, snapshot) {
    for (const [device, record] of Object.entries(riders)) {
      const hr = record && typeof record === "object" ? record.hr : null;
      if (!hr || hr.state !== "live" || typeof hr.v !== "number") continue;
      if (typeof hr.t !== "number" || !Number.isInteger(hr.seq)) continue;
      // A delta carries the rider's whole record: the same heart-rate value rides along with every
      // cadence or power change until a new one arrives. Count each value once.
      if (this.lastSeq.get(device) === hr.seq) continue;
      this.lastSeq.set(device, hr.seq);
      if (snapshot) {
        this.snapshotValues += 1;
        continue;
      }
      this.ring[this.next] = receivedMs - hr.t * 1000;
      this.at[this.next] = receivedMs;
      this.next = (this.next + 1) % this.size;
      this.filled = Math.min(this.size, this.filled + 1);
      this.count += 1;
    }
  }

  samples() {
    return this.entries().map((e) => e[1]);
  }

  entries() {
    const out = [];
    const start = this.filled < this.size ? 0 : this.next;
    for (let i = 0; i < this.filled; i++) {
      const k = (start + i) % this.size;
      out.push([this.at[k], this.ring[k]]);
    }
    return out;
  }

  // Nearest-rank percentiles, as `ridesync bench demo` computes them for its Python viewer.
  summary() {
    const sorted = this.samples().sort((a, b) => a - b);
    const n = sorted.length;
    const q = (p) => (n ? Math.round(sorted[Math.min(n - 1, Math.floor(p * n))] * 100) / 100 : null);
    return {
      metric: "hr",
      count: this.count,
      window: n,
      window_size: this.size,
      snapshot_values: this.snapshotValues,
      p50_ms: q(0.5),
      p99_ms: q(0.99),
      max_ms: n ? Math.round(sorted[n - 1] * 100) / 100 : null,
      min_ms: n ? Math.round(sorted[0] * 100) / 100 : null,
      since_ms: this.since,
    };
  }
}

// Whole milliseconds: `t` comes rounded to 1 ms and Date.now() counts whole ms, so a decimal would lie.
function fmtMs(ms) {
  return ms === null ? "—" : String(Math.round(ms));
}

// The footer readout: "live latency p50 X ms · p99 Y ms", with what it means in the tooltip.
export function latencyText(s) {
  if (!s.window) return { text: "live latency: waiting for heart-rate values", state: "none" };
  if (s.p50_ms < CLOCK_MISMATCH_MS) {
    return { text: "live latency: n/a (this browser's clock is not the bike's)", state: "clock" };
  }
  return { text: `live latency p50 ${fmtMs(s.p50_ms)} ms · p99 ${fmtMs(s.p99_ms)} ms`, state: "ok" };
}

export function latencyTitle(s) {
  return (
    `Strap notification received by the bike -> shown here, over the last ${s.window} heart-rate values ` +
    `(max ${fmtMs(s.max_ms)} ms). Assumes this browser runs on the same machine as the bikes (one clock).`
  );
}
