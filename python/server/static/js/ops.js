// Operations: health, capabilities, the models installed, API keys (create shows the secret once,
// list, revoke) and live charts of the server's metrics (requests, latency percentiles, the queue,
// requests refused as busy).

import { get, health, post, session } from "./api.js";
import { lineChart } from "./charts.js";
import { clear, h, msg, num } from "./dom.js";
import { confirmAction, start } from "./shell.js";

const POLL_MS = 2000;
const KEEP = 60; // samples on a chart: two minutes
let timer = null;

async function render(main, ctx) {
  const keys = h("section", { class: "panel", id: "keys" });
  const charts = h("section", { class: "charts", id: "charts" });
  const [healthBox, modelsBox] = await Promise.all([healthPanel(), modelsPanel()]);
  main.append(h("h1", {}, "Operations"), h("div", { class: "ops" }, healthBox, capabilitiesPanel(ctx.caps)), charts, keys, modelsBox);
  metrics(charts);
  await drawKeys(keys, ctx);
}

function table(head, rows, props = {}) {
  return h("table", props, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))), h("tbody", {}, rows));
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined && v !== null).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

async function healthPanel() {
  const hl = await health();
  const backend = hl.backend || {};
  return h(
    "section",
    { class: "panel", id: "health" },
    h("h2", {}, "Health ", h("span", { class: hl.status === "ok" ? "badge ok" : "badge bad", id: "health-status" }, hl.status)),
    facts([
      ["version", hl.version],
      ["faces", String(hl.faces)],
      ["workers", String(hl.workers)],
      ["search threads", String(hl.threads)],
      ["SIMD", `${hl.simd_level} (of ${hl.simd_levels_available.join(", ")})`],
      ["backend", `${backend.backend} (${(backend.devices || []).join(", ")})`],
      ["store", hl.store ? `${hl.store.store}${hl.store.reachable ? "" : `: not answering (${hl.store.detail || "down"})`}` : undefined],
      ["licence", hl.license ? hl.license.state || JSON.stringify(hl.license) : undefined],
    ]),
  );
}

function capabilitiesPanel(caps) {
  const unsupported = Object.entries(caps.unsupported);
  return h(
    "section",
    { class: "panel", id: "capabilities" },
    h("h2", {}, "Capabilities"),
    facts([
      ["face_field", caps.face_field.join(", ")],
      ["image_type", caps.image_type.join(", ")],
      ["liveness", caps.liveness_control.installed ? "installed" : "not installed"],
      ["auth", caps.auth.mode],
      ["max body", `${num(caps.limits.max_body_bytes / 1048576, 1)} MiB`],
      ["max pixels", `${num(caps.limits.max_pixels / 1e6, 1)} MP`],
      ["score", caps.score],
    ]),
    h("details", {}, h("summary", {}, `${unsupported.length} not computed, and why`), h("dl", { class: "facts small" }, unsupported.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
  );
}

async function modelsPanel() {
  const m = await get("models", {}, false);
  return h(
    "section",
    { class: "panel", id: "models" },
    h("h2", {}, "Models ", h("span", { class: "muted small" }, m.models_dir)),
    table(
      ["role", "file", "from", "licence"],
      m.model_list.map((x) =>
        h("tr", {}, h("td", {}, x.role), h("td", { title: x.sha256 || "" }, x.file), h("td", {}, x.package ? [x.package, x.version].filter(Boolean).join(" ") : "–"), h("td", { class: "small" }, x.licence || "–")),
      ),
      { class: "models small" },
    ),
  );
}

// ---------------------------------------------------------------------------------------- keys

async function drawKeys(panel, ctx) {
  const status = h("div", { id: "keys-status" });
  const created = h("div", { id: "key-created" });
  let list;
  try {
    list = (await get("keys", {}, true)).key_list;
  } catch (e) {
    clear(panel).append(h("h2", {}, "API keys"), msg("error", e.message));
    return;
  }
  const name = h("input", { id: "key-name", name: "name", maxlength: 128, placeholder: "name, e.g. gate 3" });
  // Signed in, a key makes keys for its own appid; otherwise (--auth off, from this machine) any.
  const appid = session.token ? null : h("input", { id: "key-appid", name: "appid", required: true, pattern: "[A-Za-z0-9_]{1,48}", value: session.appid || "", placeholder: "appid" });
  const form = h("form", { class: "inline", id: "key-form" }, appid, name, h("button", { type: "submit" }, "Create a key"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const key = await post("keys", { name: name.value }, appid ? { appid: appid.value.trim() } : {}, false);
      await drawKeys(panel, ctx);
      document.getElementById("key-created").append(secretBox(key));
    } catch (e) {
      clear(status).append(msg("error", e.message));
    }
  });
  const revoke = (k) => async () => {
    if (!(await confirmAction(`Revoke key ${k.api_key} (${k.name || "no name"})? Its tokens stop working at once.`, "Revoke"))) return;
    try {
      await post("keys/revoke", { api_key: k.api_key });
      await drawKeys(panel, ctx);
    } catch (e) {
      clear(status).append(msg("error", e.message));
    }
  };
  const when = (t) => new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ");
  clear(panel).append(
    h("h2", {}, "API keys ", h("span", { class: "muted small" }, session.token || session.appid ? `of appid ${session.appid}` : "of every appid")),
    list.length
      ? table(
          ["API key", "name", "appid", "created", ""],
          list.map((k) =>
            h(
              "tr",
              { dataset: { key: k.api_key }, class: k.revoked ? "revoked" : "" },
              h("td", { class: "mono" }, k.api_key),
              h("td", {}, k.name),
              h("td", {}, k.appid),
              h("td", {}, when(k.created)),
              h("td", {}, k.revoked ? h("span", { class: "muted" }, `revoked ${when(k.revoked)}`) : h("button", { class: "danger small", onclick: revoke(k) }, "Revoke")),
            ),
          ),
          { class: "keys" },
        )
      : msg("muted", "No key yet."),
    form,
    created,
    status,
  );
}

function secretBox(key) {
  return h(
    "div",
    { class: "secret", role: "alert" },
    h("p", {}, h("strong", {}, "Copy the secret now: it is shown this once and never again.")),
    facts([
      ["api_key", h("code", { id: "new-api-key" }, key.api_key)],
      ["secret_key", h("code", { id: "new-secret-key" }, key.secret_key)],
      ["appid", key.appid],
    ]),
  );
}

// ------------------------------------------------------------------------------------- metrics

/** The percentile `q` (0..1) of the requests counted in `deltas` (per latency bucket, not
 * cumulative), interpolated within its bucket as Prometheus' histogram_quantile does; ms. */
function percentile(bounds, deltas, q) {
  const total = deltas.reduce((a, b) => a + b, 0);
  if (!total) return null;
  let seen = 0;
  for (let i = 0; i < deltas.length; i += 1) {
    if (seen + deltas[i] >= q * total) {
      const low = i === 0 ? 0 : bounds[i - 1];
      const high = bounds[i] ?? bounds[i - 1]; // over the last bound: that bound
      return 1000 * (low + ((high - low) * (q * total - seen)) / deltas[i]);
    }
    seen += deltas[i];
  }
  return null;
}

const api = (route) => !route.startsWith("console") && route !== "unrouted";

/** Requests, latency buckets and busy refusals since `a`, the API's routes only (the console's
 * own polling left out). */
function interval(a, b) {
  const dt = b.time - a.time;
  let requests = 0;
  for (const [route, codes] of Object.entries(b.requests)) {
    if (!api(route)) continue;
    for (const [code, n] of Object.entries(codes)) requests += n - (a.requests[route]?.[code] ?? 0);
  }
  const cumulative = b.latency_buckets.map(() => 0);
  for (const [route, counts] of Object.entries(b.latency)) {
    if (!api(route)) continue;
    counts.forEach((n, i) => (cumulative[i] += n - (a.latency[route]?.[i] ?? 0)));
  }
  const deltas = cumulative.map((n, i) => n - (i ? cumulative[i - 1] : 0));
  const bounds = b.latency_buckets.filter((x) => x !== null);
  return {
    rate: requests / dt,
    p50: percentile(bounds, deltas, 0.5),
    p90: percentile(bounds, deltas, 0.9),
    p99: percentile(bounds, deltas, 0.99),
    busy: b.busy - a.busy,
  };
}

function metrics(panel) {
  const lineOf = (chart) => lineChart({ capacity: KEEP, ...chart });
  const charts = {
    rate: lineOf({ id: "chart-requests", title: "Requests per second", unit: "/s", series: [{ name: "API", cls: "s1" }] }),
    latency: lineOf({ id: "chart-latency", title: "Latency", unit: " ms", digits: 0, series: [{ name: "p50", cls: "s1" }, { name: "p90", cls: "s2" }, { name: "p99", cls: "s3" }] }),
    queue: lineOf({ id: "chart-queue", title: "Queue", unit: "", digits: 0, series: [{ name: "waiting", cls: "s1" }, { name: "running", cls: "s2" }] }),
    busy: lineOf({ id: "chart-busy", title: "Refused: system busy", unit: "", digits: 0, series: [{ name: "per 2 s", cls: "s3" }] }),
  };
  clear(panel).append(h("h2", {}, "Metrics ", h("span", { class: "muted small" }, "live, every 2 s; the raw series at /metrics")), h("div", { class: "chart-grid" }, Object.values(charts).map((c) => c.figure)));
  const samples = [];
  let previous = null;
  const tick = async () => {
    if (!panel.isConnected) {
      clearInterval(timer); // the page was drawn again (signed out, say): this chart is gone
      return;
    }
    if (document.hidden) return;
    let snap;
    try {
      snap = await get("metrics", {}, false);
    } catch {
      return;
    }
    charts.busy.figure.querySelector("h3").textContent = `Refused: system busy (${snap.busy_code})`;
    if (previous) {
      const i = interval(previous, snap);
      samples.push({ ...i, waiting: snap.queue_depth, running: snap.running });
      if (samples.length > KEEP) samples.shift();
      charts.rate.draw(samples.map((x) => [x.rate]));
      charts.latency.draw(samples.map((x) => [x.p50, x.p90, x.p99]));
      charts.queue.draw(samples.map((x) => [x.waiting, x.running]));
      charts.busy.draw(samples.map((x) => [x.busy]));
      panel.dataset.samples = String(samples.length);
    }
    previous = snap;
  };
  clearInterval(timer);
  tick();
  timer = setInterval(tick, POLL_MS);
}

start(render, { needsAppid: false });
