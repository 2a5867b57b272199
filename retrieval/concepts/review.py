"""Review: active learning on a concept. The candidates shown are those the concept is least sure of, nearest its
threshold (:data:`retrieval.concepts.learner.CONFIRM_BEST` of the best first: 0, as measured); each answer refits
the concept at once (milliseconds: the vectors are held in memory for the session, their whitened norms kept) and
the next candidates follow from the refit.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.concepts import learner, tagging
from retrieval.concepts.book import MAX_EXAMPLES, ConceptError, Example, content_key
from retrieval.concepts.teach import TeachResult, book, head_of, library, name_vector, remember_head

if TYPE_CHECKING:
    from retrieval.search.context import SearchContext

MAX_SESSION_POINTS = 2_000_000


@dataclass(frozen=True)
class Candidate:
    """A photo to answer about."""

    id: str
    path: str
    score: float
    member: bool

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "score": round(self.score, 6), "member": self.member}


class ReviewSession:
    """One concept under review: every stored vector in memory, refit after each answer."""

    def __init__(self, ctx: SearchContext, name: str):
        self.ctx = ctx
        self.shelf = book(ctx)
        self.concept = self.shelf.usable(name, ctx.store.meta())
        ids, rows, self.payloads = [], [], []
        for page_ids, vectors, payloads in ctx.store.scroll_vectors(tagging.FIELDS):  # type: ignore[attr-defined]
            ids += page_ids
            rows.append(vectors)
            self.payloads += payloads
            if len(ids) > MAX_SESSION_POINTS:
                raise ConceptError(f"review holds at most {MAX_SESSION_POINTS:,} points in memory")
        self.ids = ids
        self.vectors = np.vstack(rows) if rows else np.zeros((0, self.concept.dim), np.float32)
        self.keys = [content_key(p) for p in self.payloads]
        self.rows_of: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(self.keys):
            self.rows_of[key].append(i)
        # what the payloads say now: each answer then writes only the points whose membership changed
        self.tagged = np.array([self.concept.name in (p.get(tagging.FIELD) or []) for p in self.payloads], bool)
        self.unmarked = bool(any(tagging.MARK not in p for p in self.payloads))
        self.library = library(ctx)
        self.text = name_vector(ctx, self.concept.name)
        self.answered = 0
        self.skipped: set[int] = set()
        self._fit()

    def _fit(self) -> None:
        self.head, self.cut = head_of(self.ctx, self.concept, self.library, self.text)
        self.scores = self.head.score(self.vectors)

    def _labelled(self) -> np.ndarray:
        known = {e.key for e in self.concept.examples} | {e.key for e in self.concept.non_examples}
        return np.array(sorted({i for i, k in enumerate(self.keys) if k in known} | self.skipped), np.int64)

    def candidates(self, n: int = 10) -> list[Candidate]:
        """The ``n`` photos whose answers teach the concept most now."""
        rows = learner.uncertain(self.scores, self.cut, self._labelled(), n)
        return [Candidate(self.ids[i], str(self.payloads[i].get("path", "")), float(self.scores[i]),
                          bool(self.scores[i] >= self.cut)) for i in rows]

    def _row(self, ref: str) -> int:
        from retrieval.search.refs import moment_ref, point_ref

        pid, key = moment_ref(self.ctx, ref) or point_ref(ref)
        try:
            i = self.ids.index(pid)
        except ValueError:
            raise ConceptError(f"not in the collection: {ref}", 404) from None
        if key is not None and self.payloads[i].get("path") != key:
            raise ConceptError(f"not in the collection: {ref}", 404)
        return i

    def skip(self, ref: str) -> None:
        """Not asked about ``ref`` again in this session."""
        self.skipped.add(self._row(ref))

    def answer(self, ref: str, yes: bool) -> None:
        """``ref`` (a point id or indexed path) is a member (``yes``) or not; refit at once."""
        i = self._row(ref)
        pid = self.ids[i]
        example = Example(self.vectors[i].copy(), pid, str(self.payloads[i].get("path", "")), self.keys[i])
        mine, other = ((self.concept.examples, self.concept.non_examples) if yes
                       else (self.concept.non_examples, self.concept.examples))
        other[:] = [e for e in other if e.key != example.key]
        if not any(e.key == example.key for e in mine):
            mine.append(example)
        if len(self.concept.examples) + len(self.concept.non_examples) > MAX_EXAMPLES:
            raise ConceptError(f"concept {self.concept.name!r} holds {MAX_EXAMPLES} examples and non-examples "
                               "already")
        if not self.concept.examples:
            raise ConceptError(f"concept {self.concept.name!r} would have no example left")
        self.answered += 1
        self._fit()

    def _inside(self) -> np.ndarray:
        """Membership by the current fit: the score against the threshold, examples in, non-examples out."""
        inside = self.scores >= self.cut
        for e in self.concept.examples:
            inside[self.rows_of.get(e.key, [])] = True
        for e in self.concept.non_examples:
            inside[self.rows_of.get(e.key, [])] = False
        return inside

    def finish(self) -> TeachResult:
        """Save the concept and re-tag the collection from the vectors in memory (only changed points are
        written; milliseconds plus the writes)."""
        import time

        name = self.concept.name
        if self.unmarked:  # points never tagged (just ingested): the whole pass, once
            judge = (self.head, self.cut, {e.key for e in self.concept.examples},
                     {e.key for e in self.concept.non_examples})
            report = tagging.tag_rows(self.ctx.store, {name: judge}, self.ids, self.vectors, self.payloads)
            inside = self._inside()
            self.unmarked = False
        else:  # the scores of the refit are in hand: compare with what is written, write the difference
            inside = self._inside()
            written = tagging.retag(self.ctx.store, name, inside, self.tagged, self.ids, self.payloads)
            report = {"scanned": len(self.ids), "written": written, "members": {name: int(inside.sum())}}
        self.tagged = inside
        self.concept.threshold, self.concept.knows_word = self.cut, self.head.knows
        self.concept.members, self.concept.updated = int(report["members"][name]), time.time()
        self.shelf.concepts[name] = self.concept
        self.shelf.save()
        self.ctx.store.flush()
        remember_head(self.ctx, self.concept, self.head, self.cut)  # the search that follows needs no refit
        return TeachResult(self.concept, report)
