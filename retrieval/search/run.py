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
        raise ClipdexError(f"collection '{ctx.settings.store.collection}' is empty or missing at "
                           f"{ctx.store.location} (run `clipdex ingest DIR` first)")
    if req.has_concept:
        from retrieval.search import concept

        return moments.fetch_collapsed(lambda k: concept.search(ctx, req, _where(req), k), _limit(ctx, req),
                                       req.moments)
    if not req.has_query and not req.like and req.text_in_image is None:
        raise ClipdexError("a search needs a text, an example image or a like example (or text in image)"
                           + (" (unlike only pushes results away from examples)" if req.unlike else ""))
    limit = _limit(ctx, req)
    where = _where(req)
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


def _where(req: SearchRequest) -> SearchFilter:
    return SearchFilter(folder=folder_key(req.folder) if req.folder else None, after=req.after,
                        before=req.before, camera=req.camera, media=req.media)


def hit_row(hit: Hit) -> dict[str, Any]:
    """One search result as ``clipdex search --json`` and ``GET /api/search`` return it: the payload, with
    ``media`` ("image" or "video"; a moment also has ``time_s``, ``start_s`` and ``end_s``)."""
    row = {"path": hit.payload.get("path", ""), "score": round(hit.score, 6), "media": "image",
           **{k: v for k, v in hit.payload.items()
              if k not in ("path", "ancestors", "ocr", "concepts_at", "video_points")}}
    row["concepts"] = list(hit.payload.get("concepts") or [])
    if "ocr" in hit.payload:  # read by the OCR pass: its text, "" when it found none
        row["ocr_text"] = hit.payload.get("ocr_text") or ""
    return row


def folder_key(folder: str) -> str:
    """The path key of a ``folder`` filter (absolute, no trailing separator)."""
    return path_key(os.path.abspath(os.path.expanduser(folder))).rstrip("/") or "/"
