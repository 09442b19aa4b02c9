// The library page: the appid's groups with their face counts, a group's users page by page with
// their registered faces, and the changes an operator makes (add a user from photos, delete a
// face or a user, copy a user to another group, make or delete a group). Every change is a v3
// route, called as any client calls it; the console's own endpoints only read.

import { get, imageUrl, v3 } from "./api.js";
import { clear, faces, h, msg } from "./dom.js";
import { base64, dropZone, preview } from "./images.js";
import { confirmAction, start } from "./shell.js";

const USERS_PAGE = 50; // users a page: one request to /console/api/users, thumbnails lazily
const GROUPS_PAGE = 100;

const state = { group: null, groups: [], groupNum: 0, groupStart: 0, start: 0, drawing: 0 };

function select(group) {
  state.group = group;
  state.start = 0;
  history.replaceState(null, "", group ? `#group=${encodeURIComponent(group)}` : "#");
}

async function render(main) {
  state.group = new URLSearchParams(location.hash.slice(1)).get("group");
  const side = h("aside", { class: "panel groups", id: "groups" });
  const body = h("section", { class: "group", id: "group" });
  main.append(h("div", { class: "library" }, side, body));
  // A redraw fetches everything first and swaps both panes in at once, so the page never shows
  // an empty group pane, nor a group count that disagrees with the cards below it. When redraws
  // overlap (two clicks), only the latest one swaps in.
  const redraw = async () => {
    const mine = ++state.drawing;
    const groups = await groupsPane(redraw);
    const group = await groupPane(body, redraw);
    if (mine !== state.drawing) return;
    clear(side).append(...groups);
    clear(body).append(...group);
  };
  await redraw();
}

// The groups pane, its data fetched; the caller swaps it in.
async function groupsPane(redraw) {
  const page = await get("groups", { start: state.groupStart, length: GROUPS_PAGE });
  state.groups = page.group_list;
  state.groupNum = page.group_num;
  if (!state.group && state.groups.length) select(state.groups[0].group_id);
  const name = h("input", { id: "new-group", name: "group_id", required: true, pattern: "[A-Za-z0-9_]{1,48}", placeholder: "new group id" });
  const status = h("div");
  const form = h("form", { class: "inline", id: "group-form" }, name, h("button", { type: "submit" }, "Create"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await v3("group/add", { group_id: name.value.trim() });
      select(name.value.trim());
      await redraw();
    } catch (e) {
      clear(status).append(msg("error", e.message));
    }
  });
  const pager = h("div", { class: "pager" });
  if (state.groupNum > GROUPS_PAGE) {
    const last = Math.min(state.groupStart + GROUPS_PAGE, state.groupNum);
    pager.append(
      h("button", { class: "secondary", disabled: state.groupStart === 0, onclick: () => { state.groupStart -= GROUPS_PAGE; redraw(); } }, "‹"),
      h("span", { class: "muted small" }, `${state.groupStart + 1}–${last} of ${state.groupNum}`),
      h("button", { class: "secondary", disabled: last >= state.groupNum, onclick: () => { state.groupStart += GROUPS_PAGE; redraw(); } }, "›"),
    );
  }
  return [
    h("h2", {}, "Groups ", h("span", { class: "muted small" }, String(state.groupNum))),
    state.groups.length
      ? h(
          "ul",
          { class: "group-list" },
          state.groups.map((g) =>
            h(
              "li",
              {},
              h(
                "button",
                {
                  class: "group-item",
                  dataset: { group: g.group_id },
                  "aria-current": g.group_id === state.group ? "true" : false,
                  onclick: () => { select(g.group_id); redraw(); },
                },
                h("span", {}, g.group_id),
                h("span", { class: "count" }, faces(g.face_num)),
              ),
            ),
          ),
        )
      : msg("muted", "No group yet."),
    pager,
    form,
    status,
  ];
}

// The group pane with its first page of users fetched; the caller swaps it into body.
// Every control in it acts on the group it was drawn for (shown), not on state.group, which a
// click on another group changes before that group's pane is swapped in.
async function groupPane(body, redraw) {
  const shown = state.group;
  if (!shown) return [msg("muted", "Make a group to enrol users in it.")];
  const group = state.groups.find((g) => g.group_id === shown);
  const count = group ? faces(group.face_num) : "";
  const remove = async () => {
    if (!(await confirmAction(`Delete group ${shown} and its ${count || "faces"}? This cannot be undone.`, "Delete group"))) return;
    try {
      await v3("group/delete", { group_id: shown });
      select(null);
      await redraw();
    } catch (e) {
      body.append(msg("error", e.message));
    }
  };
  const grid = h("div", { class: "users", id: "users" });
  await drawUsers(grid, shown, redraw);
  return [
    h(
      "header",
      { class: "group-head" },
      h("h1", {}, shown),
      h("span", { class: "muted", id: "group-faces" }, count),
      h("button", { class: "danger", id: "delete-group", onclick: remove }, "Delete group"),
    ),
    h("div", { class: "tools" }, addUserForm(shown, redraw), findUserForm(shown, grid, redraw)),
    grid,
  ];
}

function addUserForm(group, redraw) {
  const user = h("input", { id: "add-user-id", name: "user_id", required: true, pattern: "[A-Za-z0-9_]{1,128}", placeholder: "user id" });
  const info = h("input", { id: "add-user-info", name: "user_info", maxlength: 256, placeholder: "user info (optional)" });
  const chosen = h("div", { class: "chosen" });
  const status = h("div", { id: "add-status" });
  let files = [];
  const zone = dropZone({
    id: "add-photos",
    label: "Photos of the user",
    multiple: true,
    onFiles: (picked) => {
      files = picked;
      clear(chosen).append(...picked.map((f) => preview(f, { class: "thumb" })));
    },
  });
  const form = h(
    "form",
    { class: "panel", id: "add-form" },
    h("h2", {}, "Add a user"),
    h("div", { class: "row" }, user, info),
    zone,
    chosen,
    h("button", { type: "submit", id: "add-submit" }, "Add"),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!files.length) {
      clear(status).append(msg("error", "Drop or pick at least one photo."));
      return;
    }
    clear(status);
    let added = 0;
    for (const file of files) {
      const line = msg("muted", `${file.name}: adding…`);
      status.append(line);
      try {
        const body = { image: await base64(file), image_type: "BASE64", group_id: group, user_id: user.value.trim() };
        if (info.value) body.user_info = info.value;
        const result = await v3("face/add", body);
        line.replaceWith(msg("ok", `${file.name}: added, face ${result.face_token.slice(0, 8)}…`));
        added += 1;
      } catch (e) {
        line.replaceWith(msg("error", `${file.name}: ${e.message}`));
      }
    }
    if (added) {
      files = [];
      clear(chosen);
      const keep = [...status.childNodes];
      await redraw();
      document.getElementById("add-status")?.append(...keep);
    }
  });
  return form;
}

function findUserForm(group, grid, redraw) {
  const user = h("input", { id: "find-user-id", name: "user_id", required: true, pattern: "[A-Za-z0-9_]{1,128}", placeholder: "user id" });
  const form = h(
    "form",
    { class: "panel", id: "find-form" },
    h("h2", {}, "Find a user"),
    h("div", { class: "row" }, user, h("button", { type: "submit" }, "Find")),
    h("p", { class: "muted small" }, "Users are listed by id, ", String(USERS_PAGE), " a page."),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = user.value.trim();
    const back = h("button", { class: "secondary", onclick: () => drawUsers(grid, group, redraw) }, "Back to the list");
    try {
      const [{ user_list: found }, { face_list: listed }] = await Promise.all([
        v3("user/get", { group_id: group, user_id: id }),
        v3("face/list", { group_id: group, user_id: id }),
      ]);
      clear(grid).append(
        h("div", { class: "pager" }, back),
        h("div", { class: "cards" }, userCard({ user_id: id, user_info: found[0].user_info, face_list: listed }, group, redraw)),
      );
    } catch (e) {
      clear(grid).append(msg("error", e.message), back);
    }
  });
  return form;
}

// A page of the group's users into grid. It asks for one user more than it shows, to know
// whether a next page exists; a page left empty (its last users deleted) gives the one before.
async function drawUsers(grid, group, redraw) {
  const { user_list: fetched } = await get("users", { group_id: group, start: state.start, length: USERS_PAGE + 1 });
  if (!fetched.length && state.start > 0) {
    state.start = Math.max(0, state.start - USERS_PAGE);
    return drawUsers(grid, group, redraw);
  }
  const users = fetched.slice(0, USERS_PAGE);
  const move = (by) => async () => {
    state.start = Math.max(0, state.start + by);
    await drawUsers(grid, group, redraw);
  };
  const pager = h(
    "div",
    { class: "pager" },
    h("button", { class: "secondary", id: "users-prev", disabled: state.start === 0, onclick: move(-USERS_PAGE) }, "‹ Previous"),
    h("span", { class: "muted", id: "users-range" }, users.length ? `users ${state.start + 1}–${state.start + users.length}` : "no users here"),
    h("button", { class: "secondary", id: "users-next", disabled: fetched.length <= USERS_PAGE, onclick: move(USERS_PAGE) }, "Next ›"),
  );
  clear(grid).append(pager, h("div", { class: "cards" }, users.map((u) => userCard(u, group, redraw))));
}

function userCard(u, group, redraw) {
  const status = h("div", { class: "card-status" });
  const fail = (e) => clear(status).append(msg("error", e.message));
  const others = state.groups.filter((g) => g.group_id !== group);
  const target = h("select", { class: "copy-target", "aria-label": `copy ${u.user_id} to group` }, others.map((g) => h("option", { value: g.group_id }, g.group_id)));
  const copy = async () => {
    try {
      await v3("user/copy", { user_id: u.user_id, src_group_id: group, dst_group_id: target.value });
      clear(status).append(msg("ok", `copied to ${target.value}`));
      await redraw();
    } catch (e) {
      fail(e);
    }
  };
  const removeUser = async () => {
    if (!(await confirmAction(`Delete user ${u.user_id} and their ${faces(u.face_list.length)} from ${group}?`, "Delete user"))) return;
    try {
      await v3("user/delete", { group_id: group, user_id: u.user_id });
      await redraw();
    } catch (e) {
      fail(e);
    }
  };
  const removeFace = (token) => async () => {
    if (!(await confirmAction(`Delete this face of ${u.user_id}?${u.face_list.length === 1 ? " It is the user's last: the user goes with it." : ""}`))) return;
    try {
      await v3("face/delete", { group_id: group, user_id: u.user_id, face_token: token });
      await redraw();
    } catch (e) {
      fail(e);
    }
  };
  return h(
    "article",
    { class: "card user", dataset: { user: u.user_id } },
    h("header", {}, h("strong", { class: "user-id" }, u.user_id), u.user_info ? h("span", { class: "muted small" }, u.user_info) : null),
    h(
      "div",
      { class: "faces" },
      u.face_list.map((f) => {
        const img = h("img", { class: "thumb", loading: "lazy", src: imageUrl(group, f.face_token), alt: `a face of ${u.user_id}`, title: `${f.face_token}\nadded ${f.ctime}`, dataset: { token: f.face_token } });
        img.addEventListener("error", () => img.classList.add("missing"));
        return h("figure", { class: "face" }, img, h("button", { class: "icon", title: "Delete this face", "aria-label": "Delete this face", onclick: removeFace(f.face_token) }, "✕"));
      }),
    ),
    h(
      "footer",
      {},
      others.length ? h("span", { class: "copy" }, target, h("button", { class: "secondary small", onclick: copy }, "Copy")) : null,
      h("button", { class: "danger small", onclick: removeUser }, "Delete user"),
    ),
    status,
  );
}

start(render);
