// clipdex page: views (library, search, duplicates), the collection's status, search, selection, keys.
// No build step: ES modules served from /static/ (and no inline script or style, for a strict CSP).
import { initLibrary, library, openLibrary, reveal, sequence as librarySequence, showLibrary } from "./browse.js";
import { arraySequence, card, clearSelection, hooks, lasso, selection, selectionText } from "./cards.js";
import { loadDuplicates, dupHooks, duplicatesLoaded, initDuplicates, undoLast } from "./dups.js";
import { active as activeConcept, conceptHooks, initConcepts, loadConcepts, mark, viewerConcept } from "./concepts.js";
import { context, onRefresh } from "./extensions.js";
import { $, api, clearError, el, events, n, nameOf, notice, plural, readError, refOf, showError } from "./util.js";
import { closeViewer, initViewer, isOpen, openViewer, step, viewerHooks } from "./viewer.js";

const form = $("search"), results = $("results"), summary = $("summary");
const imageInput = $("image"), preview = $("preview"), clearImage = $("clear-image");
const FILTERS = ["folder", "after", "before", "camera"];
let likePaths = [];  // "more like this/these": indexed files searched by their stored vectors (no upload)
let status = null;
let searchRows = [];

// -- the API key -----------------------------------------------------------------------------------------------
const KEY_COOKIE = "clipdex_key", keyForm = $("key-form");
events.addEventListener("need-key", () => { keyForm.hidden = false; $("key").focus(); });
function useKey(key) {
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `${KEY_COOKIE}=${encodeURIComponent(key)}; path=/; max-age=31536000; SameSite=Strict${secure}`;
}

// -- views -----------------------------------------------------------------------------------------------------
function showView(view) {
  document.body.dataset.view = view;
  context.view = view;
  for (const name of ["library", "search", "duplicates", "concepts"]) {
    const tab = $(`tab-${name}`);
    if (name === view) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
  }
  if (view === "duplicates" && !duplicatesLoaded()) loadDuplicates(true, false);
  if (view === "concepts") loadConcepts();
  if (view === "library") {
    const by = location.hash === "#library/folder" ? "folder" : "date";
    if (!library.layout || library.by !== by) openLibrary(by); else showLibrary();
  }
}

function route() {
  const hash = location.hash;
  if (hash.startsWith("#duplicates")) showView("duplicates");
  else if (hash.startsWith("#search")) showView("search");
  else if (hash.startsWith("#concepts")) showView("concepts");
  else if (hash.startsWith("#library")) showView("library");
  else showView(new URLSearchParams(location.search).toString() ? "search" : "library");
}
window.addEventListener("hashchange", route);

// -- the collection's status (GET /api/status): header line, status panel, empty state, filter choices --------
let statusTimer = null;

function renderStatusLine(s) {
  const line = $("status");
  line.textContent = `collection ${s.collection} · ${(s.points - (s.moments || 0)).toLocaleString()} photos`
    + (s.videos ? ` · ${plural(s.videos, "video")} (${plural(s.moments, "moment")})` : "") + ` · model ${s.model}`
    + (s.student_of ? ` (student of ${s.student_of})` : "");
  line.title = `store ${s.store}` + (s.pretrained ? ` · weights ${s.pretrained}` : "");
  if (s.label) line.append(el("span", { className: "label", textContent: ` · ${s.label}` }));
}

function syncing(sync) {
  return Boolean(sync && (sync.state === "syncing" || sync.queued.length || sync.pending_changes));
}

function renderSync(sync) {
  const box = el("div", { id: "sync" });
  if (!sync) {
    box.append(el("p", { textContent: "Not watching any folder (start the server with --watch DIR to keep it in sync)." }));
    return box;
  }
  if (sync.state === "syncing") {
    const stage = sync.stage ? ` (${sync.stage})` : "";
    const p = el("p", { id: "sync-state" }, el("b", { textContent: "Syncing " }),
                 el("span", { className: "path", textContent: sync.root }), `${stage}: `);
    if (sync.total) p.append(`${n(sync.done)} of ${n(sync.total)} `, el("progress", { max: sync.total, value: sync.done }));
    else p.append("starting…");
    box.append(p);
  } else {
    box.append(el("p", { id: "sync-state", textContent: `Watching ${plural(sync.roots.length, "folder")}: idle`
      + (sync.pending_changes ? `, ${plural(sync.pending_changes, "change")} waiting` : "")
      + ` · ${plural(sync.syncs, "sync")} so far.` }));
  }
  if (sync.queued.length) box.append(el("p", { textContent: `Queued: ${sync.queued.join(", ")}` }));
  if (sync.last) {
    const r = sync.last.result;
    const what = r ? `indexed ${n(r.indexed)}, unchanged ${n(r.unchanged)}, moved ${n(r.moved)}, `
      + `deleted ${n(r.deleted)}, failed ${n((r.failed || []).length)}` : "";
    box.append(el("p", { id: "sync-last", textContent: `Last sync (${sync.last.kind}) of ${sync.last.root} took `
      + `${Number(sync.last.seconds).toFixed(1)} s` + (sync.last.error ? `: failed: ${sync.last.error}` : `: ${what}`) }));
  }
  for (const r of sync.roots.filter((root) => !root.watched)) {
    box.append(el("p", { className: "warn", textContent: `Not watched: ${r.path}${r.error ? ` (${r.error})` : ""}` }));
  }
  if (sync.errors.length) {
    box.append(el("p", { textContent: "Recent problems:" }),
               el("ul", {}, ...sync.errors.slice(-5).map((e) => el("li", { textContent: typeof e === "string" ? e
                 : (e.error || e.message || JSON.stringify(e)) }))));
  }
  return box;
}

function renderCollection(s) {
  const panel = $("collection");
  const offline = s.roots.filter((r) => r.offline);
  const head = $("collection-summary");
  head.replaceChildren(el("b", { textContent: "Collection" }), ` · ${plural(s.roots.length, "folder")}`);
  if (offline.length) head.append(" · ", el("span", { className: "warn", textContent: `${n(offline.length)} offline` }));
  if (s.sync) {
    head.append(" · ", syncing(s.sync) && s.sync.state === "syncing"
      ? el("span", { textContent: s.sync.total ? `syncing ${n(s.sync.done)}/${n(s.sync.total)}` : "syncing…" })
      : "watching");
  }
  if (s.busy) head.append(" · store busy (figures from before)");
  const rows = s.roots.map((r) => el("tr", { className: r.offline ? "offline" : "online" },
    el("td", { className: "path", textContent: r.path }),
    el("td", { className: "num", textContent: n(r.points) }),
    el("td", { className: r.offline ? "warn" : "", textContent: r.offline ? `offline: ${r.offline} (points kept)` : "online" })));
  const body = [];
  if (rows.length) {
    body.push(el("table", { id: "roots" },
      el("thead", {}, el("tr", {}, el("th", { textContent: "Folder" }), el("th", { textContent: "Photos" }),
                           el("th", { textContent: "State" }))),
      el("tbody", {}, ...rows)));
  }
  body.push(renderSync(s.sync));
  $("collection-body").replaceChildren(...body);
  panel.hidden = false;
  if (offline.length || syncing(s.sync) || !s.points) panel.open = true;
}

/** A shell word, quoted when it needs it. */
const sh = (word) => (/^[\w@%+=:,./~-]+$/.test(word) ? word : `'${String(word).replaceAll("'", "'\\''")}'`);

function renderEmpty(s) {
  const box = $("empty");
  box.hidden = Boolean(s.points);
  if (s.points) return;
  // the commands carry this server's settings: a bare `clipdex ingest` would write to another store
  const settings = (s.settings || []).map(sh).join(" ");
  $("empty-ingest").textContent = `clipdex ingest ~/Pictures ${settings}`;
  $("empty-watch").textContent = `clipdex serve --watch ~/Pictures ${settings}`;
  const watching = s.sync && s.sync.roots.length;
  $("empty-what").textContent = watching
    ? `Collection ${s.collection} is empty; this server watches ${s.sync.roots.map((r) => r.path).join(", ")}`
      + " and adds new images there as they arrive (see the status above)."
    : `Collection ${s.collection} (store ${s.store}) holds no images, so there is nothing to show yet.`;
}

function fillChoices(s) {
  $("folders").replaceChildren(...s.roots.map((r) => el("option", { value: r.path })));
  $("cameras").replaceChildren(...(s.cameras || []).map((c) => el("option", { value: c.name,
    label: `${c.name} (${plural(c.points, "image")})` })));
}

async function loadStatus() {
  clearTimeout(statusTimer);
  try {
    const response = await fetch("/api/status");
    if (!response.ok) throw new Error(await readError(response));
    const s = await response.json();
    const grew = status && s.points !== status.points;
    status = s;
    renderStatusLine(s);
    renderCollection(s);
    renderEmpty(s);
    fillChoices(s);
    selectionBar();
    if (grew && library.layout) openLibrary(library.by);
    const every = syncing(s.sync) || s.busy ? 1000 : s.sync ? 10000 : 0;
    if (every) statusTimer = setTimeout(loadStatus, every);
  } catch (err) {
    $("status").textContent = "status unavailable";
    showError(keyForm.hidden ? `cannot reach the clipdex server: ${err.message}` : err.message);
  }
}

// -- search ----------------------------------------------------------------------------------------------------
let lastSearch = { what: "", ms: 0 };
function render(rows, started, what) {
  searchRows = rows;
  const seq = arraySequence(rows);
  results.replaceChildren(...rows.map((row, i) => card(row, { sequence: seq, index: i, rank: i + 1 })));
  const ms = started === null ? lastSearch.ms : Math.round(performance.now() - started);
  lastSearch = { what, ms };
  summary.textContent = rows.length
    ? `${rows.length} result${rows.length === 1 ? "" : "s"} for ${what} in ${ms} ms`
    : `no results for ${what}`;
}
onRefresh(() => { if (searchRows.length) render(searchRows, null, lastSearch.what); });

function filterValues() {
  return Object.fromEntries(FILTERS.map((name) => [name, $(name).value.trim()]).filter(([, v]) => v));
}

function describe(q, file, negative, filters, inImage) {
  const parts = [];
  if (q) parts.push(`“${q}”`);
  if (activeConcept.name) parts.push(activeConcept.mode === "members" ? `members of ${activeConcept.name}` : `concept ${activeConcept.name}`);
  if (inImage) parts.push(`the words “${inImage}” in the image`);
  if (file) parts.push(`the example ${file.name}`);
  if (likePaths.length === 1) parts.push(`images like ${nameOf(likePaths[0])}`);
  else if (likePaths.length) parts.push(`images like these ${likePaths.length}`);
  let text = parts.join(" and ");
  if (negative) text += ` but not “${negative}”`;
  const words = { folder: "below", after: "taken from", before: "taken before", camera: "camera" };
  const shown = Object.entries(filters).map(([k, v]) => `${words[k]} ${v}`);
  if (shown.length) text += ` (${shown.join(", ")})`;
  return text;
}

async function search() {
  clearError();
  const q = $("q").value.trim(), negative = $("negative").value.trim(), limit = $("limit").value;
  const file = imageInput.files[0], inImage = $("text-in-image").value.trim();
  const concept = activeConcept.name;
  if (!q && !file && !likePaths.length && !inImage && !concept) {
    showError("Type a description or choose an example image.");
    $("q").focus();
    return;
  }
  const params = new URLSearchParams({ limit });
  if (q) params.set("q", q);
  if (negative) params.append("negative", negative);
  if (inImage) params.set("text_in_image", inImage);
  if (!file) for (const path of likePaths) params.append("like", path);
  if (concept) params.set(activeConcept.mode === "members" ? "in_concept" : "concept", concept);
  const filters = filterValues();
  for (const [key, value] of Object.entries(filters)) params.set(key, value);
  let request;
  if (file) {
    const body = new FormData();
    for (const [key, value] of params) body.append(key, value);
    body.append("image", file, file.name);
    request = fetch("/api/search", { method: "POST", body });
  } else {
    request = fetch(`/api/search?${params}`);
  }
  history.replaceState(null, "", `?${params}#search`);
  showView("search");
  const started = performance.now();
  results.setAttribute("aria-busy", "true");
  $("go").disabled = true;
  try {
    const response = await request;
    if (!response.ok) throw new Error(await readError(response));
    render(await response.json(), started, describe(q, file, negative, filters, inImage));
  } catch (err) {
    results.replaceChildren();
    summary.textContent = "";
    showError(err.message);
  } finally {
    results.removeAttribute("aria-busy");
    $("go").disabled = false;
  }
}

function showPreview() {
  const file = imageInput.files[0];
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  if (file) likePaths = [];  // an uploaded example replaces "more like this" ones
  preview.hidden = clearImage.hidden = !file && !likePaths.length;
  if (likePaths.length) {
    preview.src = `/api/image?${new URLSearchParams({ path: likePaths[0], thumb: 72 })}`;
    preview.alt = likePaths.length === 1 ? `like: ${nameOf(likePaths[0])}` : `like ${likePaths.length} photos`;
    preview.title = `searching by the stored vectors of ${likePaths.join(", ")}`;
  } else if (file) {
    preview.src = URL.createObjectURL(file);
    preview.alt = `example: ${file.name}`;
    preview.title = "";
  } else {
    preview.removeAttribute("src");
    preview.title = "";
  }
}

/** Search by stored vectors (GET /api/search?like=PATH&like=...): nothing is downloaded or re-encoded. */
async function moreLike(paths) {
  likePaths = paths.slice(0, 64);
  imageInput.value = "";
  showPreview();
  $("q").value = "";
  await search();
}
hooks.more = (path) => moreLike([path]);
conceptHooks.search = search;
conceptHooks.selected = () => [...selection.rows.values()].map(refOf);
conceptHooks.clear = clearSelection;
viewerHooks.shown = viewerConcept;
viewerHooks.more = (path) => moreLike([path]);

// -- viewer, duplicates hooks ----------------------------------------------------------------------------------
hooks.open = (seq, index) => openViewer(seq, index);
dupHooks.open = (seq, index) => openViewer(seq, index);
viewerHooks.step = (seq, index) => { if (seq === librarySequence) reveal(index); };
viewerHooks.dups = (group) => { location.hash = "#duplicates"; loadDuplicates(true, false, group.keep); };
dupHooks.changed = () => { loadStatus(); if (library.layout) openLibrary(library.by); };

// -- the selection bar -----------------------------------------------------------------------------------------
function selectionBar() {
  const count = selection.rows.size;
  $("selection-bar").hidden = !count;
  $("selection-count").textContent = selectionText();
  const canMove = Boolean(status && status.can_move);
  $("sel-move").disabled = !canMove;
  $("sel-reason").textContent = canMove ? "" : "move aside is off: set [duplicates] move_to in the server's config";
  $("sel-like").disabled = count > 64;
  $("sel-like").title = count > 64 ? "at most 64 examples" : "search for photos like all of these";
  $("sel-teach").disabled = count > 500;
  $("sel-teach").title = count > 500 ? "at most 500 examples at once" : "teach a concept from these photos";
}
selection.listeners.add(selectionBar);

async function moveSelected() {
  const paths = [...selection.rows.keys()];
  clearError();
  try {
    const result = await api("/api/duplicates/resolve", { json: { action: "move", paths, selection: true } });
    clearSelection();
    notice(`moved ${plural(result.moved.length, "file")} aside (manifest ${result.manifest})`, undoLast);
    results.replaceChildren(...[...results.children].filter((c) => !paths.includes(c.dataset.path)));
    dupHooks.changed();
  } catch (err) {
    showError(err.message);
  }
}

async function copyPaths() {
  const text = [...selection.rows.keys()].join("\n");
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {  // not a secure context, or no permission: the old way
    const area = el("textarea", { value: text });
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  notice(`copied ${plural(selection.rows.size, "path")}`);
}

// -- events ----------------------------------------------------------------------------------------------------
form.addEventListener("submit", (event) => { event.preventDefault(); search(); });
keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  useKey($("key").value);
  $("key").value = "";
  keyForm.hidden = true;
  clearError();
  loadStatus();
  route();
  if ($("q").value.trim() || imageInput.files[0]) search();
});
preview.addEventListener("error", () => { preview.hidden = true; });
imageInput.addEventListener("change", () => { clearError(); showPreview(); });
clearImage.addEventListener("click", () => { likePaths = []; imageInput.value = ""; showPreview(); imageInput.focus(); });
$("clear-filters").addEventListener("click", () => {
  for (const name of FILTERS) $(name).value = "";
  if ($("q").value.trim() || imageInput.files[0] || likePaths.length) search();
});
$("options").addEventListener("click", () => {
  const open = form.classList.toggle("open");
  $("options").setAttribute("aria-expanded", String(open));
});
$("sel-like").addEventListener("click", () => { const paths = [...selection.rows.keys()]; clearSelection(); moreLike(paths); });
$("sel-move").addEventListener("click", moveSelected);
$("sel-copy").addEventListener("click", copyPaths);
$("sel-clear").addEventListener("click", clearSelection);
$("notice").addEventListener("click", (event) => { if (event.target === $("notice")) $("notice").hidden = true; });

/** Mark the focused card, then put the focus back on the same photo in the refreshed results. */
async function markFocused(node, yes) {
  const path = node.dataset.path;
  await mark(node.dataset.ref || path, yes);
  const again = [...results.children].find((c) => c.dataset.path === path);
  if (again) again.querySelector(".thumb").focus();
}

// Keys: "/" search, y / n on a focused result while a concept is active, ← → in the viewer, Esc closes the viewer or clears the selection.
document.addEventListener("keydown", (event) => {
  const typing = event.target.closest && event.target.closest("input, textarea, select");
  if (isOpen()) {
    if (event.key === "Escape") { closeViewer(); event.preventDefault(); }
    else if (event.key === "ArrowLeft") { step(-1); event.preventDefault(); }
    else if (event.key === "ArrowRight") { step(1); event.preventDefault(); }
    return;
  }
  if ((event.key === "y" || event.key === "n") && context.concept && !typing && !event.ctrlKey && !event.metaKey
      && !event.altKey) {  // one keystroke: the focused result is (not) the active concept
    const node = event.target.closest && event.target.closest("#results .card");
    if (node) { event.preventDefault(); markFocused(node, event.key === "y"); }
    return;
  }
  if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
    event.preventDefault();
    $("q").focus();
    $("q").select();
  } else if (event.key === "Escape") {
    if (typing) event.target.blur();
    else if (selection.rows.size) clearSelection();
  }
});

initLibrary();
initViewer();
initDuplicates();
initConcepts();
lasso($("search-view"), () => [...results.children].map((node, i) => ({ node, row: searchRows[i] })).filter((c) => c.row));

const initial = new URLSearchParams(location.search);
if ([...$("limit").options].some((o) => o.value === initial.get("limit"))) $("limit").value = initial.get("limit");
if (initial.get("negative")) $("negative").value = initial.get("negative");
if (initial.getAll("like").length) { likePaths = initial.getAll("like"); showPreview(); }
if (initial.get("q")) $("q").value = initial.get("q");
for (const name of FILTERS) if (initial.get(name)) $(name).value = initial.get(name);
if (initial.get("text_in_image")) $("text-in-image").value = initial.get("text_in_image");
loadStatus();
route();
if (initial.get("q") || likePaths.length || initial.get("text_in_image")) search();
