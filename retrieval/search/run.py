"""How one search runs: a validated request, its filter, then the right query against the store.

* like/unlike examples: the stored vectors (nothing decoded or encoded for them) averaged the way Qdrant's
  ``average_vector`` recommendation does, a text or image query counting as one more positive example;
* everything else: :func:`retrieval.search.hybrid.search` (CLIP, fused with the recognised text where the
  collection has some, cut by the adaptive threshold where asked).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest.records import path_key
from retrieval import hints
from retrieval.errors import ClipdexError
from retrieval.search import hybrid, moments
from retrieval.search.refs import point_ref, stored_vectors
from retrieval.search.request import SearchParams, SearchRequest, SearchRequestError
from retrieval.search.vector import query_vector
from retrieval.store import Hit, SearchFilter
from retrieval.vectors import recommend_vector
from retrieval.words import split_joined

if TYPE_CHECKING:
    from retrieval.search.context import SearchContext


def search(ctx: SearchContext, request: SearchParams | str | None = None, /, **fields: Any) -> list[Hit]:
    """Ranked hits, best first, for a request or its fields (see :meth:`retrieval.index.Index.search`)."""
    req = SearchRequest.of(request, **fields)
    if ctx.store.meta() is None:
        settings = ctx.settings
        raise ClipdexError(hints.missing_collection(settings.store.collection, ctx.store.location,
                                                    None if settings.store.url else settings.store_path))
    if req.has_concept:
        from retrieval.search import concept

        return moments.fetch_collapsed(lambda k: concept.search(ctx, req, _where(ctx, req), k), _limit(ctx, req),
                                       req.moments)
    if not req.has_query and not req.like and req.text_in_image is None:
        raise ClipdexError("a search needs a text, an example image or a like example (or text in image)"
                           + (" (unlike only pushes results away from examples)" if req.unlike else ""))
    limit = _limit(ctx, req)
    where = _where(ctx, req)
    if not req.like and not req.unlike:  # CLIP, and the recognised text where there is some
        return moments.fetch_collapsed(lambda k: hybrid.search(ctx, req, where, k), limit, req.moments)
    if req.text_in_image is not None:
        hybrid.check_phrase(ctx, req.text_in_image)
        where = dataclasses.replace(where, text=split_joined(req.text_in_image))
    liked = {point_ref(ref)[0] for ref in req.like}
    both = [ref for ref in req.unlike if point_ref(ref)[0] in liked]
    if both:
        raise SearchRequestError("unlike", f"{both[0]} is both a like and an unlike example")
    positives, negatives = stored_vectors(ctx, req.like), stored_vectors(ctx, req.unlike)
    if req.has_query:
        positives = np.vstack([query_vector(ctx, req)[None], positives])
    elif req.negative:  # no text or image to steer: negative prompts count as unlike examples
        negatives = np.vstack([negatives, ctx.encoder.encode_texts(list(req.negative))])
    recommend_vector(positives, negatives)  # the same check the engine would make: they must not cancel out
    return moments.fetch_collapsed(lambda k: ctx.store.recommend(positives, negatives, k, where, req.min_score),
                                   limit, req.moments)


def _limit(ctx: SearchContext, req: SearchRequest) -> int:
    return ctx.settings.search.limit if req.limit is None else req.limit


def _where(ctx: SearchContext, req: SearchRequest) -> SearchFilter:
    return SearchFilter(folder=folder_key(req.folder) if req.folder else None, after=req.after,
                        before=req.before, camera=camera_name(ctx, req.camera) if req.camera else None,
                        media=req.media)


MAX_CAMERAS = 1000
"""Camera names read (per field) to match ``camera`` without regard to case, and to name them when none does."""


def camera_name(ctx: SearchContext, camera: str) -> str:
    """The camera make or model stored in the collection that ``camera`` names, case aside ("iphone 14" finds
    "iPhone 14"); none: a :class:`ClipdexError` listing the cameras the collection holds."""
    store = ctx.store
    names: dict[str, int] = {}
    for field in ("camera_model", "camera_make"):
        for name, count in store.facet_counts(field, MAX_CAMERAS).items():
            names[name] = names.get(name, 0) + count
    if camera in names or not names:
        return camera
    wanted = camera.strip().casefold()
    same = sorted((n for n in names if n.casefold() == wanted), key=lambda n: -names[n])
    if same:
        return same[0]
    close = [n for n in names if wanted in n.casefold()] or sorted(names, key=lambda n: -names[n])
    listed = ", ".join(f"'{n}'" for n in close[:8]) + (" …" if len(close) > 8 else "")
    raise SearchRequestError("camera", f"no photo in the collection was taken with a camera called '{camera}' "
                                       f"(make or model); its cameras include {listed}")


def hit_row(hit: Hit) -> dict[str, Any]:
    """One search result as ``clipdex search --json`` and ``GET /api/search`` return it: the payload, with
    ``media`` ("image" or "video"; a moment also has ``time_s``, ``start_s`` and ``end_s``); ``score`` is the
    CLIP cosine (what ``min_score`` bounds; BM25 for a search by text in image alone), ``rank_score`` a hybrid
    hit's fused reciprocal-rank score (the order of hybrid results; absent elsewhere)."""
    row = {"path": hit.payload.get("path", ""), "score": round(hit.score, 6), "media": "image",
           **({"rank_score": round(hit.rank_score, 6)} if hit.rank_score is not None else {}),
           **{k: v for k, v in hit.payload.items()
              if k not in ("path", "ancestors", "ocr", "concepts_at", "video_points", "score", "rank_score")}}
    row["concepts"] = list(hit.payload.get("concepts") or [])
    if "ocr" in hit.payload:  # read by the OCR pass: its text, "" when it found none
        row["ocr_text"] = hit.payload.get("ocr_text") or ""
    return row


def folder_key(folder: str) -> str:
    """The path key of a ``folder`` filter (absolute, no trailing separator)."""
    return path_key(os.path.abspath(os.path.expanduser(folder))).rstrip("/") or "/"
