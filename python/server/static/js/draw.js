// A photo with what detect found drawn over it, in the image's own pixels: an <svg> laid over the
// <img> with the image's size as its viewBox, so the drawn coordinates are the API's numbers.

import { faces as count, h, s } from "./dom.js";

/**
 * A <figure> of `img` (loaded) with each face of `faces` (detect's face_list) drawn: its box
 * (location: left, top, width, height; axis-aligned, as the API gives it), its number, the 72
 * landmarks and the 4-point landmarks. Toggle them with the figure's classes
 * no-landmark72 / no-landmark4.
 */
export function overlay(img, faces) {
  const w = img.naturalWidth;
  const hgt = img.naturalHeight;
  const layer = s("svg", { class: "overlay", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", role: "img", "aria-label": `${count(faces.length)} detected` });
  faces.forEach((face, i) => {
    const { left, top, width, height } = face.location;
    const dot = Math.max(1.2, width / 80);
    const size = Math.max(12, width / 6, w / 40);
    const g = s("g", { class: "face", dataset: { face: String(i) } });
    g.append(
      s("rect", { class: "box", x: left, y: top, width, height, dataset: { face: String(i) } }),
      s("text", { class: "label", x: left, y: top >= size ? top - size / 4 : top + height + size, "font-size": size }, String(i + 1)),
    );
    for (const p of face.landmark72 || []) g.append(s("circle", { class: "lm72", cx: p.x, cy: p.y, r: dot }));
    for (const p of face.landmark || []) g.append(s("circle", { class: "lm4", cx: p.x, cy: p.y, r: dot * 2.2 }));
    layer.append(g);
  });
  return h("figure", { class: "detected" }, img, layer);
}
