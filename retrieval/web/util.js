// Small helpers shared by the page's modules. Every string from a file name, EXIF or OCR goes into the DOM
// as text (textContent, text nodes): never as markup.

export const $ = (id) => document.getElementById(id);

/** An element with properties and children (strings become text nodes). */
export function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export const n = (x) => Number(x || 0).toLocaleString();
export const plural = (count, word) => `${n(count)} ${word}${count === 1 ? "" : "s"}`;
export const nameOf = (path) => path.slice(path.lastIndexOf("/") + 1);
export const folderOf = (row) => row.folder || row.path.slice(0, Math.max(row.path.lastIndexOf("/"), 1));

/** Text nodes of ``text`` with a <wbr> after every "/", so that a long path wraps at its separators. */
export function wrapAtSlashes(text) {
  const parts = [];
  for (const piece of String(text).split(/(?<=\/)/)) parts.push(document.createTextNode(piece), document.createElement("wbr"));
  parts.pop();
  return parts;
}

/** "2023-06-14" from EXIF time, else the file's time (with "file" said), or "" */
export function dateOf(row) {
  if (row.taken_at) return String(row.taken_at).slice(0, 10);
  if (typeof row.mtime === "number") return new Date(row.mtime * 1000).toISOString().slice(0, 10);
  return "";
}

export function camera(row) {
  const make = row.camera_make || "", model = row.camera_model || "";
  return model.toLowerCase().startsWith(make.toLowerCase()) ? model : `${make} ${model}`.trim();
}

/** A photo's bytes, or its thumbnail (``thumb`` px); a video moment's thumbnail is the frame at ``time`` s. */
export function imageUrl(path, thumb, time) {
  const params = new URLSearchParams({ path });
  if (thumb) params.set("thumb", thumb);
  if (thumb && Number.isFinite(Number(time))) params.set("t", Number(time));
  return `/api/image?${params}`;
}

/** The video extension point: a video moment (media == "video") plays from /api/media at its start. */
export const mediaUrl = (path) => `/api/media?${new URLSearchParams({ path })}`;
export const isVideo = (row) => row.media === "video";
/** What the API is told a card is: a video moment as ``path#t=SECONDS`` (that moment), a photo by its path. */
export const refOf = (row) => (isVideo(row) && row.time_s != null ? `${row.path}#t=${row.time_s}` : row.path);
/** The path a reference names (a moment's fragment cut off). */
export const pathOf = (ref) => String(ref).replace(/#t=[0-9.]+$/, "");
export function clock(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

// -- errors and notices ---------------------------------------------------------------------------------------
export function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}
export function clearError() { $("error").hidden = true; $("error").textContent = ""; }

/** A short confirmation ("moved 3 files aside"), with an undo button when ``undo`` is given. */
export function notice(message, undo) {
  $("notice-text").textContent = message;
  const button = $("notice-undo");
  button.hidden = !undo;
  button.onclick = undo ? () => { $("notice").hidden = true; undo(); } : null;
  $("notice").hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { $("notice").hidden = true; }, 20000);
}
let noticeTimer = 0;

// -- the API ------------------------------------------------------------------------------------------------
export const events = new EventTarget();  // "need-key": a 401 came back

export async function readError(response) {
  if (response.status === 401) events.dispatchEvent(new Event("need-key"));
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status} ${response.statusText}`;
}

/** GET or POST JSON; the server's one-line error as the Error's message. */
export async function api(url, options = {}) {
  const init = { ...options };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(options.json);
    delete init.json;
  }
  const response = await fetch(url, init);
  if (!response.ok) throw new Error(await readError(response));
  return response.json();
}
