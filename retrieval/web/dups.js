// The Duplicates view: GET /api/duplicates page by page; choose the keeper of a group (radio); move the others
// aside (POST /api/duplicates/resolve, a manifest makes it undoable), dismiss a group, undo the last move.
import { arraySequence } from "./cards.js";
import { rememberDuplicates } from "./viewer.js";
import {
  $, api, clearError, clock, el, folderOf, imageUrl, isVideo, nameOf, notice, showError, wrapAtSlashes,
} from "./util.js";

const dups = { offset: 0, total: 0, canMove: false, canUndo: false, loaded: false, only: null };
export const dupHooks = { open: null, changed: null };  // set by app.js: open(sequence, index); changed()

const MOVE_REASON = "Moving is off: set [duplicates] move_to in this server's config (a folder outside the "
  + "library) to move duplicates aside from here; `clipdex duplicates --move-to DIR` works without it.";

function fileFigure(group, file, i, groupIndex) {
  const keeper = file.path === group.keep;
  const fig = el("figure", { className: "dup-file" + (keeper ? " keeper" : "") });
  fig.dataset.path = file.path;
  const video = isVideo(file);  // a whole video: the frame at the same time in each copy, its duration on it
  const thumb = el("button", { type: "button", className: "thumb" },
    el("img", { src: imageUrl(file.path, 256, video ? file.time_s : undefined), alt: nameOf(file.path),
                loading: "lazy", decoding: "async" }));
  if (video) {
    const badge = el("span", { className: "duration", textContent: `▶ ${clock(file.duration_s)}` });
    badge.setAttribute("aria-hidden", "true");  // said by the button's name
    thumb.append(badge);
  }
  thumb.setAttribute("aria-label", video ? `play ${nameOf(file.path)}, a video of ${clock(file.duration_s)}`
    : `view ${nameOf(file.path)}`);
  thumb.addEventListener("click", () => dupHooks.open(arraySequence(group.files), i));
  const radio = el("input", { type: "radio", name: `keep-${groupIndex}`, value: file.path, checked: keeper });
  radio.addEventListener("change", () => chooseKeeper(fig.closest(".dup-group"), group, file.path));
  const cap = el("figcaption", {},
    el("label", {}, radio, el("span", { className: "badge", textContent: keeper ? "keep" : "keep this" })),
    el("span", { className: "name", title: file.path }, ...wrapAtSlashes(nameOf(file.path))),
    el("span", { className: "folder", title: folderOf(file) }, ...wrapAtSlashes(folderOf(file))),
    el("span", { textContent: `${file.width}×${file.height}` }),
    el("span", { textContent: `${(file.size / 1024).toFixed(1)} KiB · ${file.format || "?"}` }),
    ...(video ? [el("span", { className: "video-facts", textContent:
      `${file.codec || "?"} · ${clock(file.duration_s)} · ${Math.round((file.bitrate || 0) / 1000).toLocaleString()} kbit/s` })] : []),
    el("span", { textContent: file.taken_at || "no date" }));
  fig.append(thumb, cap);
  return fig;
}

function chooseKeeper(li, group, path) {
  group.keep = path;
  group.duplicates = group.files.map((f) => f.path).filter((p) => p !== path);
  li.dataset.keep = path;
  for (const fig of li.querySelectorAll(".dup-file")) {
    const on = fig.dataset.path === path;
    fig.classList.toggle("keeper", on);
    fig.querySelector(".badge").textContent = on ? "keep" : "keep this";
  }
  const why = li.querySelector(".why");
  why.textContent = `${group.reason} · similarity ${group.similarity.toFixed(3)} · keep: `
    + (path === group.suggested ? group.keep_reason : "your choice");
}

let groupCount = 0;
function groupItem(group) {
  group.suggested = group.keep;
  const li = el("li", { className: "dup-group" });
  li.dataset.keep = group.keep;
  const why = el("p", { className: "why",
    textContent: `${group.reason} · similarity ${group.similarity.toFixed(3)} · keep: ${group.keep_reason}` });
  const index = groupCount++;
  const files = el("div", { className: "dup-files" }, ...group.files.map((f, i) => fileFigure(group, f, i, index)));
  const move = el("button", { type: "button", className: "dup-move", textContent: `Move ${group.duplicates.length} aside`,
                              disabled: !dups.canMove });
  move.title = dups.canMove ? "moved into [duplicates] move_to with a manifest: undo puts them back" : MOVE_REASON;
  move.addEventListener("click", () => resolveGroup(li, { action: "move", keep: group.keep, paths: group.duplicates }));
  const dismiss = el("button", { type: "button", className: "dup-dismiss", textContent: "Not duplicates" });
  dismiss.addEventListener("click", () => resolveGroup(li, { action: "not-duplicates", keep: group.keep, paths: group.duplicates }));
  const actions = el("div", { className: "dup-actions" }, move, dismiss);
  if (!dups.canMove) actions.append(el("span", { className: "reason", textContent: "moving is off (see above)" }));
  li.append(why, files, actions);
  return li;
}

function summary(extra) {
  const shown = $("dups-groups").children.length;
  $("dups-summary").textContent = (dups.total ? `${shown} of ${dups.total} groups` : "no duplicates found")
    + (dups.only ? ` holding ${nameOf(dups.only)}` : "") + (extra ? ` · ${extra}` : "");
  $("dups-more").hidden = dups.offset >= dups.total;
  $("dups-undo").disabled = !dups.canUndo;
  $("dups-undo").title = dups.canUndo ? "put back the files of the last move made here"
    : "nothing to undo: no files were moved from this page since the server started";
  $("dups-move-reason").hidden = dups.canMove;
  $("dups-move-reason").textContent = MOVE_REASON;
}

export async function loadDuplicates(reset, refresh, only = null) {
  clearError();
  if (reset) { dups.offset = 0; dups.only = only; $("dups-groups").replaceChildren(); }
  dups.loaded = true;
  $("dups-summary").textContent = "looking for duplicates…";
  try {
    const params = new URLSearchParams({ offset: dups.offset, limit: 20 });
    if (refresh) params.set("refresh", "true");
    if (dups.only) params.set("path", dups.only);
    const page = await api(`/api/duplicates?${params}`);
    dups.total = page.total;
    dups.canMove = page.can_move;
    dups.canUndo = Boolean(page.can_undo);
    dups.offset += page.groups.length;
    rememberDuplicates(page.groups);
    $("dups-groups").append(...page.groups.map(groupItem));
    summary(`${page.checked.toLocaleString()} files checked`);
  } catch (err) {
    $("dups-summary").textContent = "";
    showError(err.message);
  }
}

async function resolveGroup(li, body) {
  clearError();
  li.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  try {
    const result = await api("/api/duplicates/resolve", { json: body });
    li.remove();
    dups.total -= 1;
    dups.offset -= 1;
    if (body.action === "move") dups.canUndo = true;
    summary(body.action === "move" ? `moved ${result.moved.length} files; manifest ${result.manifest}`
      : "remembered: not duplicates");
    if (body.action === "move" && dupHooks.changed) dupHooks.changed();
  } catch (err) {
    li.querySelectorAll("button").forEach((b) => { b.disabled = b.className === "dup-move" && !dups.canMove; });
    showError(err.message);
  }
}

/** Put back the files of the last move made through this server (POST /api/duplicates/undo). */
export async function undoLast() {
  clearError();
  try {
    const result = await api("/api/duplicates/undo", { method: "POST" });
    dups.canUndo = result.can_undo;
    notice(`put back ${result.restored.length + result.already_back.length} files`);
    if (dupHooks.changed) dupHooks.changed();
    if (dups.loaded) await loadDuplicates(true, true, dups.only);
  } catch (err) {
    showError(err.message);
  }
}

export function initDuplicates() {
  $("dups-refresh").addEventListener("click", () => loadDuplicates(true, true));
  $("dups-more").addEventListener("click", () => loadDuplicates(false, false));
  $("dups-undo").addEventListener("click", undoLast);
}

export const duplicatesLoaded = () => dups.loaded;
