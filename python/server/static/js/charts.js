// Live line charts, hand-drawn in SVG (no library): a few series over the last N samples, the
// y axis from 0 to a round maximum, gaps where a sample has no value.

import { clear, h, num, s } from "./dom.js";

const W = 480;
const H = 120;
const PAD = { left: 34, right: 6, top: 8, bottom: 16 };

function roundUp(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v);
}

/**
 * A chart in a <figure>: `series` = [{name, cls}]; returns {figure, draw(samples)} where each
 * sample is an array of values (one per series; null for none) and `capacity` samples fit (the
 * caller keeps at most that many).
 */
export function lineChart({ id, title, unit, series, capacity, digits = 1 }) {
  const plot = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  const legend = h("figcaption", {});
  const figure = h("figure", { class: "panel chart-box", id }, h("h3", {}, title), plot, legend);

  function draw(samples) {
    const values = samples.flat().filter((v) => v !== null && Number.isFinite(v));
    const top = roundUp(Math.max(0, ...values));
    const x = (i) => PAD.left + ((W - PAD.left - PAD.right) * (i + capacity - samples.length)) / (capacity - 1);
    const y = (v) => H - PAD.bottom - ((H - PAD.top - PAD.bottom) * v) / top;
    clear(plot).append(
      s("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0) }),
      s("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y(top), y2: y(top) }),
      s("text", { class: "axis-label", x: PAD.left - 4, y: y(top) + 4, "text-anchor": "end" }, num(top, 3)),
      s("text", { class: "axis-label", x: PAD.left - 4, y: y(0) + 4, "text-anchor": "end" }, "0"),
      s("text", { class: "axis-label", x: W - PAD.right, y: H - 2, "text-anchor": "end" }, "now"),
    );
    series.forEach((line, k) => {
      let points = [];
      const flush = () => {
        if (points.length > 1) plot.append(s("polyline", { class: `line ${line.cls}`, points: points.join(" ") }));
        if (points.length === 1) {
          const [cx, cy] = points[0].split(",");
          plot.append(s("circle", { class: `dot ${line.cls}`, cx, cy, r: 1.8 }));
        }
        points = [];
      };
      samples.forEach((sample, i) => {
        const v = sample[k];
        if (v === null || !Number.isFinite(v)) flush();
        else points.push(`${num(x(i), 1)},${num(y(v), 1)}`);
      });
      flush();
    });
    // each series' latest value (a latency has none over an interval without requests)
    const latest = (k) => samples.map((x) => x[k]).filter((v) => v !== null && Number.isFinite(v)).pop();
    clear(legend).append(
      ...series.map((line, k) => {
        const v = latest(k);
        return h("span", { class: `key ${line.cls}` }, `${line.name} `, h("strong", {}, v === undefined ? "–" : `${num(v, digits)}${unit}`));
      }),
    );
  }

  draw([]);
  return { figure, draw };
}
