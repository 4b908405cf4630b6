// A line chart on <canvas>, no library: time on x (seconds), gaps where a value is null.
// drawChart(canvas, {points: [[x, y|null], ...], color, yLabel, yMin, empty}); `empty` is the text drawn
// when there is no value at all (also in the canvas's data-empty).

function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

// Steps a person reads as clock time: 10 s, 30 s, 1, 2, 5, 10, 15, 30 min, 1 h...
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
function timeStep(span, target) {
  const raw = span / Math.max(1, target);
  return TIME_STEPS.find((s) => s >= raw) || Math.ceil(raw / 3600) * 3600;
}

export function fmtClock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

export function drawChart(canvas, { points, color, yLabel, yMin = null, empty = "no data yet" }) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 600;
  const cssH = canvas.clientHeight || 240;
  canvas.width = Math.round(cssW * dpr);
  canvas.height = Math.round(cssH * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const styles = getComputedStyle(document.documentElement);
  const muted = styles.getPropertyValue("--muted").trim() || "#9aa6b2";
  const line = styles.getPropertyValue("--line").trim() || "#2b3340";
  const font = `${Math.round(Math.max(11, Math.min(18, cssW / 60)))}px system-ui, sans-serif`;
  const valid = points.filter((p) => typeof p[1] === "number" && Number.isFinite(p[1]));
  canvas.dataset.points = String(valid.length);
  canvas.dataset.empty = valid.length === 0 ? empty : "";
  ctx.font = font;
  ctx.fillStyle = muted;
  if (valid.length === 0) {
    ctx.textAlign = "center";
    ctx.fillText(empty, cssW / 2, cssH / 2);
    return;
  }
  const pad = { l: 56, r: 24, t: 26, b: 28 };
  const w = cssW - pad.l - pad.r;
  const h = cssH - pad.t - pad.b;
  const xs = points.map((p) => p[0]);
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (x1 - x0 < 10) x1 = x0 + 10;
  let y0 = Math.min(...valid.map((p) => p[1]));
  let y1 = Math.max(...valid.map((p) => p[1]));
  if (yMin !== null) y0 = Math.min(y0, yMin);
  const spanY = Math.max(10, y1 - y0);
  y0 = Math.max(0, y0 - spanY * 0.08);
  y1 = y1 + spanY * 0.08;
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * w;
  const Y = (y) => pad.t + h - ((y - y0) / (y1 - y0)) * h;

  // grid and axes
  ctx.strokeStyle = line;
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const yStep = niceStep(y1 - y0, 4);
  for (let y = Math.ceil(y0 / yStep) * yStep; y <= y1; y += yStep) {
    ctx.beginPath();
    ctx.moveTo(pad.l, Y(y));
    ctx.lineTo(pad.l + w, Y(y));
    ctx.stroke();
    ctx.fillText(String(Math.round(y)), pad.l - 6, Y(y));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const xStep = timeStep(x1 - x0, Math.max(2, Math.floor(w / 110)));
  for (let x = Math.ceil(x0 / xStep) * xStep; x <= x1; x += xStep) {
    if (X(x) > cssW - 18) break; // a label cut by the edge reads as a wrong time
    ctx.fillText(fmtClock(x - x0), X(x), pad.t + h + 6);
  }
  ctx.textAlign = "right";
  ctx.textBaseline = "bottom";
  ctx.fillText(yLabel, pad.l - 6, pad.t - 6);

  // the series: a null (no contact, stale, no sample) breaks the line instead of drawing a 0
  ctx.strokeStyle = color;
  ctx.lineWidth = 2.5;
  ctx.lineJoin = "round";
  ctx.beginPath();
  let pen = false;
  for (const [x, y] of points) {
    if (typeof y !== "number" || !Number.isFinite(y)) {
      pen = false;
      continue;
    }
    if (pen) ctx.lineTo(X(x), Y(y));
    else ctx.moveTo(X(x), Y(y));
    pen = true;
  }
  ctx.stroke();
}
