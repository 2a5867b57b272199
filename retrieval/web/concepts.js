// Personal concepts (issue 25) on the page: the Concepts panel (list, rename, forget, rank by, members), "Teach a
// concept…" from the selection, ✓/✗ on every result card while a concept is active (POST .../answer refits
// server-side, then the results are searched again), y/n on the focused card, and the viewer's two buttons.
// Names are the user's text: they reach the DOM through textContent only.
import { cardActions, context, refreshCards } from "./extensions.js";
import { $, api, clearError, el, n, nameOf, notice, pathOf, plural, refOf, showError } from "./util.js";

/** Set by app.js: search(), the search view's search with the active concept; selected() -> paths; clear(). */
export const conceptHooks = { search: null, selected: null, clear: null };

/** ``mode``: "rank" (results ranked by the concept, with ✓/✗) or "members" (its members only). */
export const active = { name: null, mode: "rank", marks: new Map(), lastMs: null, answers: 0 };
let list = [];

// retrieval.concepts.book.NAME_RE: letters, digits, space and _ . ' + - (a name is also a path segment)
const NAME = /^[A-Za-z0-9][A-Za-z0-9 _.'+-]*$/;
const badName = (name) => (NAME.test(name) && name.length <= 64 ? ""
  : "A concept name is letters, digits, spaces and _ . ' + - (64 at most), starting with a letter or digit.");
const url = (name, tail = "") => `/api/concepts/${encodeURIComponent(name)}${tail}`;

// -- ✓ and ✗ on the cards -----------------------------------------------------------------------------------
function markAction(yes) {
  const word = yes ? "yes" : "no";
  return {
    id: `concept-${word}`, label: yes ? "✓" : "✗",
    title: (row) => (yes ? `yes: ${nameOf(row.path)} is ${context.concept}` : `no: ${nameOf(row.path)} is not ${context.concept}`),
    when: (row, ctx) => Boolean(ctx.concept) && ctx.view === "search",
    pressed: (row) => active.marks.get(row.path) === (yes ? "y" : "n"),
    run: (row) => mark(refOf(row), yes),
  };
}
cardActions.push(markAction(true), markAction(false));

/** Answer ``ref`` (a path, or a moment's ``path#t=S``) for the active concept (refit server-side), then search
again; returns the ms it took. */
export async function mark(ref, yes) {
  const path = pathOf(ref);
  const name = context.concept;
  if (!name) return null;
  const started = performance.now();
  clearError();
  try {
    const answer = await api(url(name, "/answer?n=1"), { json: { ref, answer: yes ? "y" : "n" } });
    active.marks.set(path, yes ? "y" : "n");
    await conceptHooks.search();
    active.lastMs = Math.round(performance.now() - started);
    $("concept-state").textContent = `${yes ? "✓" : "✗"} ${nameOf(path)}: refit and refreshed in ${active.lastMs} ms`
      + ` · ${plural(answer.members, "member")}`;
    active.answers += 1;
    document.body.dataset.conceptAnswers = String(active.answers);  // (a mark is done: the tests wait for it)
    return active.lastMs;
  } catch (err) {
    showError(err.message);
    return null;
  }
}

// -- activating ------------------------------------------------------------------------------------------------
/** Rank the search results by ``name`` ("rank", ✓/✗ shown) or show its members ("members"); null: none. */
export async function activate(name, mode = "rank") {
  if (name !== active.name) active.marks.clear();
  active.name = name;
  active.mode = mode;
  context.concept = name && mode === "rank" ? name : null;
  const bar = $("concept-bar");
  bar.hidden = !name;
  if (name) {
    $("concept-name").textContent = name;
    $("concept-what").textContent = mode === "rank"
      ? " ranks the results: answer ✓ or ✗ on a card (or y / n on the focused one)"
      : ": its members";
    $("concept-state").textContent = "";
  }
  refreshCards();
  if (name) { location.hash = "#search"; await conceptHooks.search(); }
}

// -- the panel -------------------------------------------------------------------------------------------------
/** A link-like button whose accessible name is its text and the concept's ("rename: grandma"). */
function button(text, name, onClick) {
  const b = el("button", { type: "button", className: "link", textContent: text });
  b.setAttribute("aria-label", `${text}: ${name}`);
  b.addEventListener("click", onClick);
  return b;
}

function renameForm(concept, row) {
  const input = el("input", { type: "text", value: concept.name, maxLength: 64, required: true,
                              id: "concept-rename-input" });
  input.setAttribute("aria-label", `new name for ${concept.name}`);
  const form = el("form", { className: "rename" }, input, el("button", { type: "submit", textContent: "Rename" }),
                  button("cancel", concept.name, () => renderList()));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = input.value.trim();
    if (!name || name === concept.name) { renderList(); return; }
    if (badName(name)) { showError(badName(name)); return; }
    try {
      await api(url(concept.name, "/rename"), { json: { name } });
      if (active.name === concept.name) {  // the active one keeps working under its new name (no new search)
        active.name = name;
        if (context.concept) context.concept = name;
        $("concept-name").textContent = name;
        refreshCards();
      }
      notice(`renamed ${concept.name} to ${name}`);
      await loadConcepts();
    } catch (err) { showError(err.message); }
  });
  row.replaceChildren(el("td", { colSpan: 3 }, form));
  input.focus();
  input.select();
}

async function forget(concept) {
  if (!window.confirm(`Forget the concept “${concept.name}”? Its tags are removed from every photo `
    + "(the photos themselves stay).")) return;
  try {
    await api(url(concept.name), { method: "DELETE" });
    if (active.name === concept.name) await activate(null);
    notice(`forgot ${concept.name}`);
    await loadConcepts();
  } catch (err) { showError(err.message); }
}

function renderList() {
  const body = $("concept-list");
  $("concepts-empty").hidden = list.length > 0;
  $("concept-table").hidden = !list.length;
  body.replaceChildren(...list.map((concept) => {
    const row = el("tr", { className: "concept" });
    row.dataset.name = concept.name;
    const actions = el("div", { className: "actions" },
      button("rank by it", concept.name, () => activate(concept.name, "rank")),
      button("members", concept.name, () => activate(concept.name, "members")),
      button("rename", concept.name, () => renameForm(concept, row)),
      button("forget", concept.name, () => forget(concept)));
    row.append(el("th", { scope: "row", className: "name", textContent: concept.name }),
               el("td", { className: "num", textContent: n(concept.members) }), el("td", {}, actions));
    return row;
  }));
}

/** GET /api/concepts into the panel. */
export async function loadConcepts() {
  try {
    list = await api("/api/concepts");
    renderList();
  } catch (err) { showError(err.message); }
}

// -- teaching from the selection ---------------------------------------------------------------------------------
async function teach(event) {
  event.preventDefault();
  const name = $("teach-name").value.trim();
  const paths = conceptHooks.selected();
  if (!name || !paths.length) return;
  if (badName(name)) { showError(badName(name)); return; }
  try {
    const result = await api(url(name), { json: { examples: paths } });
    $("teach-form").hidden = true;
    $("teach-name").value = "";
    conceptHooks.clear();
    notice(`taught ${name} from ${plural(paths.length, "photo")}: ${plural(result.members, "member")}`);
    await loadConcepts();
    await activate(name, "rank");
    for (const ref of paths) active.marks.set(pathOf(ref), "y");  // the examples show as answered ✓
    refreshCards();
  } catch (err) { showError(err.message); }
}

// -- the viewer ---------------------------------------------------------------------------------------------------
/** The viewer's "add to / not this concept" buttons for ``row`` (hidden without an active concept). */
export function viewerConcept(row) {
  const box = $("viewer-concept");
  box.hidden = !context.concept;
  if (!context.concept) return;
  $("viewer-concept-yes").textContent = `Add to ${context.concept}`;
  $("viewer-concept-no").textContent = `Not ${context.concept}`;
  box.dataset.path = refOf(row);
}

export function initConcepts() {
  $("teach-form").addEventListener("submit", teach);
  $("sel-teach").addEventListener("click", () => {
    const form = $("teach-form");
    form.hidden = !form.hidden;
    if (!form.hidden) $("teach-name").focus();
  });
  $("teach-cancel").addEventListener("click", () => { $("teach-form").hidden = true; });
  $("concept-stop").addEventListener("click", () => activate(null));
  $("concepts-refresh").addEventListener("click", loadConcepts);
  for (const [id, yes] of [["viewer-concept-yes", true], ["viewer-concept-no", false]]) {
    $(id).addEventListener("click", async () => {
      const path = $("viewer-concept").dataset.path;
      if (path && await mark(path, yes) !== null) notice(`${yes ? "added to" : "not"} ${active.name}: ${nameOf(path)}`);
    });
  }
}
