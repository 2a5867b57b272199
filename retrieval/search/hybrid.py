"""Search with the recognised text: ``text_in_image`` filters, plain text queries fuse CLIP with BM25.

* ``text_in_image``: only images whose ``ocr_text`` holds every word of the phrase (word-level, case- and
  accent-insensitive: the index lowercases and ASCII-folds); alone it is ranked by BM25, with a text or
  image query by RRF of CLIP and BM25. It combines with every filter (all inside the engine).
* A plain text query on a collection with OCR text is hybrid: CLIP nearest and BM25 over ``ocr_text``
  (the query's words without English stop words) fused by reciprocal rank in the engine
  (``Prefetch`` + ``Fusion.Rrf``). Hybrid hits are ordered by the fused RRF score (``rank_score``); their
  ``score`` is still the CLIP cosine, and ``min_score`` bounds it for every hit, BM25 matches included, so a
  shown score and the bound always mean the same thing. ``ocr=False`` (``--no-ocr``) or
  ``[search] hybrid = false`` gives pure CLIP, ordered by cosine.
* ``relevant``: the CLIP list keeps only hits above the query's adaptive cutoff (retrieval.search.cutoff).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from retrieval import hints
from retrieval.errors import ClipdexError
from retrieval.search import cutoff
from retrieval.search.request import SearchRequest, SearchRequestError
from retrieval.search.vector import query_vector
from retrieval.store import Hit, SearchFilter
from retrieval.words import split_joined, words

if TYPE_CHECKING:
    from retrieval.search.context import SearchContext

STOPWORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "in", "into", "is", "it",
    "its", "of", "on", "or", "that", "the", "their", "then", "there", "these", "this", "to", "was", "were", "will",
    "with", "photo", "image", "picture"])
"""Words a CLIP prompt is full of that would match any sign; they never drive the BM25 half of a hybrid query."""


def bm25_words(text: str) -> str:
    """The words of a CLIP query worth matching in recognised text ("" when none are)."""
    return " ".join(w for w in words(split_joined(text)) if len(w) > 1 and w.lower() not in STOPWORDS)


def ocr_ready(ctx: SearchContext) -> bool:
    """Whether the collection holds recognised text the store can search (the embedded store)."""
    store = ctx.store
    return hasattr(store, "hybrid") and store.has_text()  # type: ignore[attr-defined]


def check_phrase(ctx: SearchContext, phrase: str) -> None:
    """Refuse a ``text_in_image`` phrase that cannot match anything, with the reason."""
    if not words(phrase):
        raise SearchRequestError("text_in_image", "needs at least one word (letters or digits)")
    store = ctx.store
    name = ctx.settings.store.collection
    if not hasattr(store, "hybrid"):
        raise ClipdexError(f"text in image needs the embedded store: {store.location} has no BM25 text index "
                           "support in clipdex (see docs/ocr.md)")
    if not store.has_ocr():  # type: ignore[attr-defined]
        raise ClipdexError(f"collection '{name}' has no OCR text: it was built without OCR; run "
                           f"{hints.command('ingest DIR --ocr')} (or set [ocr] enabled = true) to read the text in "
                           "its images")
    if not ocr_ready(ctx):
        raise ClipdexError(f"collection '{name}' has no recognised text: OCR found no words in any of its images")


def search(ctx: SearchContext, req: SearchRequest, where: SearchFilter, limit: int) -> list[Hit]:
    """Hits for a request without like/unlike examples (see the module docstring)."""
    store = ctx.store
    phrase = split_joined(req.text_in_image) if req.text_in_image is not None else None
    if phrase is not None:
        check_phrase(ctx, phrase)
        where = dataclasses.replace(where, text=phrase)
    if not req.has_query and phrase is None:
        raise ClipdexError("a search needs a text, an example image, text in image, or a like example")
    vector = query_vector(ctx, req) if req.has_query else None
    min_score = req.min_score
    if vector is not None and _relevant(ctx, req):
        cut = cutoff.threshold(vector, _sample(ctx))
        if cut is not None:
            min_score = cut if min_score is None else max(min_score, cut)
    hybrid = req.ocr and ctx.settings.search.hybrid and req.text is not None and ocr_ready(ctx)
    terms = " ".join(filter(None, [bm25_words(req.text or "") if hybrid else "", phrase or ""]))
    if vector is None:
        return store.hybrid(None, phrase, limit, where)  # type: ignore[attr-defined]
    if not terms:
        return store.query(vector, limit, where, min_score)
    return store.hybrid(vector, terms, limit, where, min_score)  # type: ignore[attr-defined]


def _relevant(ctx: SearchContext, req: SearchRequest) -> bool:
    return req.relevant if req.relevant is not None else ctx.settings.search.cutoff == "auto"


_samples: dict[tuple[int, int], np.ndarray] = {}


def _sample(ctx: SearchContext) -> np.ndarray:
    """A random sample of the collection's vectors, drawn once per open store and collection size."""
    store = ctx.store
    key = (id(store), store.count())
    if key not in _samples:
        if not hasattr(store, "sample_vectors"):
            return np.zeros((0, 0), np.float32)
        _samples.clear()
        _samples[key] = store.sample_vectors(cutoff.SAMPLE)  # type: ignore[attr-defined]
    return _samples[key]
