// The viewer: one photo fitted to the screen, ← and → through the sequence it was opened from, Esc closes;
// a side panel with the date, camera, size, folder, OCR text, concepts and duplicate status.
import { THUMB } from "./cards.js";
import {
  $, api, camera, clock, el, folderOf, imageUrl, isVideo, mediaUrl, n, nameOf, plural, wrapAtSlashes,
} from "./util.js";

const viewer = { sequence: null, index: 0, returnFocus: null, dupKnown: new Map(), hooks: { more: null, dups: null, step: null, shown: null } };
export const viewerHooks = viewer.hooks;

/** What the duplicates view learnt: path -> a line about its group (the viewer's duplicate status). */
export function rememberDuplicates(groups) {
  for (const g of groups) {
    for (const f of g.files) {
      viewer.dupKnown.set(f.path, f.path === g.keep
        ? `kept in a group of ${g.files.length} (${g.reason}); ${plural(g.duplicates.length, "duplicate")}`
        : `a duplicate of ${g.keep}`);
    }
  }
}

export const isOpen = () => !$("viewer").hidden;

export async function openViewer(sequence, index) {
  if (!isOpen()) viewer.returnFocus = document.activeElement;
  viewer.sequence = sequence;
  $("viewer").hidden = false;
  document.body.classList.add("viewing");
  await show(index);
  $("viewer-close").focus();
}

export function closeViewer() {
  if (!isOpen()) return;
  const media = $("viewer-media").querySelector("video");
  if (media) media.pause();
  $("viewer").hidden = true;
  $("viewer-media").replaceChildren();
  document.body.classList.remove("viewing");
  // focus goes back to the card of the photo last shown (the grid followed the arrows), else where it was
  const path = $("viewer").dataset.path;
  const card = [...document.querySelectorAll(".card")].find((c) => c.dataset.path === path && c.offsetParent);
  if (card) card.querySelector(".thumb").focus();
  else if (viewer.returnFocus && viewer.returnFocus.isConnected) viewer.returnFocus.focus();
}

export async function step(delta) {
  const next = viewer.index + delta;
  if (!viewer.sequence || next < 0 || next >= viewer.sequence.length) return;
  await show(next);
}

function fact(term, value, className) {
  if (value === undefined || value === null || value === "") return [];
  const dd = el("dd", { className: className || "" });
  if (Array.isArray(value)) dd.append(...value); else dd.textContent = String(value);
  return [el("dt", { textContent: term }), dd];
}

async function show(index) {
  const row = await viewer.sequence.get(index);
  if (!row) return;
  viewer.index = index;
  if (viewer.hooks.step) viewer.hooks.step(viewer.sequence, index);
  let media;
  if (isVideo(row)) {  // a video moment plays from its start; a whole video (the library) from 0
    media = el("video", { controls: true, preload: "metadata", src: `${mediaUrl(row.path)}#t=${Number(row.start_s) || 0}` });
    media.setAttribute("aria-label", `video ${nameOf(row.path)}`);
    media.addEventListener("loadedmetadata", () => { media.currentTime = Number(row.start_s) || 0; }, { once: true });
  } else {
    media = el("img", { src: imageUrl(row.path), alt: nameOf(row.path) });
  }
  $("viewer-media").replaceChildren(media);
  showMoments(row, media);
  $("viewer-title").replaceChildren(...wrapAtSlashes(nameOf(row.path)));
  const size = row.width && row.height ? `${row.width} × ${row.height}` : "";
  const bytes = typeof row.size !== "number" ? "" : row.size < 1 << 20 ? `${(row.size / 1024).toFixed(1)} KiB`
    : `${(row.size / (1 << 20)).toFixed(1)} MiB`;
  const concepts = Array.isArray(row.concepts) ? row.concepts.map((c) => (typeof c === "string" ? c : c.name || JSON.stringify(c))) : [];
  $("viewer-info").replaceChildren(
    ...fact("Taken", row.taken_at ? String(row.taken_at).replace("T", " ") : isVideo(row) ? "no date in the file" : "no EXIF date"),
    ...(row.taken_at || typeof row.mtime !== "number" ? [] : fact("File date", new Date(row.mtime * 1000).toISOString().slice(0, 16).replace("T", " "))),
    ...fact("Camera", camera(row) || "unknown"),
    ...fact("Size", [size, bytes, row.format].filter(Boolean).join(" · ")),
    ...fact("Folder", wrapAtSlashes(folderOf(row))),
    ...(isVideo(row) ? fact("Duration", `${clock(row.duration_s)}${row.moments ? ` · ${plural(row.moments, "moment")}` : ""}`) : []),
    ...(isVideo(row) && row.start_s !== undefined ? fact("Moment", `${clock(row.start_s)}–${clock(row.end_s)}`) : []),
    ...fact("Text in image", row.ocr_text, "ocr"),
    ...fact("Concepts", concepts.length ? concepts.join(", ") : null),
    ...fact("Position", `${n(index + 1)} of ${n(viewer.sequence.length)}`),
  );
  $("viewer-open").href = isVideo(row) ? mediaUrl(row.path) : imageUrl(row.path);
  $("viewer-prev").disabled = index <= 0;
  $("viewer-next").disabled = index >= viewer.sequence.length - 1;
  $("viewer-dup-status").textContent = `Duplicates: ${viewer.dupKnown.get(row.path) || "not checked yet"}`;
  $("viewer").dataset.path = row.path;
  if (viewer.hooks.shown) viewer.hooks.shown(row);
}

/** A video's moments (GET /api/moments) as a strip of frames with their times: a click plays from that
moment's start; the moment playing is marked (aria-current) as the video runs. */
async function showMoments(row, media) {
  const box = $("viewer-moments"), strip = box.querySelector(".moment-strip");
  strip.replaceChildren();
  box.hidden = !isVideo(row);
  if (!isVideo(row)) return;
  const path = row.path;
  let doc;
  try {
    doc = await api(`/api/moments?${new URLSearchParams({ path })}`);
  } catch (err) {
    strip.replaceChildren(el("li", { textContent: err.message }));
    return;
  }
  if ($("viewer").dataset.path !== path || !media.isConnected) return;  // stepped on meanwhile
  const buttons = doc.moments.map((m) => {
    const at = clock(m.start_s);
    const button = el("button", { type: "button", className: "moment" },
      el("img", { src: imageUrl(path, THUMB, m.time_s), alt: "", loading: "lazy", decoding: "async" }),
      el("span", { textContent: at }));
    button.dataset.start = m.start_s;
    button.setAttribute("aria-label", `play from ${at}`);
    button.addEventListener("click", () => {
      media.currentTime = Number(m.start_s) || 0;
      media.play().catch(() => {});  // a browser that refuses to autoplay still shows the frame
    });
    return button;
  });
  strip.replaceChildren(...buttons.map((b) => el("li", {}, b)));
  const mark = () => {
    const t = media.currentTime;
    doc.moments.forEach((m, i) => {
      const on = t >= Number(m.start_s) - 0.05 && (t < Number(m.end_s) || i === doc.moments.length - 1);
      if (on) buttons[i].setAttribute("aria-current", "true"); else buttons[i].removeAttribute("aria-current");
    });
  };
  media.addEventListener("timeupdate", mark);
  media.addEventListener("seeked", mark);
  mark();
  const current = buttons.find((b) => b.getAttribute("aria-current"));
  if (current) current.scrollIntoView({ block: "nearest", inline: "nearest" });
}

/** "Find duplicates of this": the group that holds this file, from GET /api/duplicates?path=. */
async function findDuplicates() {
  const path = $("viewer").dataset.path;
  $("viewer-dup-status").textContent = "Duplicates: looking…";
  try {
    const doc = await api(`/api/duplicates?${new URLSearchParams({ path, limit: 1 })}`);
    if (doc.groups.length) rememberDuplicates(doc.groups);
    else viewer.dupKnown.set(path, `none found among ${n(doc.checked)} files`);
    if ($("viewer").dataset.path === path) {
      $("viewer-dup-status").textContent = `Duplicates: ${viewer.dupKnown.get(path)}`;
      if (doc.groups.length && viewer.hooks.dups) {
        const open = el("button", { type: "button", className: "link", textContent: "review in Duplicates" });
        open.addEventListener("click", () => { closeViewer(); viewer.hooks.dups(doc.groups[0]); });
        $("viewer-dup-status").append(" ", open);
      }
    }
  } catch (err) {
    $("viewer-dup-status").textContent = `Duplicates: ${err.message}`;
  }
}

export function initViewer() {
  $("viewer-close").addEventListener("click", closeViewer);
  $("viewer-prev").addEventListener("click", () => step(-1));
  $("viewer-next").addEventListener("click", () => step(1));
  $("viewer-like").addEventListener("click", () => { const path = $("viewer").dataset.path; closeViewer(); viewer.hooks.more(path); });
  $("viewer-dups").addEventListener("click", findDuplicates);
  $("viewer").addEventListener("keydown", (event) => {  // keep Tab inside the dialog
    if (event.key !== "Tab") return;
    const focusable = [...$("viewer").querySelectorAll("button:not(:disabled), a[href], video")];
    const first = focusable[0], last = focusable[focusable.length - 1];
    if (event.shiftKey && document.activeElement === first) { last.focus(); event.preventDefault(); }
    else if (!event.shiftKey && document.activeElement === last) { first.focus(); event.preventDefault(); }
  });
}
