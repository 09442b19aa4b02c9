// What every console page shares: the bar (pages, appid, sign-in), the sign-in form, the appid
// chooser under --auth off, and the confirmation dialog. A page module calls start(render):
// render(main, ctx) draws the page once a session exists, and again whenever it changes.

import { SIGNED_OUT, capabilities, get, session, signIn } from "./api.js";
import { $, clear, h, msg } from "./dom.js";

const PAGES = [
  ["library", "index.html", "Library"],
  ["try", "try.html", "Try it"],
  ["ops", "ops.html", "Operations"],
];

/** Ask before a destructive action: resolves true when confirmed. */
export function confirmAction(question, action = "Delete") {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm" },
      h("p", {}, question),
      h(
        "form",
        { method: "dialog" },
        h("button", { value: "cancel", class: "secondary" }, "Cancel"),
        h("button", { value: "ok", class: "danger" }, action),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

function bar(ctx) {
  const here = document.body.dataset.page;
  const nav = h(
    "nav",
    {},
    PAGES.map(([id, href, label]) =>
      h("a", { href, "aria-current": id === here ? "page" : false }, label),
    ),
  );
  const who = h("div", { class: "who" });
  if (session.token) {
    who.append(
      h("span", {}, "appid ", h("strong", { id: "appid" }, session.appid || "?")),
      h("span", { class: "muted" }, ` key ${(session.apiKey || "").slice(0, 6)}…`),
      h("button", { class: "secondary", id: "sign-out", onclick: () => leave(ctx) }, "Sign out"),
    );
  } else if (ctx.mode === "off") {
    if (session.appid) {
      who.append(
        h("span", {}, "appid ", h("strong", { id: "appid" }, session.appid)),
        h("button", { class: "secondary", onclick: () => choose(ctx, null) }, "Change"),
      );
    }
    who.append(
      h("button", { class: "secondary", id: "sign-in", onclick: () => ctx.show(signInForm) }, "Sign in with a key"),
    );
  }
  clear($("#bar")).append(
    h("a", { class: "brand", href: "index.html" }, h("img", { src: "icon.svg", alt: "" }), "FaceCore"),
    nav,
    who,
  );
}

function leave(ctx) {
  session.signOut();
  ctx.refresh();
}

function choose(ctx, appid) {
  session.choose(appid);
  ctx.refresh();
}

/** The sign-in form: an API key and secret traded for an access token. */
function signInForm(main, ctx) {
  const key = h("input", { name: "api_key", id: "api-key", required: true, autocomplete: "username", spellcheck: "false" });
  const secret = h("input", { name: "secret_key", id: "secret-key", type: "password", required: true, autocomplete: "current-password" });
  const status = h("div", { id: "sign-in-status" });
  const form = h(
    "form",
    { class: "panel narrow", id: "sign-in-form" },
    h("h1", {}, "Sign in"),
    h(
      "p",
      { class: "muted" },
      ctx.mode === "required"
        ? "This server runs with --auth required: the console acts on the appid of the key you sign in with."
        : "With a key, the console acts on that key's appid only.",
    ),
    h("label", {}, "API key", key),
    h("label", {}, "Secret key", secret),
    h("button", { type: "submit" }, "Sign in"),
    status,
    h("p", { class: "muted small" }, "The secret is sent once for an access token and never stored; the token lives in this tab only."),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(status).append(msg("muted", "Signing in…"));
    try {
      await signIn(key.value.trim(), secret.value);
      ctx.refresh();
    } catch (e) {
      clear(status).append(msg("error", e.text || String(e)));
    } finally {
      secret.value = "";
    }
  });
  main.append(form);
  key.focus();
}

/** Under --auth off without an appid: the appids that have groups, or a new name. */
async function appidChooser(main, ctx) {
  const { appid_list: appids } = await get("appids", {}, false);
  const name = h("input", { name: "appid", id: "new-appid", required: true, pattern: "[A-Za-z0-9_]{1,48}", placeholder: "app1" });
  const form = h(
    "form",
    { class: "panel narrow", id: "appid-form" },
    h("h1", {}, "Choose an appid"),
    h("p", { class: "muted" }, "Each appid has its own groups, users and faces."),
    appids.length
      ? h("ul", { class: "choices" }, appids.map((a) => h("li", {}, h("button", { type: "button", class: "secondary", onclick: () => choose(ctx, a) }, a))))
      : h("p", { class: "muted" }, "No appid has a group yet."),
    h("label", {}, "Or name one", name),
    h("button", { type: "submit" }, "Open"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    choose(ctx, name.value.trim());
  });
  main.append(form);
}

/**
 * Start a page. `render(main, ctx)` draws it; `needsAppid`: the page acts on one appid (under
 * --auth off the user picks it first). ctx: {caps, mode, refresh(), show(fn)}.
 */
export async function start(render, { needsAppid = true } = {}) {
  const main = $("#main");
  let caps;
  try {
    caps = await capabilities();
  } catch (e) {
    clear(main).append(msg("error", `The server did not answer: ${e.message}`));
    return;
  }
  const ctx = { caps, mode: caps.auth.mode };
  ctx.show = async (draw) => {
    clear(main);
    try {
      await draw(main, ctx);
    } catch (e) {
      main.append(msg("error", e.message));
    }
  };
  ctx.refresh = () => {
    bar(ctx);
    if (ctx.mode === "required" && !session.token) return ctx.show(signInForm);
    if (needsAppid && !session.appid) return ctx.show(appidChooser);
    return ctx.show(render);
  };
  window.addEventListener(SIGNED_OUT, () => ctx.refresh());
  await ctx.refresh();
}
