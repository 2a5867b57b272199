// The library without a query: GET /api/browse?by=date|folder, virtualised. The first page brings every
// section (a month or a folder: its start and count), so the whole layout is known up front; pages of rows are
// fetched as they come near the viewport, and only the cards near it exist in the DOM.
import { card, lasso } from "./cards.js";
import { onRefresh } from "./extensions.js";
import { $, api, el, n, plural, showError } from "./util.js";

const PAGE = 200;
const HEADER = 44;      // a section's heading
const GAP = 14;
const BUFFER = 900;     // px above and below the viewport that are rendered too

export const library = {
  by: "date", total: 0, sections: [], pages: new Map(), loading: new Map(), layout: null, nodes: new Map(),
  generation: 0,
};

/** The library as a sequence (see cards.js). */
export const sequence = {
  get length() { return library.total; },
  peek(i) { const page = library.pages.get(Math.floor(i / PAGE)); return page && page[i % PAGE]; },
  async get(i) { await loadPage(Math.floor(i / PAGE)); return this.peek(i); },
  async range(lo, hi) {
    for (let p = Math.floor(lo / PAGE); p <= Math.floor(hi / PAGE); p++) await loadPage(p);
    const rows = [];
    for (let i = lo; i <= hi; i++) { const row = this.peek(i); if (row) rows.push(row); }
    return rows;
  },
};

async function loadPage(p) {
  if (library.pages.has(p)) return;
  if (!library.loading.has(p)) {
    const generation = library.generation;
    const params = new URLSearchParams({ by: library.by, cursor: p * PAGE, limit: PAGE });
    library.loading.set(p, api(`/api/browse?${params}`).then((doc) => {
      if (generation !== library.generation) return;
      const rows = [];
      for (const row of doc.items) rows[row.position - p * PAGE] = row;
      library.pages.set(p, rows);
    }).finally(() => library.loading.delete(p)));
  }
  await library.loading.get(p);
}

/** Start over (``by``: "date" or "folder"): the sections and the first page. */
export async function openLibrary(by) {
  library.by = by;
  library.generation += 1;
  library.pages.clear();
  library.loading.clear();
  for (const node of library.nodes.values()) node.remove();
  library.nodes.clear();
  $("library").replaceChildren();
  $("by-date").setAttribute("aria-pressed", String(by === "date"));
  $("by-folder").setAttribute("aria-pressed", String(by === "folder"));
  $("library-summary").textContent = "loading…";
  try {
    const doc = await api(`/api/browse?${new URLSearchParams({ by, limit: PAGE, sections: "true" })}`);
    library.total = doc.total;
    library.sections = doc.sections;
    const rows = [];
    for (const row of doc.items) rows[row.position] = row;
    library.pages.set(0, rows);
    const videos = doc.videos || 0;  // one card per video, however many moments it has
    const what = videos ? `${plural(library.total - videos, "photo")} and ${plural(videos, "video")}`
      : plural(library.total, "photo");
    $("library-summary").textContent = library.total
      ? `${what} in ${plural(library.sections.length, by === "date" ? "month" : "folder")}`
        + (by === "date" ? ", newest first" : "")
      : "no photos yet";
    layout();
  } catch (err) {
    $("library-summary").textContent = "";
    showError(err.message);
  }
}

/** Positions of every section and row for the current width. */
function layout() {
  const box = $("library");
  const width = box.clientWidth;
  if (!width) return;
  const min = window.innerWidth <= 560 ? 140 : 180;
  const cols = Math.max(1, Math.floor((width + GAP) / (min + GAP)));
  const cardW = (width - GAP * (cols - 1)) / cols;
  const metaH = parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--card-meta")) || 84;
  const cardH = cardW + metaH + 2;
  let y = 0;
  const placed = library.sections.map((s) => {
    const rows = Math.ceil(s.count / cols);
    const top = y;
    y += HEADER + rows * (cardH + GAP);
    return { ...s, top, rows };
  });
  const before = library.layout;
  if (before && (before.cardW !== cardW || before.cols !== cols)) {  // a new geometry: every node is placed anew
    for (const node of library.nodes.values()) node.remove();
    library.nodes.clear();
  }
  library.layout = { cols, cardW, cardH, placed, height: y };
  box.style.height = `${y}px`;
  render();
}

/** Make the cards and headings near the viewport, drop the others, fetch the pages they need. */
function render() {
  const L = library.layout;
  const box = $("library");
  if (!L || document.body.dataset.view !== "library") return;
  const origin = box.getBoundingClientRect().top + window.scrollY;
  const from = window.scrollY - origin - BUFFER, to = window.scrollY - origin + window.innerHeight + BUFFER;
  const wanted = new Map();
  const missing = new Set();
  for (const s of L.placed) {
    const bottom = s.top + HEADER + s.rows * (L.cardH + GAP);
    if (bottom < from || s.top > to) continue;
    wanted.set(`s${s.start}`, () => {
      const head = el("h2", { className: "section" }, el("span", { textContent: s.label }),
                      el("span", { className: "count", textContent: n(s.count) }));
      Object.assign(head.style, { top: `${s.top}px`, left: "0px", width: "100%", height: `${HEADER}px` });
      return head;
    });
    const firstRow = Math.max(0, Math.floor((from - s.top - HEADER) / (L.cardH + GAP)));
    const lastRow = Math.min(s.rows - 1, Math.floor((to - s.top - HEADER) / (L.cardH + GAP)));
    for (let r = firstRow; r <= lastRow; r++) {
      for (let c = 0; c < L.cols; c++) {
        const k = r * L.cols + c;
        if (k >= s.count) break;
        const i = s.start + k;
        const row = sequence.peek(i);
        if (!row) missing.add(Math.floor(i / PAGE));
        const key = row ? `c${i}:${row.path}` : `p${i}`;
        wanted.set(key, () => {
          const node = row ? card(row, { sequence, index: i, tag: "div" }) : el("div", { className: "placeholder" });
          Object.assign(node.style, { top: `${s.top + HEADER + r * (L.cardH + GAP)}px`,
                                      left: `${c * (L.cardW + GAP)}px`, width: `${L.cardW}px`, height: `${L.cardH}px` });
          if (row) node.dataset.position = i;
          return node;
        });
      }
    }
  }
  for (const [key, node] of library.nodes) {
    if (!wanted.has(key)) { node.remove(); library.nodes.delete(key); }
  }
  const fresh = [];
  for (const [key, make] of wanted) {
    if (!library.nodes.has(key)) { const node = make(); library.nodes.set(key, node); fresh.push(node); }
  }
  box.append(...fresh);
  for (const p of missing) {
    const generation = library.generation;
    loadPage(p).then(() => { if (generation === library.generation) render(); }).catch((err) => showError(err.message));
  }
}

/** The cards now in the DOM with their rows (for the drag box). */
export function shownCards() {
  return [...library.nodes.values()].filter((node) => node.dataset.position !== undefined)
    .map((node) => ({ node, row: sequence.peek(Number(node.dataset.position)) })).filter((c) => c.row);
}

/** Scroll so that the photo at ``index`` is in view (the viewer stepping through the library). */
export function reveal(index) {
  const L = library.layout;
  if (!L) return;
  const s = L.placed.findLast((p) => p.start <= index);
  if (!s) return;
  const y = s.top + HEADER + Math.floor((index - s.start) / L.cols) * (L.cardH + GAP);
  const origin = $("library").getBoundingClientRect().top + window.scrollY;
  if (origin + y < window.scrollY || origin + y + L.cardH > window.scrollY + window.innerHeight) {
    window.scrollTo({ top: origin + y - 120 });
  }
}

let frame = 0;
function soon() { if (!frame) frame = requestAnimationFrame(() => { frame = 0; render(); }); }

export function initLibrary() {
  window.addEventListener("scroll", soon, { passive: true });
  new ResizeObserver(() => { if (library.layout) layout(); }).observe($("library"));
  $("by-date").addEventListener("click", () => { location.hash = "#library/date"; });  // app.js routes it
  $("by-folder").addEventListener("click", () => { location.hash = "#library/folder"; });
  lasso($("library-view"), shownCards);
  onRefresh(() => { for (const node of library.nodes.values()) node.remove(); library.nodes.clear(); render(); });
}

export function showLibrary() {
  if (!library.layout) return;
  layout();
}
