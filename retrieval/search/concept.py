"""Searches with a concept (``--concept``, ``--not-concept``, ``--in-concept``; see retrieval.concepts).

* ``concept`` alone ranks by the concept's own score: candidates by its head's direction from the vector index
  (:data:`OVERSAMPLE` times the limit), re-ranked by the full score (the examples' cache included);
* with a text, an image or like examples, the concept's direction is one more positive (summed with the query
  vector, or a positive example row for like/unlike), and the result is one nearest search (no OCR fusion);
* ``not_concept`` subtracts that concept's direction (``negative_weight``);
* ``in_concept`` keeps members only (the payload ``concepts``, exact); ``relevant`` with ``concept``: the
  concept's members only, instead of the adaptive cutoff.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from retrieval.errors import ClipdexError
from retrieval.search.request import SearchRequest
from retrieval.store import Hit, SearchFilter
from retrieval.vectors import unit

if TYPE_CHECKING:
    from retrieval.search.context import SearchContext

OVERSAMPLE = 4


def search(ctx: SearchContext, req: SearchRequest, where: SearchFilter, limit: int) -> list[Hit]:
    """Hits for a request that names a concept (see the module docstring)."""
    from retrieval.concepts.teach import book, head_of
    from retrieval.search.refs import stored_vectors
    from retrieval.search.vector import query_vector
    from retrieval.words import split_joined

    shelf = book(ctx)
    meta = ctx.store.meta()
    heads = {}
    for name in filter(None, (req.concept, req.not_concept, req.in_concept)):
        concept = shelf.usable(name, meta)
        if name in (req.concept, req.not_concept) and name not in heads:
            heads[name] = head_of(ctx, concept)[0]
    if req.concept and req.concept == req.not_concept:
        raise ClipdexError(f"{req.concept!r} is both --concept and --not-concept")
    members = tuple(filter(None, (req.in_concept, req.concept if req.relevant else None)))
    where = dataclasses.replace(where, concepts=tuple(dict.fromkeys(members)))
    if req.text_in_image is not None:
        from retrieval.search.hybrid import check_phrase

        check_phrase(ctx, req.text_in_image)
        where = dataclasses.replace(where, text=split_joined(req.text_in_image))
    away = heads[req.not_concept].direction if req.not_concept else None
    toward = heads[req.concept] if req.concept else None
    if req.like or req.unlike:
        positives = stored_vectors(ctx, req.like)
        negatives = stored_vectors(ctx, req.unlike)
        extra = [query_vector(ctx, req)] if req.has_query else []
        extra += [toward.direction] if toward is not None else []
        if extra:
            positives = np.vstack([np.stack(extra), positives])
        if away is not None:
            negatives = np.vstack([negatives, away[None]])
        if not len(positives):
            raise ClipdexError("a search needs a text, an example image, a like example or a --concept")
        return ctx.store.recommend(positives, negatives, limit, where, req.min_score)
    if req.has_query:
        vector = query_vector(ctx, req)
        if toward is not None:
            vector = unit(vector + toward.direction)
    elif toward is not None:
        vector = toward.direction
    elif req.in_concept:  # members only, ranked by the concept itself
        toward = head_of(ctx, shelf.get(req.in_concept))[0]
        vector = toward.direction
    else:
        raise ClipdexError("--not-concept only steers a search: give a text, an image, a like example or a "
                           "--concept too")
    if away is not None:
        vector = unit(vector - req.negative_weight * away)
    if req.has_query or toward is None:
        return ctx.store.query(vector, limit, where, req.min_score)
    hits = ctx.store.query(vector, min(limit * OVERSAMPLE, 10_000), where, req.min_score)
    return _rerank(ctx, hits, toward, away, req.negative_weight)[:limit]


def _rerank(ctx: SearchContext, hits: list[Hit], head: object, away: np.ndarray | None, weight: float) -> list[Hit]:
    """Hits ordered by the concept's full score (reported as their score)."""
    if not hits:
        return hits
    found = ctx.store.points([h.id for h in hits])
    kept = [h for h in hits if h.id in found]
    vectors = np.stack([found[h.id][0] for h in kept]).astype(np.float32)
    scores = head.score(vectors)  # type: ignore[attr-defined]
    if away is not None:
        scores = scores - weight * (vectors @ away)
    order = np.argsort(-scores, kind="stable")
    return [Hit(kept[i].id, float(scores[i]), kept[i].payload) for i in order]
