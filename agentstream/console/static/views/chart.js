// Charts drawn as SVG elements by hand: no chart library to download or trust. Labels are text
// nodes (a tool's or a model's name is data).
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

const money = (v) => (v >= 1 ? `$${v.toFixed(2)}` : `$${v.toPrecision(2)}`);

// Horizontal bars: [{key, usd}], largest first.
export function barChart(rows, { width = 420, row = 22, label = 150 } = {}) {
  const top = rows.slice(0, 12);
  const max = Math.max(...top.map((r) => r.usd), 1e-12);
  const root = svg("svg", { width, height: top.length * row + 8, role: "img", class: "bar-chart" });
  top.forEach((r, i) => {
    const y = i * row + 4;
    const w = Math.max(1, ((width - label - 70) * r.usd) / max);
    const name = r.key.length > 22 ? `${r.key.slice(0, 21)}…` : r.key;
    root.append(svg("text", { x: 0, y: y + 14 }, name));
    root.append(svg("rect", { class: "bar", x: label, y: y + 3, width: w, height: row - 8 }));
    root.append(svg("text", { x: label + w + 4, y: y + 14 }, money(r.usd)));
  });
  return root;
}

// Colours as presentation attributes: the CSP allows no inline style.
// Lines over time: series [{key, points: [{t_ms, usd}]}] on buckets of bucket_ms (a missing bucket is 0).
const COLOURS = ["#2458d6", "#7a4cd6", "#2b9aa0", "#b86e00", "#c43131", "#1f8a4c", "#687385", "#d6249f"];

export function lineChart(series, since, until, bucket, { width = 520, height = 200 } = {}) {
  const pad = { l: 52, r: 110, t: 8, b: 22 };
  const start = Math.floor(since / bucket) * bucket;
  const count = Math.max(1, Math.ceil((until - start) / bucket));
  const dense = series.map((s) => {
    const values = new Array(count).fill(0);
    for (const p of s.points) {
      const i = Math.floor((p.t_ms - start) / bucket);
      if (i >= 0 && i < count) values[i] += p.usd;
    }
    return { key: s.key, values };
  });
  const max = Math.max(1e-12, ...dense.flatMap((s) => s.values));
  const x = (i) => pad.l + ((width - pad.l - pad.r) * i) / Math.max(1, count - 1);
  const y = (v) => height - pad.b - ((height - pad.t - pad.b) * v) / max;
  const root = svg("svg", { width, height, role: "img", class: "line-chart" });
  root.append(svg("line", { class: "axis", x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b }));
  root.append(svg("text", { x: 0, y: pad.t + 10 }, money(max)));
  root.append(svg("text", { x: 0, y: height - pad.b }, "$0"));
  root.append(svg("text", { x: pad.l, y: height - 4 }, new Date(start).toISOString().slice(5, 16).replace("T", " ")));
  dense.forEach((s, n) => {
    const colour = COLOURS[n % COLOURS.length];
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { class: "line", points, stroke: colour }));
    root.append(svg("text", { x: width - pad.r + 6, y: pad.t + 12 + n * 14, fill: colour }, s.key.slice(0, 16)));
  });
  return root;
}
