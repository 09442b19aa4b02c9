// Photos in: a drop zone that also opens the file picker, and a file read as the BASE64 the v3
// routes take.

import { h } from "./dom.js";

/** The file's bytes as base64 (no data: prefix). */
export function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/**
 * A drop zone: photos dropped on it or picked with its button go to `onFiles(files)`.
 * `id` names its <input type=file> (tests set files on it), `multiple` takes several.
 */
export function dropZone({ id, label, multiple = false, onFiles }) {
  const input = h("input", { type: "file", id, accept: "image/*", multiple, class: "visually-hidden" });
  const zone = h(
    "label",
    { class: "drop", for: id },
    input,
    h("span", { class: "drop-label" }, label),
    h("span", { class: "muted small" }, multiple ? "drop photos here, or click to pick them" : "drop a photo here, or click to pick one"),
  );
  const take = (list) => {
    const files = [...list].filter((f) => f.type.startsWith("image/") || f.type === "");
    if (files.length) onFiles(multiple ? files : files.slice(0, 1));
  };
  input.addEventListener("change", () => {
    take(input.files);
    input.value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    take(event.dataTransfer.files);
  });
  return zone;
}

/** A preview <img> of a local file (a blob: URL, freed when replaced). */
export function preview(file, props = {}) {
  const img = h("img", { ...props, src: URL.createObjectURL(file), alt: file.name });
  img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
  return img;
}
