// EXTENSION POINTS of the page, for features built beside it. Import this module and register; nothing else
// in the page needs to change.
//
// 1. Card actions (e.g. concept feedback, ✓/✗ on each card while a concept is active):
//      import { cardActions, context } from "./extensions.js";
//      cardActions.push({
//        id: "concept-yes", label: "✓", title: (row) => `yes, ${context.concept} is in this photo`,
//        when: (row, ctx) => Boolean(ctx.concept),          // shown only while a concept is active
//        run: async (row, ctx, button) => { ... },          // the click
//        pressed: (row, ctx) => false,                      // optional: a toggle's state (aria-pressed)
//      });
//    Every card (search results, library) renders one <button class="card-action"> per action whose ``when``
//    holds, inside its `.card-actions` box, which floats over the thumbnail's top-right corner (cards keep
//    one height: the library's layout depends on it). Call ``refreshCards()`` after changing ``context``.
// 2. The concept panel: <section id="concepts"> in index.html, the Concepts view (concepts.js fills it).
// 3. Video moments need nothing here: a hit row with media == "video" and start_s shows its time on the card,
//    and the viewer plays /api/media?path=...#t=start_s in a <video> (util.js mediaUrl, viewer.js).

export const cardActions = [];

/** What card actions may look at: ``view`` ("search" | "library"), ``concept`` (the active one, or null). */
export const context = { view: "library", concept: null };

const listeners = new Set();
export function onRefresh(callback) { listeners.add(callback); }
/** Re-render the visible cards (e.g. after ``context.concept`` changed). */
export function refreshCards() { for (const callback of listeners) callback(); }
