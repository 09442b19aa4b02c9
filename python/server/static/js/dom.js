// Small DOM helpers. Elements are built from a tag, properties and children, never from HTML
// strings, so no text from the server or the user is ever parsed as markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(el, props, children) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "value" || key === "checked" || key === "disabled") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("button", {class: "danger", onclick: f}, "Delete"). */
export function h(tag, props = {}, ...children) {
  return fill(document.createElement(tag), props, children);
}

/** An SVG element, attributes as given. */
export function s(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** A number for people: at most `digits` decimals, no trailing zeros after the point. */
export function num(value, digits = 2) {
  const text = Number(value).toFixed(digits);
  return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
}

/** "1 face", "2 faces". */
export function faces(n) {
  return `${n} ${n === 1 ? "face" : "faces"}`;
}

/** A message line: <p class="msg {kind}">text</p> (kind: ok | error | muted). */
export function msg(kind, ...text) {
  return h("p", { class: `msg ${kind}`, role: kind === "error" ? "alert" : "status" }, ...text);
}
