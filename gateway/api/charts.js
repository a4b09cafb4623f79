// Hookgate's charts: plain SVG drawn from the series of GET /v1/stats (one entry per bucket,
// zeros included). No library and no network: the dashboard loads this file from the gateway.
//
// Every drawn mark carries data-key, data-value and data-start, so what a chart shows can be
// read back (the browser test does) and each mark has a <title> tooltip.
"use strict";
const HookgateCharts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 600, H = 200, PAD = { left: 44, right: 10, top: 10, bottom: 22 };

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }

  function label(t, bucketSeconds) {
    const d = new Date(t);
    return bucketSeconds >= 3600
      ? d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit" })
      : d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  }

  // A round number at or above v, for the top of the y axis.
  function ceilNice(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function frame(box, top, unit, buckets, bucketSeconds) {
    box.innerHTML = "";
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img" }, box);
    const plotH = H - PAD.top - PAD.bottom;
    for (const f of [0, 0.5, 1]) {
      const y = PAD.top + plotH * (1 - f);
      el("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }, svg);
      const t = el("text", { x: PAD.left - 4, y: y + 4, class: "axis", "text-anchor": "end" }, svg);
      t.textContent = (Math.round(top * f * 10) / 10) + unit;
    }
    if (buckets.length) {
      const first = el("text", { x: PAD.left, y: H - 6, class: "axis" }, svg);
      first.textContent = label(buckets[0].start, bucketSeconds);
      const last = el("text", { x: W - PAD.right, y: H - 6, class: "axis", "text-anchor": "end" }, svg);
      last.textContent = label(buckets[buckets.length - 1].start, bucketSeconds);
    }
    return { svg, plotH, plotW: W - PAD.left - PAD.right };
  }

  function legend(box, series) {
    const l = document.createElement("div");
    l.className = "legend";
    l.innerHTML = series.map(s => `<span><i class="swatch ${s.cls}"></i>${s.label}</span>`).join("");
    box.appendChild(l);
  }

  // Stacked bars: one column per bucket, one segment per series with a value.
  function bars(box, buckets, series, bucketSeconds) {
    const totals = buckets.map(b => series.reduce((n, s) => n + (b[s.key] || 0), 0));
    const top = ceilNice(Math.max(0, ...totals));
    const { svg, plotH, plotW } = frame(box, top, "", buckets, bucketSeconds);
    const step = plotW / Math.max(1, buckets.length);
    const width = Math.max(0.6, step * 0.8);
    buckets.forEach((b, i) => {
      let y = PAD.top + plotH;
      for (const s of series) {
        const v = b[s.key] || 0;
        if (!v) continue;
        const h = (v / top) * plotH;
        y -= h;
        const r = el("rect", { x: PAD.left + i * step + (step - width) / 2, y, width, height: Math.max(h, 0.5),
          class: "mark bar " + s.cls, "data-key": s.key, "data-value": v, "data-start": b.start }, svg);
        el("title", {}, r).textContent = `${label(b.start, bucketSeconds)}: ${v} ${s.label.toLowerCase()}`;
      }
    });
    legend(box, series);
  }

  // Lines; a bucket without a value (null) breaks the line, and a lone value is a dot.
  function lines(box, buckets, series, bucketSeconds, unit, fixedTop) {
    const values = buckets.flatMap(b => series.map(s => b[s.key])).filter(v => v !== null && v !== undefined);
    const top = fixedTop || ceilNice(Math.max(0, ...values));
    const { svg, plotH, plotW } = frame(box, top, unit, buckets, bucketSeconds);
    const step = plotW / Math.max(1, buckets.length);
    for (const s of series) {
      let d = "", open = false;
      buckets.forEach((b, i) => {
        const v = b[s.key];
        if (v === null || v === undefined) { open = false; return; }
        const x = PAD.left + i * step + step / 2, y = PAD.top + plotH * (1 - Math.min(v, top) / top);
        d += (open ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1) + " ";
        open = true;
        const dot = el("circle", { cx: x, cy: y, r: 2.2, class: "mark dot " + s.cls, "data-key": s.key, "data-value": v, "data-start": b.start }, svg);
        el("title", {}, dot).textContent = `${label(b.start, bucketSeconds)}: ${s.label} ${Math.round(v * 10) / 10}${unit}`;
      });
      if (d) el("path", { d, class: "line " + s.cls }, svg);
    }
    legend(box, series);
  }

  const DELIVERIES = [
    { key: "succeeded", label: "Succeeded", cls: "succeeded" },
    { key: "failed", label: "Failed", cls: "failed" },
    { key: "retried", label: "Retried", cls: "retried" },
  ];

  // The three charts of a series: deliveries, failure rate, attempt latency.
  function draw(prefix, stats) {
    const b = stats.buckets, s = stats.bucket_seconds;
    bars(document.getElementById(prefix + "-deliveries"), b, DELIVERIES, s);
    const rate = b.map(x => ({ start: x.start, rate: x.failure_rate === null ? null : x.failure_rate * 100 }));
    const rateBox = document.getElementById(prefix + "-failure-rate");
    if (rateBox) lines(rateBox, rate, [{ key: "rate", label: "Failed deliveries", cls: "failed" }], s, " %", 100);
    lines(document.getElementById(prefix + "-latency"), b,
      [{ key: "latency_p50_ms", label: "p50", cls: "p50" }, { key: "latency_p95_ms", label: "p95", cls: "p95" }], s, " ms");
  }

  return { bars, lines, draw };
})();
