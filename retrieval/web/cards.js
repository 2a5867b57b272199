// Cards (search results and library) and the selection: click, shift-click a range, ctrl-click, drag a box.
// A "sequence" is what a grid shows, in order: { length, peek(i) -> row | undefined, get(i) -> Promise<row>,
// range(lo, hi) -> Promise<rows> }; the viewer steps through the same sequence.
import { cardActions, context } from "./extensions.js";
import { $, camera, clock, dateOf, el, folderOf, imageUrl, isVideo, nameOf, plural, refOf, wrapAtSlashes } from "./util.js";

export const THUMB = 256;
export const hooks = { open: null, more: null };  // set by app.js: open(sequence, index), more(path)

/** An array as a sequence. */
export function arraySequence(rows) {
  return { length: rows.length, peek: (i) => rows[i], get: async (i) => rows[i],
           range: async (lo, hi) => rows.slice(lo, hi + 1) };
}

// -- the selection ------------------------------------------------------------------------------------------
export const selection = { rows: new Map(), anchor: null, listeners: new Set() };

function changed() {
  document.body.classList.toggle("selecting", selection.rows.size > 0);
  for (const node of document.querySelectorAll(".card[data-path]")) {
    const on = selection.rows.has(node.dataset.path);
    node.classList.toggle("selected", on);
    const pick = node.querySelector(".pick");
    if (pick) { pick.setAttribute("aria-pressed", String(on)); pick.textContent = on ? "✓" : ""; }
  }
  for (const callback of selection.listeners) callback();
}
export function clearSelection() { selection.rows.clear(); selection.anchor = null; changed(); }
export function select(rows, on = true) {
  for (const row of rows) if (on) selection.rows.set(row.path, row); else selection.rows.delete(row.path);
  changed();
}

async function pick(sequence, index, row, event) {
  if (event.shiftKey && selection.anchor && selection.anchor.sequence === sequence) {
    const lo = Math.min(selection.anchor.index, index), hi = Math.max(selection.anchor.index, index);
    select(await sequence.range(lo, Math.min(hi, lo + 5000)));
    return;
  }
  selection.anchor = { sequence, index };
  select([row], !selection.rows.has(row.path));
}

/** Select the cards a box (client coordinates) touches: the drag of the mouse over a grid's free space. */
export function lasso(container, cardsOf) {
  const box = $("lasso");
  container.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || event.target.closest(".card, button, a, input") || event.pointerType === "touch") return;
    const x0 = event.clientX, y0 = event.clientY;
    let moved = false;
    const move = (e) => {
      const left = Math.min(x0, e.clientX), top = Math.min(y0, e.clientY);
      const width = Math.abs(e.clientX - x0), height = Math.abs(e.clientY - y0);
      if (!moved && width + height < 6) return;
      moved = true;
      Object.assign(box.style, { left: `${left}px`, top: `${top}px`, width: `${width}px`, height: `${height}px` });
      box.hidden = false;
    };
    const up = (e) => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      box.hidden = true;
      if (!moved) return;
      const r = { left: Math.min(x0, e.clientX), right: Math.max(x0, e.clientX),
                  top: Math.min(y0, e.clientY), bottom: Math.max(y0, e.clientY) };
      const hit = cardsOf().filter(({ node }) => {
        const c = node.getBoundingClientRect();
        return c.left < r.right && c.right > r.left && c.top < r.bottom && c.bottom > r.top;
      });
      select(hit.map(({ row }) => row));
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
    event.preventDefault();
  });
}

// -- a card ---------------------------------------------------------------------------------------------------
/** A photo's card. ``options``: sequence and index (for the viewer and ranges), rank (search results). */
export function card(row, { sequence, index, rank, tag = "li" }) {
  const node = el(tag, { className: "card" });
  node.dataset.path = row.path;
  node.dataset.ref = refOf(row);  // a moment: path#t=S (what concept answers name)
  const name = nameOf(row.path);
  const thumb = el("button", { type: "button", className: "thumb", title: `view ${row.path}` },
    el("img", { src: imageUrl(row.path, THUMB, isVideo(row) ? row.time_s : undefined), alt: name, loading: "lazy", decoding: "async" }));
  thumb.setAttribute("aria-label", `view ${name}`);
  thumb.addEventListener("click", (event) => {
    if (selection.rows.size || event.shiftKey || event.ctrlKey || event.metaKey) pick(sequence, index, row, event);
    else hooks.open(sequence, index);
  });
  const selected = selection.rows.has(row.path);
  const pickButton = el("button", { type: "button", className: "pick", textContent: selected ? "✓" : "" });
  pickButton.setAttribute("aria-label", `select ${name}`);
  pickButton.setAttribute("aria-pressed", String(selected));
  pickButton.addEventListener("click", (event) => pick(sequence, index, row, event));
  node.classList.toggle("selected", selected);
  node.append(thumb, pickButton);
  // a video moment (search results): its time on the thumbnail; a whole video (the library): its duration
  if (isVideo(row)) {
    const whole = row.start_s === undefined;
    const at = clock(whole ? row.duration_s : row.start_s);
    const badge = el("span", { className: "badge", textContent: `▶ ${at}` });
    badge.setAttribute("aria-hidden", "true");  // said by the button's name
    thumb.append(badge);
    thumb.setAttribute("aria-label", whole ? `play ${name}, a video of ${at}` : `play ${name} from ${at}`);
  }

  const meta = el("div", { className: "meta" });
  if (rank !== undefined) {
    const more = el("button", { type: "button", className: "link more", textContent: "more like this" });
    more.setAttribute("aria-label", `more like this: ${name}`);
    more.addEventListener("click", () => hooks.more(row.path));
    const score = el("span", { className: "score", textContent: Number(row.score).toFixed(4), title: "cosine similarity" });
    meta.append(el("div", { className: "row" }, el("span", { className: "rank", textContent: `#${rank}` }), score, more));
  }
  // the name (two lines at most, wrapping at "/" where a name has one), the date and camera, the folder
  // (cut at its start when long: its end says more)
  meta.append(el("span", { className: "name", title: row.path }, ...wrapAtSlashes(name)));
  const when = [dateOf(row), camera(row)].filter(Boolean).join(" · ");
  meta.append(el("span", { className: "when", textContent: when || "no date" }));
  meta.append(el("span", { className: "folder", title: folderOf(row) }, el("bdi", { textContent: folderOf(row) })));
  if (row.ocr_text) meta.append(el("span", { className: "ocr", textContent: row.ocr_text, title: `text in the image: ${row.ocr_text}` }));
  const actions = el("div", { className: "card-actions" });
  for (const action of cardActions) {
    if (action.when && !action.when(row, context)) continue;
    const button = el("button", { type: "button", className: "card-action", textContent: action.label });
    button.dataset.action = action.id;
    if (action.title) {
      button.title = typeof action.title === "function" ? action.title(row, context) : action.title;
      button.setAttribute("aria-label", button.title);
    }
    if (action.pressed) button.setAttribute("aria-pressed", String(Boolean(action.pressed(row, context))));
    button.addEventListener("click", () => action.run(row, context, button));
    actions.append(button);
  }
  node.append(meta, actions);  // the actions float over the thumbnail's corner: every card keeps its height
  return node;
}

export function selectionText() {
  return plural(selection.rows.size, "photo") + " selected";
}
