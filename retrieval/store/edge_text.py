"""Recognised text in the embedded store: its full-text index, OCR bookkeeping and hybrid queries.

``ocr_text`` has a full-text payload index (word tokenizer, lowercase, ASCII folding, BM25 scoring), so
word matches, BM25 ranking (``TextQuery``) and the fusion with CLIP (``Prefetch`` + ``Fusion.Rrf``) all
run inside qdrant-edge. ``ocr`` (keyword) records which OCR engine read a point (see ingest/ocr.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import qdrant_edge as qe

from retrieval.store.base import Hit, SearchFilter, fused_hits

TEXT_FIELD = "ocr_text"
STATE_FIELD = "ocr"
RRF_K = 60  # the usual reciprocal-rank constant: a rank r contributes 1 / (60 + r)


def text_index() -> qe.TextIndexParams:
    """The ``ocr_text`` index: words, lowercased, accents folded, English Snowball stems (the engine stems the
    stored text and every phrase searched alike, so "kitchen" finds "KITCHENS"), BM25 scoring."""
    return qe.TextIndexParams(tokenizer=qe.TokenizerType.Word, lowercase=True, ascii_folding=True,
                              min_token_len=1, max_token_len=40, scoring=True,
                              stemmer=qe.SnowballParams(qe.SnowballLanguage.English))


def _stemmed(info: Any) -> bool:
    params = getattr(info, "params", None)
    return getattr(params, "stemmer", None) is not None


def text_condition(words: str) -> qe.FieldCondition:
    """Points whose recognised text holds every word of ``words`` (case- and accent-insensitive)."""
    return qe.FieldCondition(key=TEXT_FIELD, match=qe.MatchText(words))


class EdgeTextMixin:
    """Methods of :class:`retrieval.store.edge.EdgeStore` for recognised text (uses its ``shard``)."""

    shard: qe.EdgeShard
    _shard: qe.EdgeShard | None
    hnsw_ef: int
    _text_seen: tuple[float, bool] | None = None
    TEXT_FRESH_S = 1.0
    """How long :meth:`has_text`'s answer is kept (this process's own writes forget it at once)."""

    def has_text(self) -> bool:
        """Whether any point holds recognised text (so searches fuse BM25 with CLIP). Asked of the shard at
        most once every :data:`TEXT_FRESH_S` seconds and after each write of this process: the exact count
        took about 1 ms of every warm search at 100k points (benchmarks/query.py)."""
        now = time.monotonic()
        seen = self._text_seen
        if seen is not None and now - seen[0] < self.TEXT_FRESH_S:
            return seen[1]
        if self._shard is None:
            return False
        with_text = qe.Filter(must_not=[qe.IsEmptyCondition(TEXT_FIELD)])
        value = self._shard.count(qe.CountRequest(exact=True, filter=with_text)) > 0
        self._text_seen = (now, value)
        return value

    def _wrote(self) -> None:
        """Forget what :meth:`has_text` knew: this process changed the points."""
        self._text_seen = None

    def _text_indexes(self, have: set[str]) -> bool:
        """Create the text and state indexes the shard lacks (and replace a text index made before stemming:
        the stored text is unchanged, the index is rebuilt from it once); True if it made one."""
        made = False
        if TEXT_FIELD in have and not _stemmed((self.shard.info().payload_schema or {}).get(TEXT_FIELD)):
            self.shard.update(qe.UpdateOperation.delete_field_index(TEXT_FIELD))
            have = have - {TEXT_FIELD}
        if TEXT_FIELD not in have:
            self.shard.update(qe.UpdateOperation.create_field_index(TEXT_FIELD, text_index()))
            made = True
        if STATE_FIELD not in have:
            self.shard.update(qe.UpdateOperation.create_field_index(STATE_FIELD, qe.PayloadSchemaType.Keyword))
            made = True
        return made

    def set_hash_payload(self, digest: str, payload: dict[str, Any]) -> None:
        """Set ``payload`` on every point whose content hash is ``digest`` (all copies of one file)."""
        self._wrote()
        self.shard.update(qe.UpdateOperation.set_payload_by_filter(
            qe.Filter(must=[qe.FieldCondition(key="hash", match=qe.MatchValue(digest))]), payload))

    def hash_points(self, digest: str, fields: Sequence[str], limit: int = 4096) -> list[tuple[str, dict[str, Any]]]:
        """(id, ``fields``) of the points whose content hash is ``digest`` (a video's moments), at most ``limit``."""
        if self._shard is None:
            return []
        records, _ = self._shard.scroll(qe.ScrollRequest(
            limit=limit, filter=qe.Filter(must=[qe.FieldCondition(key="hash", match=qe.MatchValue(digest))]),
            with_payload=list(fields), with_vector=False))
        return [(str(r.id), dict(r.payload or {})) for r in records]

    def ocr_pending(self, version: str) -> Iterator[tuple[str, str]]:
        """(hash, path) of every point not read by OCR ``version`` (one filtered scroll)."""
        if self._shard is None:
            return
        filt = qe.Filter(must_not=[qe.FieldCondition(key=STATE_FIELD, match=qe.MatchValue(version))])
        offset = None
        while True:
            records, offset = self._shard.scroll(qe.ScrollRequest(
                offset=offset, limit=2048, filter=filt, with_payload=["path", "hash"], with_vector=False))
            for r in records:
                payload = r.payload or {}
                if isinstance(payload.get("hash"), str) and isinstance(payload.get("path"), str):
                    yield payload["hash"], payload["path"]
            if offset is None:
                return

    def ocr_done(self, hashes: Sequence[str], version: str, fields: Sequence[str]) -> dict[str, dict[str, Any]]:
        """For each of ``hashes`` that some point read by ``version`` holds: that point's ``fields``."""
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(hashes), 256):
            filt = qe.Filter(must=[qe.FieldCondition(key="hash", match=qe.MatchAny(list(hashes[start:start + 256]))),
                                   qe.FieldCondition(key=STATE_FIELD, match=qe.MatchValue(version))])
            offset = None
            while True:
                records, offset = self.shard.scroll(qe.ScrollRequest(
                    offset=offset, limit=1024, filter=filt, with_payload=["hash", *fields], with_vector=False))
                for r in records:
                    payload = r.payload or {}
                    out.setdefault(payload["hash"], {k: payload.get(k) for k in fields})
                if offset is None:
                    break
        return out

    def ocr_counts(self, version: str) -> dict[str, int]:
        """Points with recognised text, points read by OCR ``version`` (with or without text)."""
        if self._shard is None:
            return {"text": 0, "done": 0}
        with_text = qe.Filter(must_not=[qe.IsEmptyCondition(TEXT_FIELD)])
        done = qe.Filter(must=[qe.FieldCondition(key=STATE_FIELD, match=qe.MatchValue(version))])
        return {"text": self._shard.count(qe.CountRequest(exact=True, filter=with_text)),
                "done": self._shard.count(qe.CountRequest(exact=True, filter=done))}

    def has_ocr(self) -> bool:
        """Whether any point was ever read by an OCR pass (of any version)."""
        if self._shard is None:
            return False
        filt = qe.Filter(must_not=[qe.IsEmptyCondition(STATE_FIELD)])
        return self._shard.count(qe.CountRequest(exact=False, filter=filt)) > 0

    def hybrid(self, vector: np.ndarray | None, words: str | None, limit: int, where: SearchFilter,
               min_score: float | None = None, depth: int = 100) -> list[Hit]:
        """CLIP nearest (``vector``) and BM25 over ``ocr_text`` (``words``), fused by RRF in the engine.

        Only ``words``: BM25 scores. Each list is ``depth`` (at least ``limit``) deep before fusion; the fused
        hits carry their CLIP cosine as ``score`` and the RRF score as ``rank_score``, and ``min_score`` bounds
        the cosine of every hit, BM25 matches included (:func:`retrieval.store.base.fused_hits`). ``where``
        (with ``where.text``) filters both.
        """
        filt = self._query_filter(where)  # type: ignore[attr-defined]
        params = qe.SearchParams(hnsw_ef=self.hnsw_ef)
        bm25 = qe.TextQuery(TEXT_FIELD, words) if words else None
        if vector is None:
            assert bm25 is not None, "a text query needs words"
            request = qe.QueryRequest(limit=limit, query=bm25, filter=filt, with_payload=True, with_vector=False)
            return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in self.shard.query(request)]
        nearest = qe.Query.Nearest(vector.astype(np.float32).tolist())
        deep = max(depth, limit)
        prefetches = [qe.Prefetch(limit=deep, query=nearest, filter=filt, params=params, score_threshold=min_score)]
        if bm25 is not None:
            prefetches.append(qe.Prefetch(limit=deep, query=bm25, filter=filt))
        request = qe.QueryRequest(limit=deep, query=qe.Fusion.Rrf(k=RRF_K), prefetches=prefetches,
                                  with_payload=True, with_vector=True)
        points = ((str(p.id), float(p.score), dict(p.payload or {}), _dense(p.vector) if p.vector is not None else None)
                  for p in self.shard.query(request))
        return fused_hits(points, vector, limit, min_score)

    def sample_vectors(self, n: int) -> np.ndarray:
        """Up to ``n`` stored vectors drawn at random (rows), for a query's score distribution."""
        if self._shard is None:
            return np.zeros((0, 0), np.float32)
        points = self._shard.query(qe.QueryRequest(limit=n, query=qe.Sample.Random, with_vector=True,
                                                   with_payload=False))
        rows = [_dense(p.vector) for p in points]
        return np.asarray(rows, np.float32) if rows else np.zeros((0, 0), np.float32)


def edge_text_conditions(where: SearchFilter) -> list[Any]:
    return [text_condition(where.text)] if where.text else []


def _dense(vector: Any) -> Sequence[float]:
    if isinstance(vector, dict):
        return vector.get("", next(iter(vector.values())))
    return vector
