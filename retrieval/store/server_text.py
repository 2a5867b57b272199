"""Recognised text on a Qdrant server (qdrant-client): the same index, bookkeeping and hybrid queries as
:mod:`retrieval.store.edge_text`, in qdrant-client's models (``TextQuery`` with ``using`` = the payload
field, ``Prefetch`` + ``RrfQuery``). Needs a server whose text indexes support ``scoring`` (BM25). In
qdrant-client's local mode the index has no ASCII folding (the mode supports none): accents must match."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from retrieval.store.base import Hit, SearchFilter, fused_hits
from retrieval.store.edge_text import RRF_K, STATE_FIELD, TEXT_FIELD


def server_text_conditions(where: SearchFilter) -> list[Any]:
    return [models.FieldCondition(key=TEXT_FIELD, match=models.MatchText(text=where.text))] if where.text else []


class ServerTextMixin:
    """Methods of :class:`retrieval.store.server.ServerStore` for recognised text."""

    client: QdrantClient
    collection: str
    hnsw_ef: int
    _exists: bool

    def _text_indexes(self, have: set[str]) -> None:
        if TEXT_FIELD not in have:
            # qdrant-client's local mode (tests, benchmarks) ranks only the default tokenization: no folding
            local = self.location.endswith("(qdrant-client local mode)")  # type: ignore[attr-defined]
            folding = {} if local else {"ascii_folding": True, "min_token_len": 1, "max_token_len": 40,
                                        "stemmer": models.SnowballParams(type="snowball", language="english")}
            self.client.create_payload_index(self.collection, TEXT_FIELD, models.TextIndexParams(
                type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WORD, lowercase=True,
                scoring=True, **folding))
        if STATE_FIELD not in have:
            self.client.create_payload_index(self.collection, STATE_FIELD, models.PayloadSchemaType.KEYWORD)

    def set_hash_payload(self, digest: str, payload: dict[str, Any]) -> None:
        self.client.set_payload(self.collection, payload, wait=True, points=models.Filter(
            must=[models.FieldCondition(key="hash", match=models.MatchValue(value=digest))]))

    def _scroll(self, filt: models.Filter, fields: list[str]) -> Iterator[dict[str, Any]]:
        offset = None
        while self._exists:
            records, offset = self.client.scroll(self.collection, offset=offset, limit=1024, scroll_filter=filt,
                                                 with_payload=fields, with_vectors=False)
            for r in records:
                yield dict(r.payload or {})
            if offset is None:
                return

    def hash_points(self, digest: str, fields: Sequence[str], limit: int = 4096) -> list[tuple[str, dict[str, Any]]]:
        if not self._exists:
            return []
        records, _ = self.client.scroll(self.collection, limit=limit, with_payload=list(fields), with_vectors=False,
                                        scroll_filter=models.Filter(must=[models.FieldCondition(
                                            key="hash", match=models.MatchValue(value=digest))]))
        return [(str(r.id), dict(r.payload or {})) for r in records]

    def ocr_pending(self, version: str) -> Iterator[tuple[str, str]]:
        filt = models.Filter(must_not=[models.FieldCondition(key=STATE_FIELD, match=models.MatchValue(value=version))])
        for p in self._scroll(filt, ["path", "hash"]):
            if isinstance(p.get("hash"), str) and isinstance(p.get("path"), str):
                yield p["hash"], p["path"]

    def ocr_done(self, hashes: Sequence[str], version: str, fields: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(hashes), 256):
            filt = models.Filter(must=[
                models.FieldCondition(key="hash", match=models.MatchAny(any=list(hashes[start:start + 256]))),
                models.FieldCondition(key=STATE_FIELD, match=models.MatchValue(value=version))])
            for p in self._scroll(filt, ["hash", *fields]):
                out.setdefault(p["hash"], {k: p.get(k) for k in fields})
        return out

    def ocr_counts(self, version: str) -> dict[str, int]:
        if not self._exists:
            return {"text": 0, "done": 0}
        text = models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=TEXT_FIELD))])
        done = models.Filter(must=[models.FieldCondition(key=STATE_FIELD, match=models.MatchValue(value=version))])
        return {"text": self.client.count(self.collection, count_filter=text, exact=True).count,
                "done": self.client.count(self.collection, count_filter=done, exact=True).count}

    def has_ocr(self) -> bool:
        if not self._exists:
            return False
        filt = models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=STATE_FIELD))])
        return self.client.count(self.collection, count_filter=filt, exact=True).count > 0

    def hybrid(self, vector: np.ndarray | None, words: str | None, limit: int, where: SearchFilter,
               min_score: float | None = None, depth: int = 100) -> list[Hit]:
        filt = self._query_filter(where)  # type: ignore[attr-defined]
        bm25 = models.TextQuery(text=models.TextQueryInput(query=words)) if words else None
        if vector is None:
            response = self.client.query_points(self.collection, query=bm25, using=TEXT_FIELD, limit=limit,
                                                query_filter=filt, with_payload=True)
            return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]
        deep = max(depth, limit)
        prefetch = [models.Prefetch(query=vector.astype(np.float32).tolist(), limit=deep, filter=filt,
                                    score_threshold=min_score, params=models.SearchParams(hnsw_ef=self.hnsw_ef))]
        if bm25 is not None:
            prefetch.append(models.Prefetch(query=bm25, using=TEXT_FIELD, limit=deep, filter=filt))
        response = self.client.query_points(self.collection, prefetch=prefetch, limit=deep, with_payload=True,
                                            with_vectors=True, query=models.RrfQuery(rrf=models.Rrf(k=RRF_K)))
        points = ((str(p.id), float(p.score), dict(p.payload or {}), _dense(p.vector)) for p in response.points)
        return fused_hits(points, vector, limit, min_score)

    def sample_vectors(self, n: int) -> np.ndarray:
        if not self._exists:
            return np.zeros((0, 0), np.float32)
        response = self.client.query_points(self.collection, query=models.SampleQuery(sample=models.Sample.RANDOM),
                                            limit=n, with_vectors=True, with_payload=False)
        rows = [p.vector for p in response.points if p.vector is not None]
        return np.asarray(rows, np.float32) if rows else np.zeros((0, 0), np.float32)


def _dense(vector: Any) -> Any:
    """The unnamed dense vector of a point as the client returns it (a list, or a dict of named vectors)."""
    if isinstance(vector, dict):
        return vector.get("", next(iter(vector.values()), None))
    return vector
