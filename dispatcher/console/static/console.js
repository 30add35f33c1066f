// The overview's live charts, drawn as plain SVG: tasks/s dispatched and acked, and
// the backlog, over the last 15 minutes, read from the console's JSON endpoint every
// few seconds. No library and no inline script: the CSP allows our own files only.
"use strict";

(function () {
  const REFRESH_MS = 3000;
  const NS = "http://www.w3.org/2000/svg";
  const PAD = { left: 52, right: 14, top: 10, bottom: 22 };
  const RATES = [{ key: "dispatched" }, { key: "acked" }];
  const BACKLOG = [{ key: "backlog" }];
  const MIN_SPAN_MS = 2 * 60000;
  const TICKS_S = [30, 60, 120, 300];

  function element(name, attributes, text) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attributes)) {
      node.setAttribute(key, value);
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function format(value) {
    if (value >= 1e6) return (value / 1e6).toFixed(1) + "M";
    if (value >= 10000) return (value / 1000).toFixed(0) + "k";
    if (value >= 1000) return (value / 1000).toFixed(1) + "k";
    return value >= 10 ? value.toFixed(0) : value.toFixed(1);
  }

  // A round top for the y axis (1, 2 or 5 times a power of ten), never below 1.
  function ceiling(value) {
    if (value <= 1) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function highest(points, series) {
    let top = 0;
    for (const point of points) {
      for (const one of series) {
        if (point[one.key] != null) top = Math.max(top, point[one.key]);
      }
    }
    return ceiling(top);
  }

  function axes(svg, scale, data, top) {
    for (const value of [0, top / 2, top]) {
      svg.append(element("line", { class: "grid", x1: scale.left, x2: scale.right,
                                   y1: scale.y(value), y2: scale.y(value) }));
      svg.append(element("text", { class: "axis", x: scale.left - 6, y: scale.y(value) + 4,
                                   "text-anchor": "end" }, format(value)));
    }
    const step = TICKS_S.find((seconds) => scale.span / 1000 / seconds <= 6);
    for (let ago = 0; ago * 1000 <= scale.span; ago += step) {
      const label = ago === 0 ? "now" : ago < 60 ? "-" + ago + " s" : "-" + ago / 60 + " min";
      svg.append(element("text", { class: "axis", x: scale.x(data.now_ms - ago * 1000),
                                   y: scale.bottom + 16, "text-anchor": "middle" }, label));
    }
  }

  // The time axis spans the history there is: from 2 to 15 minutes.
  function span(data) {
    const first = data.points.length ? data.points[0].t : data.now_ms;
    return Math.min(data.window_ms, Math.max(MIN_SPAN_MS, data.now_ms - first));
  }

  // One polyline per unbroken run of values: a gap (null) breaks the line.
  function line(svg, scale, points, key) {
    let run = [];
    const flush = function () {
      if (run.length > 1) {
        svg.append(element("polyline", { class: "line " + key, points: run.join(" ") }));
      } else if (run.length === 1) {
        const [x, y] = run[0].split(",");
        svg.append(element("circle", { class: "line " + key, cx: x, cy: y, r: 2 }));
      }
      run = [];
    };
    for (const point of points) {
      if (point[key] == null || point.t < scale.start) {
        flush();
        continue;
      }
      run.push(scale.x(point.t).toFixed(1) + "," + scale.y(point[key]).toFixed(1));
    }
    flush();
  }

  function draw(svg, data, series) {
    const box = svg.viewBox.baseVal;
    const top = highest(data.points, series);
    const height = box.height - PAD.top - PAD.bottom;
    const scale = {
      span: span(data),
      start: data.now_ms - span(data),
      left: PAD.left,
      right: box.width - PAD.right,
      bottom: PAD.top + height,
      x: (t) => PAD.left + ((t - scale.start) / scale.span) * (box.width - PAD.left - PAD.right),
      y: (v) => PAD.top + height - (v / top) * height,
    };
    svg.replaceChildren();
    axes(svg, scale, data, top);
    for (const one of series) line(svg, scale, data.points, one.key);
  }

  function latest(points, key) {
    for (let i = points.length - 1; i >= 0; i--) {
      if (points[i][key] != null) return points[i][key];
    }
    return null;
  }

  function show(id, value, whole) {
    const text = whole ? Math.round(value).toLocaleString("en") : format(value);
    document.getElementById(id).textContent = value == null ? "–" : text;
  }

  async function refresh(throughput, backlog, status) {
    try {
      const response = await fetch(throughput.dataset.source,
                                   { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) {
        window.location.reload(); // the session ended: the page sends to sign-in
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      draw(throughput, data, RATES);
      draw(backlog, data, BACKLOG);
      show("rate-dispatched", latest(data.points, "dispatched"));
      show("rate-acked", latest(data.points, "acked"));
      show("backlog-now", latest(data.points, "backlog"), true);
      status.textContent = data.points.length
        ? "updated " + new Date().toLocaleTimeString()
        : "waiting for two samples (one every 5 s)";
    } catch (error) {
      status.textContent = "not updated: " + error.message;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const throughput = document.getElementById("throughput-chart");
    if (!throughput) return;
    const backlog = document.getElementById("backlog-chart");
    const status = document.getElementById("chart-status");
    refresh(throughput, backlog, status);
    window.setInterval(() => refresh(throughput, backlog, status), REFRESH_MS);
  });
})();
