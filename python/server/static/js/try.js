// Try it: detect (boxes, 72 and 4-point landmarks, and every attribute the models compute), match
// two photos (the score against the calibrated thresholds), search a photo in chosen groups (the
// candidates with their enrolled faces). Each is one v3 call, as a client makes it.

import { get, imageUrl, v3 } from "./api.js";
import { $, clear, faces, h, msg, num, s } from "./dom.js";
import { overlay } from "./draw.js";
import { base64, dropZone, preview } from "./images.js";
import { start } from "./shell.js";

const TABS = [
  ["detect", "Detect"],
  ["match", "Match two photos"],
  ["search", "Search"],
];
const FIELDS = ["age", "gender", "expression", "emotion", "eye_status", "quality", "landmark", "liveness"];

/** "1e-4" for "0.0001". */
const far = (key) => Number(key).toExponential(0);

/** The calibrated thresholds the page marks, weakest first: [["1e-2", 60], ["1e-3", 70],
 * ["1e-4", 80]] from /console/api/thresholds' score_at_far (those under 90). */
function marksOf(thresholds) {
  return Object.entries(thresholds)
    .map(([key, value]) => [far(key), value])
    .filter(([, value]) => value < 90)
    .sort((a, b) => a[1] - b[1]);
}

let shown = null; // the page's ctx: a tab is a #hash, and changing it draws the page again
window.addEventListener("hashchange", () => shown?.refresh());

async function render(main, ctx) {
  shown = ctx;
  const tab = TABS.some(([id]) => `#${id}` === location.hash) ? location.hash.slice(1) : "detect";
  const panel = h("section", { class: "try", id: `try-${tab}` });
  main.append(
    h(
      "nav",
      { class: "tabs" },
      TABS.map(([id, label]) =>
        h("a", { href: `#${id}`, "aria-current": id === tab ? "page" : false }, label),
      ),
    ),
    panel,
  );
  const draw = { detect, match, search }[tab];
  await draw(panel, ctx);
}

// ------------------------------------------------------------------------------------- detect

async function detect(panel, ctx) {
  const served = new Set(ctx.caps.face_field);
  const fields = FIELDS.filter((f) => served.has(f));
  const result = h("div", { class: "detect-result", id: "detect-result" });
  const toggles = h(
    "div",
    { class: "toggles" },
    toggle("show-landmark72", "72 landmarks", "no-landmark72", result),
    toggle("show-landmark4", "4-point landmarks", "no-landmark4", result),
  );
  panel.append(
    h("p", { class: "muted" }, `face/detect with face_field=${fields.join(",")}, up to 10 faces.`),
    dropZone({ id: "detect-photo", label: "A photo to detect faces in", onFiles: ([file]) => run(file) }),
    toggles,
    result,
  );

  async function run(file) {
    clear(result).append(msg("muted", "Detecting…"));
    const img = preview(file);
    try {
      const [answer] = await Promise.all([
        v3("face/detect", { image: await base64(file), image_type: "BASE64", face_field: fields.join(","), max_face_num: 10 }),
        img.decode(),
      ]);
      clear(result).append(
        h("div", { class: "split" }, overlay(img, answer.face_list), h("div", { class: "faces-found" }, h("h2", {}, faces(answer.face_num)), answer.face_list.map((f, i) => faceFacts(f, i, ctx)))),
      );
    } catch (e) {
      clear(result).append(msg("error", e.message));
    }
  }
}

function toggle(id, label, cls, target) {
  const box = h("input", { type: "checkbox", id, checked: true });
  box.addEventListener("change", () => target.classList.toggle(cls, !box.checked));
  return h("label", { class: "check" }, box, label);
}

function faceFacts(f, i, ctx) {
  const rows = [];
  const row = (name, ...value) => rows.push(h("dt", {}, name), h("dd", {}, ...value));
  const typed = (t) => `${t.type} (${num(t.probability)})`;
  const loc = f.location;
  row("box", `${num(loc.left, 0)}, ${num(loc.top, 0)}  ${num(loc.width, 0)}×${num(loc.height, 0)}, rotation ${loc.rotation}°`);
  row("probability", num(f.face_probability, 3));
  if (f.angle) row("pose", `yaw ${num(f.angle.yaw, 1)}°, pitch ${num(f.angle.pitch, 1)}°, roll ${num(f.angle.roll, 1)}°`);
  if (f.age !== undefined) row("age", num(f.age, 0));
  if (f.gender) row("gender", typed(f.gender));
  if (f.expression) row("expression", typed(f.expression));
  if (f.emotion) row("emotion", typed(f.emotion));
  if (f.eye_status) row("eyes open", `left ${num(f.eye_status.left_eye)}, right ${num(f.eye_status.right_eye)}`);
  if (f.quality) row("quality", `blur ${num(f.quality.blur)}, illumination ${num(f.quality.illumination, 0)}, completeness ${f.quality.completeness}`);
  if (f.liveness) {
    const limits = ctx.caps.liveness_control.thresholds || {};
    const passed = Object.entries(limits).filter(([, t]) => f.liveness.livemapscore >= t).map(([level]) => level);
    row("liveness", `${num(f.liveness.livemapscore, 3)}`, h("span", { class: "muted" }, passed.length ? ` passes ${passed.join(", ")}` : " passes no level"));
  } else if (!ctx.caps.liveness_control.installed) {
    row("liveness", h("span", { class: "muted" }, "not installed (docs/liveness.md)"));
  }
  if (f.landmark72) row("landmarks", `${f.landmark72.length} + ${f.landmark.length} points`);
  return h("article", { class: "card face-facts", dataset: { face: String(i) } }, h("h3", {}, `Face ${i + 1}`), h("dl", {}, rows));
}

// -------------------------------------------------------------------------------------- match

async function match(panel) {
  const marks = marksOf((await get("thresholds", {}, false)).score_at_far);
  const files = [null, null];
  const shown = [h("div", { class: "slot" }), h("div", { class: "slot" })];
  const result = h("div", { id: "match-result" });
  const zone = (i) =>
    dropZone({
      id: `match-photo-${i + 1}`,
      label: `Photo ${i + 1}`,
      onFiles: ([file]) => {
        files[i] = file;
        clear(shown[i]).append(preview(file, { class: "match-photo" }));
        if (files[0] && files[1]) compare();
      },
    });
  panel.append(
    h("p", { class: "muted" }, "face/match compares the largest face of each photo: 0-100, calibrated on LFW impostor pairs."),
    h("div", { class: "pair" }, h("div", {}, zone(0), shown[0]), h("div", {}, zone(1), shown[1])),
    result,
  );

  async function compare() {
    clear(result).append(msg("muted", "Comparing…"));
    try {
      const images = await Promise.all(files.map(base64));
      const answer = await v3("face/match", images.map((image) => ({ image, image_type: "BASE64" })));
      clear(result).append(scoreView(answer.score, marks));
    } catch (e) {
      clear(result).append(msg("error", e.message));
    }
  }
}

/** The score on a 0-100 scale with the thresholds (marksOf) marked, and what it means. */
function scoreView(score, marks) {
  const met = marks.filter(([, value]) => score >= value);
  const verdict = met.length
    ? `Same person at a false accept rate of ${met[met.length - 1][0]} (score ≥ ${met[met.length - 1][1]}).`
    : `Below the ${marks[0][0]} threshold (${marks[0][1]}): not the same person at any calibrated rate.`;
  const x = (v) => 20 + v * 5.6;
  const svg = s("svg", { class: "gauge", viewBox: "0 0 600 70", role: "img", "aria-label": `score ${score}` });
  svg.append(
    s("rect", { class: "track", x: x(0), y: 22, width: x(100) - x(0), height: 14, rx: 3 }),
    s("rect", { class: "fill", x: x(0), y: 22, width: x(score) - x(0), height: 14, rx: 3 }),
    s("text", { class: "tick-label", x: x(0), y: 56, "text-anchor": "middle" }, "0"),
    s("text", { class: "tick-label", x: x(100), y: 56, "text-anchor": "middle" }, "100"),
  );
  for (const [label, value] of marks) {
    svg.append(
      s("line", { class: "tick", x1: x(value), x2: x(value), y1: 16, y2: 42 }),
      s("text", { class: "tick-label", x: x(value), y: 56, "text-anchor": "middle" }, `FAR ${label}`),
      s("text", { class: "tick-label", x: x(value), y: 12, "text-anchor": "middle" }, String(value)),
    );
  }
  return h(
    "div",
    { class: "score panel" },
    h("p", { class: "big" }, "score ", h("strong", { id: "match-score" }, num(score, 2))),
    svg,
    h("p", { id: "match-verdict", class: met.length ? "ok" : "muted" }, verdict),
  );
}

// ------------------------------------------------------------------------------------- search

async function search(panel) {
  const [{ group_list: groups }, { score_at_far: thresholds }] = await Promise.all([get("groups", { length: 100 }), get("thresholds", {}, false)]);
  const marks = marksOf(thresholds);
  if (!groups.length) {
    panel.append(msg("muted", "No group to search yet: enrol users on the Library page."));
    return;
  }
  const boxes = groups.map((g, i) => h("input", { type: "checkbox", name: "group", value: g.group_id, checked: i < 10 }));
  const result = h("div", { id: "search-result" });
  panel.append(
    h("p", { class: "muted" }, "face/identify: the users most like the photo's largest face, in up to 10 groups."),
    h("fieldset", { class: "group-pick" }, h("legend", {}, "Groups"), groups.map((g, i) => h("label", { class: "check" }, boxes[i], `${g.group_id} (${g.face_num})`))),
    dropZone({ id: "search-photo", label: "A photo to search for", onFiles: ([file]) => run(file) }),
    result,
  );

  async function run(file) {
    const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
    clear(result).append(h("div", { class: "split" }, preview(file, { class: "probe" }), h("div", { id: "candidates" }, msg("muted", "Searching…"))));
    const list = $("#candidates", result);
    try {
      const answer = await v3("face/identify", { image: await base64(file), image_type: "BASE64", group_id_list: chosen.join(","), max_user_num: 5, match_threshold: 0 });
      const candidates = await Promise.all(answer.user_list.map(async (u) => {
        const faces = await v3("face/list", { group_id: u.group_id, user_id: u.user_id }).catch(() => ({ face_list: [] }));
        return { ...u, token: faces.face_list[0]?.face_token };
      }));
      clear(list).append(
        h("h2", {}, "Candidates"),
        h(
          "ol",
          { class: "candidates" },
          candidates.map((u) => {
            const met = marks.findLast(([, v]) => u.score >= v);
            return h(
              "li",
              { class: "card candidate", dataset: { user: u.user_id, group: u.group_id } },
              u.token ? h("img", { class: "thumb", src: imageUrl(u.group_id, u.token), alt: `enrolled face of ${u.user_id}` }) : h("span", { class: "thumb missing" }),
              h("div", {}, h("strong", { class: "user-id" }, u.user_id), h("span", { class: "muted small" }, ` in ${u.group_id}`), u.user_info ? h("div", { class: "small" }, u.user_info) : null),
              h("div", { class: "score-cell" }, h("strong", { class: "score-value" }, num(u.score, 1)), h("div", { class: met ? "ok small" : "muted small" }, met ? `≥ FAR ${met[0]}` : `below FAR ${marks[0][0]}`)),
            );
          }),
        ),
      );
    } catch (e) {
      clear(list).append(msg("error", e.message));
    }
  }
}

start(render);
