"""Teach, refit, forget and read concepts of one open collection (:class:`retrieval.index.Index`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.concepts import learner, tagging
from retrieval.concepts.book import (
    MAX_CONCEPTS,
    MAX_EXAMPLES,
    Concept,
    ConceptBook,
    ConceptError,
    Example,
    check_model,
    check_name,
    content_key,
    model_id,
)
from retrieval.errors import ClipdexError

if TYPE_CHECKING:
    from retrieval.search.context import SearchContext

LIBRARY_SAMPLE = 2048


def book(ctx: SearchContext) -> ConceptBook:
    """The concepts of the collection ``ctx`` has open (embedded store only)."""
    folder = getattr(ctx.store, "folder", None)
    if folder is None:
        raise ConceptError(f"concepts need the embedded store; {ctx.store.location} is a Qdrant server, where "
                           "clipdex cannot keep concepts yet (see docs/concepts.md)")
    return ConceptBook(folder)


def _meta(ctx: SearchContext) -> Any:
    meta = ctx.store.meta()
    if meta is None:
        raise ConceptError(f"collection '{ctx.settings.store.collection}' is empty or missing at "
                           f"{ctx.store.location} (run `clipdex ingest DIR` first)")
    return meta


def resolve(ctx: SearchContext, refs: Sequence[str], *, indexed_only: bool = False) -> list[Example]:
    """Examples for paths or point ids: an indexed file gives its stored vector; any other image file is
    encoded once (and its content hash kept, so the file counts as the example once it is indexed).
    ``indexed_only``: refuse files that are not indexed (the HTTP API never reads a path a client names)."""
    from retrieval.search.refs import moment_ref, point_ref

    wanted = [moment_ref(ctx, os.fspath(r)) or point_ref(os.fspath(r)) for r in refs]  # path#t=S: that moment
    found = ctx.store.points([pid for pid, _ in wanted])
    out: list[Example] = []
    to_encode: list[tuple[int, str]] = []
    for i, (ref, (pid, key)) in enumerate(zip(refs, wanted, strict=True)):
        hit = found.get(pid)
        if hit is not None and (key is None or hit[1].get("path") == key):
            vector, payload = hit
            if not np.isfinite(vector).all() or abs(float(np.linalg.norm(vector)) - 1) > 1e-2:
                raise ClipdexError(f"the stored vector of {ref} is damaged; ingest that file again")
            out.append(Example(vector.astype(np.float32), pid, str(payload.get("path", "")), content_key(payload)))
        elif key is None or indexed_only:
            raise ConceptError(f"not in the collection: {ref}", 404)
        else:
            out.append(Example(np.zeros(0, np.float32), "", key, ""))
            to_encode.append((i, os.fspath(ref)))
    if to_encode:
        from ingest.decode import DecodeError, content_hash
        from retrieval.search.vector import check_query_image, query_image

        for _, path in to_encode:  # every file checked before the model loads
            check_query_image(path)
        images = []
        for i, path in to_encode:
            try:
                out[i].hash = content_hash(path)
            except DecodeError as exc:
                raise ClipdexError(f"cannot read example {path}: {exc}") from None
            images.append(query_image(ctx, path))
        vectors = ctx.encoder.encode_pil(images)
        for (i, _), vector in zip(to_encode, vectors, strict=True):
            out[i].vector = np.asarray(vector, np.float32)
    return out


def name_vector(ctx: SearchContext, name: str) -> np.ndarray:
    """The mean text vector of the name's prompts (the prior a known word gives)."""
    vectors = ctx.encoder.encode_texts(learner.name_prompts(name))
    mean = vectors.mean(0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def library(ctx: SearchContext) -> np.ndarray:
    """A random sample of the collection's stored vectors: the negatives every concept is fitted against."""
    sample = getattr(ctx.store, "sample_vectors", None)
    meta = _meta(ctx)
    rows = sample(LIBRARY_SAMPLE) if sample else np.zeros((0, meta.dim), np.float32)
    return rows.reshape(-1, meta.dim).astype(np.float32)


HEADS_KEPT = 8
_heads: dict[tuple[Any, ...], tuple[learner.Head, float]] = {}


def _head_key(ctx: SearchContext, concept: Concept) -> tuple[Any, ...]:
    """What a fitted head depends on: the store (and its size: the library sample) and the concept's examples."""
    return (id(ctx.store), ctx.store.count(), concept.name, concept.model,
            tuple(e.key for e in concept.examples), tuple(e.key for e in concept.non_examples))


def remember_head(ctx: SearchContext, concept: Concept, head: learner.Head, cut: float) -> None:
    """Keep a head just fitted (a review's refit) for the searches that follow."""
    if len(_heads) >= HEADS_KEPT:
        _heads.pop(next(iter(_heads)))
    _heads[_head_key(ctx, concept)] = (head, cut)


def head_of(ctx: SearchContext, concept: Concept, lib: np.ndarray | None = None,
            text: np.ndarray | None = None) -> tuple[learner.Head, float]:
    """The concept fitted on its examples, and its membership threshold.

    Without ``lib`` and ``text`` the fit is kept (a few concepts, per store and size, examples and non-examples):
    each search with a concept would otherwise sample the library and refit (about 100 ms on 100k points).
    """
    cached = lib is None and text is None
    if cached and (held := _heads.get(_head_key(ctx, concept))) is not None:
        return held
    lib = library(ctx) if lib is None else lib
    pos = np.stack([e.vector for e in concept.examples])
    neg = (np.stack([e.vector for e in concept.non_examples]) if concept.non_examples
           else np.zeros((0, concept.dim), np.float32))
    head = learner.fit(pos, neg, lib, name_vector(ctx, concept.name) if text is None else text)
    fitted = head, learner.threshold(head, lib)
    if cached:
        remember_head(ctx, concept, *fitted)
    return fitted


def judge(ctx: SearchContext, concept: Concept) -> tagging.Judge:
    head, cut = head_of(ctx, concept)
    return head, cut, {e.key for e in concept.examples}, {e.key for e in concept.non_examples}


@dataclass
class TeachResult:
    """What teaching changed: the concept, its members now, and the tagging counts."""

    concept: Concept
    tagged: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {**self.concept.summary(), "tagged": self.tagged}


def _merge(current: list[Example], new: list[Example]) -> list[Example]:
    keys = {e.key for e in current}
    return current + [e for e in new if e.key not in keys and not keys.add(e.key)]  # type: ignore[func-returns-value]


def teach(ctx: SearchContext, name: str, examples: Sequence[str] = (), non_examples: Sequence[str] = (), *,
          resolved: tuple[list[Example], list[Example]] | None = None, indexed_only: bool = False) -> TeachResult:
    """Create concept ``name`` from example paths (indexed files or any image files), or add to its examples and
    non-examples; fit it, save it, and tag the collection (only changed points are written)."""
    check_name(name)
    meta = _meta(ctx)
    if len(examples) + len(non_examples) > MAX_EXAMPLES:
        raise ConceptError(f"{len(examples) + len(non_examples)} examples given; a concept holds at most "
                           f"{MAX_EXAMPLES} examples and non-examples")
    shelf = book(ctx)
    concept = shelf.concepts.get(name)
    if concept is not None:
        check_model(concept, meta)
    elif not examples and resolved is None:
        raise ConceptError(f"concept {name!r} is new: it needs at least one --example")
    elif len(shelf.concepts) >= MAX_CONCEPTS:
        raise ConceptError(f"this collection already has {MAX_CONCEPTS} concepts; forget one first")
    pos, neg = resolved if resolved is not None else (resolve(ctx, examples, indexed_only=indexed_only),
                                                      resolve(ctx, non_examples, indexed_only=indexed_only))
    both = {e.key for e in pos} & {e.key for e in neg}
    if both:
        raise ConceptError(f"{sorted(both)[0]} is given both as an example and as a non-example")
    concept = concept or Concept(name, model_id(meta), meta.dim)
    neg_keys, pos_keys = {e.key for e in neg}, {e.key for e in pos}
    concept.examples = _merge([e for e in concept.examples if e.key not in neg_keys], pos)
    concept.non_examples = _merge([e for e in concept.non_examples if e.key not in pos_keys], neg)
    if len(concept.examples) + len(concept.non_examples) > MAX_EXAMPLES:
        raise ConceptError(f"concept {name!r} would hold {len(concept.examples) + len(concept.non_examples)} "
                           f"examples and non-examples, over {MAX_EXAMPLES}")
    if not concept.examples:
        raise ConceptError(f"concept {name!r} would have no example left")
    return refit(ctx, concept, shelf)


def refit(ctx: SearchContext, concept: Concept, shelf: ConceptBook | None = None) -> TeachResult:
    """Fit ``concept`` again, save it and re-tag the collection for it (writing only what changed)."""
    shelf = shelf or book(ctx)
    head, cut = head_of(ctx, concept)
    concept.threshold, concept.knows_word, concept.updated = cut, head.knows, time.time()
    judges = {concept.name: (head, cut, {e.key for e in concept.examples}, {e.key for e in concept.non_examples})}
    report = tagging.tag_vectors_store(ctx.store, judges)
    concept.members = int(report["members"][concept.name])
    shelf.concepts[concept.name] = concept
    shelf.save()
    ctx.store.flush()
    return TeachResult(concept, report)


def forget(ctx: SearchContext, name: str) -> dict[str, Any]:
    """Delete concept ``name`` and take it off every point's payload."""
    shelf = book(ctx)
    shelf.get(name)
    untagged = tagging.untag(ctx.store, name)
    del shelf.concepts[name]
    shelf.save()
    if not shelf.concepts:  # the last one: no trace of concepts left in any payload
        ctx.store.drop_fields((tagging.FIELD, tagging.MARK))  # type: ignore[attr-defined]
    ctx.store.flush()
    return {"name": name, "untagged": untagged}


def rename(ctx: SearchContext, name: str, new: str) -> Concept:
    """Give concept ``name`` the name ``new`` (its members' payloads follow)."""
    check_name(new)
    shelf = book(ctx)
    concept = shelf.get(name)
    if new in shelf.concepts:
        raise ConceptError(f"a concept named {new!r} exists already")
    tagging.untag(ctx.store, name)
    concept.name = new
    del shelf.concepts[name]
    return refit(ctx, concept, shelf).concept


def _live(ctx: SearchContext, found: list[Concept]) -> list[Concept]:
    """``found`` with their member counts read from the payload tags now (ingest adds members by itself)."""
    if found:
        counts = ctx.store.facet_counts(tagging.FIELD, MAX_CONCEPTS + 10)
        for concept in found:
            concept.members = int(counts.get(concept.name, 0))
    return found


def concepts(ctx: SearchContext) -> list[Concept]:
    """Every concept of the collection, by name, with its members now."""
    return _live(ctx, [shelf_concept for _, shelf_concept in sorted(book(ctx).concepts.items())])


def show(ctx: SearchContext, name: str) -> Concept:
    """One concept, with its members now."""
    return _live(ctx, [book(ctx).get(name)])[0]


def member_paths(ctx: SearchContext, name: str) -> list[str]:
    """The paths of the concept's members (from the payload tags), sorted."""
    book(ctx).usable(name, ctx.store.meta())
    paths = [str(p.get("path", "")) for _, _, pays in ctx.store.scroll_vectors(  # type: ignore[attr-defined]
        ("path",), having=(tagging.FIELD, name), vectors=False) for p in pays]
    return sorted(p for p in paths if p)


def tag_new(ctx: SearchContext) -> dict[str, Any] | None:
    """Score the points no concept has looked at yet (new and moved files) against every concept (ingest's last
    step). None when the collection has no concepts."""
    folder = getattr(ctx.store, "folder", None)
    if folder is None:
        return None
    try:
        shelf = ConceptBook(folder)
    except ConceptError as exc:  # a damaged concepts.json never fails the ingest that stored the photos
        import logging

        logging.getLogger("clipdex.concepts").warning("new photos not tagged: %s", exc)
        return {"error": str(exc)}
    if not shelf.concepts:
        return None
    meta = _meta(ctx)
    usable = {n: c for n, c in shelf.concepts.items() if c.model == model_id(meta) and c.dim == meta.dim}
    if not usable:
        return None
    lib = library(ctx)
    judges = {}
    for name, concept in usable.items():
        head, cut = head_of(ctx, concept, lib)
        judges[name] = (head, cut, {e.key for e in concept.examples}, {e.key for e in concept.non_examples})
    report = tagging.tag_vectors_store(ctx.store, judges, only_new=True)
    ctx.store.flush()
    return report
