"""A collection on a Qdrant server or cluster, through qdrant-client.

The same class also drives qdrant-client's local mode (``path=``), which the store
benchmark compares with qdrant-edge and the tests use to exercise this code without a server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from retrieval import hints
from retrieval.errors import ClipdexError, first_line
from retrieval.store import health
from retrieval.store.base import (
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
    LAYOUT,
    LEGACY_KEYWORD_FIELDS,
    CollectionMeta,
    Hit,
    IndexConfig,
    SearchFilter,
    folder_prefix,
    layout_payloads,
)
from retrieval.store.server_text import ServerTextMixin, server_text_conditions


def _below(folder: str, layout: int) -> models.FieldCondition:
    """The condition "lies below ``folder``" in a collection of ``layout``."""
    if layout < 2:
        return models.FieldCondition(key="ancestors", match=models.MatchValue(value=folder))
    return models.FieldCondition(key="path", match=models.MatchPrefix(prefix=folder_prefix(folder)))


def _filter(where: SearchFilter, layout: int = LAYOUT) -> models.Filter | None:
    if where.empty:
        return None
    must: list[Any] = []
    if where.folder is not None:
        must.append(_below(where.folder, layout))
    if where.after is not None or where.before is not None:
        must.append(models.FieldCondition(key="taken_ts", range=models.Range(gte=where.after, lt=where.before)))
    if where.camera is not None:
        must.append(models.Filter(should=[
            models.FieldCondition(key="camera_make", match=models.MatchValue(value=where.camera)),
            models.FieldCondition(key="camera_model", match=models.MatchValue(value=where.camera)),
        ]))
    must += server_text_conditions(where)
    must += [models.FieldCondition(key="concepts", match=models.MatchValue(value=n)) for n in where.concepts]
    must_not = [models.FieldCondition(key="concepts", match=models.MatchValue(value=n)) for n in where.not_concepts]
    if where.path is not None:
        must.append(models.FieldCondition(key="path", match=models.MatchValue(value=where.path)))
    if where.media == "video":
        must.append(models.FieldCondition(key="media", match=models.MatchValue(value="video")))
    elif where.media is not None:  # images: points stored before ``media`` existed are images too
        must_not.append(models.FieldCondition(key="media", match=models.MatchValue(value="video")))
    return models.Filter(must=must or None, must_not=must_not or None)


def _quantization(config: IndexConfig) -> models.ScalarQuantization | None:
    if config.quantization == "none":
        return None
    return models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
        type=models.ScalarType.INT8, quantile=0.99, always_ram=True))


def _quantization_params(config: IndexConfig) -> models.QuantizationSearchParams | None:
    if config.quantization == "none":
        return None
    return models.QuantizationSearchParams(rescore=config.rescore, oversampling=config.oversampling)


def collection_params(meta: CollectionMeta, config: IndexConfig) -> dict[str, Any]:
    """What ``create_collection`` gets for a new collection (layout 2: float16 vectors, capped segments)."""
    return dict(
        vectors_config=models.VectorParams(
            size=meta.dim, distance=models.Distance.COSINE, on_disk=config.on_disk,
            datatype=models.Datatype.FLOAT16 if config.datatype == "float16" else None),
        hnsw_config=models.HnswConfigDiff(m=config.m, ef_construct=config.ef_construct,
                                          full_scan_threshold=config.full_scan_threshold),
        quantization_config=_quantization(config),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=config.indexing_threshold_kb(meta.dim),
                                                      max_segment_size=config.max_segment_kb(meta.dim)),
        shard_number=config.shards or None, replication_factor=config.replicas or None,
        write_consistency_factor=config.write_consistency or None, metadata={**meta.as_dict(), "layout": LAYOUT})


def index_schemas() -> list[tuple[str, Any]]:
    """The payload indexes of a layout-2 collection: ``path`` with prefix matching (``--folder``), all
    memory-mapped (``on_disk``)."""
    wanted: list[tuple[str, Any]] = [
        (f, models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, on_disk=True, prefix=f == "path" or None,
                                      enable_hnsw=False))
        for f in KEYWORD_FIELDS]
    wanted += [(f, models.FloatIndexParams(type=models.FloatIndexType.FLOAT, on_disk=True, enable_hnsw=False))
               for f in FLOAT_FIELDS]
    return wanted


class ServerStore(ServerTextMixin):
    """One collection reached through qdrant-client (``url=`` for a server, ``path=`` for local mode)."""

    def __init__(self, collection: str, *, url: str | None = None, path: str | None = None,
                 api_key: str | None = None, hnsw_ef: int = 128, config: IndexConfig | None = None):
        self.collection = collection
        self._damaged: set[str] = set()  # ids whose vectors searches found damaged (retrieval.store.health)
        self.location = url or f"{path} (qdrant-client local mode)"
        self.hnsw_ef = hnsw_ef
        self.config = config or IndexConfig()
        self._layout = LAYOUT
        try:
            self.client = QdrantClient(url=url, api_key=api_key or None, timeout=30) if url else QdrantClient(
                path=path)
            self._exists = self.client.collection_exists(collection)
        except Exception as exc:
            raise ClipdexError(f"cannot reach Qdrant at {self.location}: {str(exc).splitlines()[0]}") from None

    def meta(self) -> CollectionMeta | None:
        if not self._exists:
            return None
        info = self.client.get_collection(self.collection)
        data = info.config.metadata or {}
        if "model" not in data:
            raise ClipdexError(f"collection '{self.collection}' at {self.location} was not made by clipdex "
                               "(no model metadata); choose another --collection")
        try:
            meta = CollectionMeta.from_dict(data)
        except ValueError as exc:
            raise ClipdexError(f"collection '{self.collection}' at {self.location} has damaged clipdex metadata "
                               f"({exc}); its points are kept; use another --collection or fix its metadata") from None
        layout = data.get("layout", 1)  # collections of older clipdex have no "layout" key
        self._layout = layout if isinstance(layout, int) and 1 <= layout <= LAYOUT else 1
        if not self._indexed:
            self._index_payload_fields()  # once per opener
        return meta

    def create(self, meta: CollectionMeta) -> None:
        try:
            self._create_collection(meta)
        except Exception as exc:  # e.g. another client's first ingest created it a moment ago
            if not self.client.collection_exists(self.collection):
                raise ClipdexError(f"cannot create collection '{self.collection}' at {self.location}: "
                                   f"{first_line(exc)}") from None
            self._exists = True
            found = self.meta()
            if found != meta:
                raise ClipdexError(f"collection '{self.collection}' at {self.location} was created meanwhile by "
                                   f"another client, for {found.model if found else '?'} (dim "
                                   f"{found.dim if found else '?'}); run again or use another --collection") from None
        self._exists = True
        self._index_payload_fields()

    _indexed = False
    def _query_filter(self, where: SearchFilter) -> models.Filter | None:
        return _filter(where, self._layout)

    def layout(self) -> int:
        return self._layout

    def _index_payload_fields(self) -> None:
        """Create the payload indexes clipdex filters and facets on that the collection does not have yet
        (a collection made by an older clipdex lacks the newer fields')."""
        have = set(self.client.get_collection(self.collection).payload_schema or {})
        wanted: list[tuple[str, Any]]
        if self._layout < 2:
            wanted = [(f, models.PayloadSchemaType.KEYWORD) for f in KEYWORD_FIELDS + LEGACY_KEYWORD_FIELDS]
            wanted += [(f, models.PayloadSchemaType.FLOAT) for f in FLOAT_FIELDS]
        else:
            wanted = index_schemas()
        for field, kind in wanted:
            if field not in have:
                self.client.create_payload_index(self.collection, field, kind)
        self._text_indexes(have)
        self._indexed = True

    def _create_collection(self, meta: CollectionMeta) -> None:
        self.client.create_collection(self.collection, **collection_params(meta, self.config))
        self._layout = LAYOUT

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        if ids:
            rows = list(layout_payloads(payloads, self._layout))
            self.client.upsert(self.collection, points=models.Batch(
                ids=list(ids), vectors=vectors.astype(np.float32).tolist(), payloads=rows), wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self.client.delete(self.collection, points_selector=models.PointIdsList(points=list(ids)), wait=True)

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count if self._exists else 0

    def payloads(self, fields: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        if not self._exists:
            return
        offset = None
        while True:
            records, offset = self.client.scroll(self.collection, offset=offset, limit=2048,
                                                 with_payload=list(fields), with_vectors=False)
            for record in records:
                yield str(record.id), dict(record.payload or {})
            if offset is None:
                return

    def points(self, ids: Sequence[str]) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        if not ids or not self._exists:
            return {}
        records = self.client.retrieve(self.collection, ids=[str(uuid.UUID(i)) for i in set(ids)],
                                       with_payload=True, with_vectors=True)
        return {str(r.id): (np.asarray(r.vector, dtype=np.float32), dict(r.payload or {})) for r in records}

    def query(self, vector: np.ndarray, limit: int, where: SearchFilter,
              min_score: float | None = None) -> list[Hit]:
        return self._query(vector.astype(np.float32).tolist(), limit, where, min_score)

    def recommend(self, positives: np.ndarray, negatives: np.ndarray, limit: int, where: SearchFilter,
                  min_score: float | None = None) -> list[Hit]:
        # The stored vectors, not their ids: Qdrant would leave the examples themselves out of the
        # results, which the embedded store (and a search by --image) does not.
        recommend = models.RecommendInput(
            positive=np.asarray(positives, np.float32).tolist(), negative=np.asarray(negatives, np.float32).tolist(),
            strategy=models.RecommendStrategy.AVERAGE_VECTOR)
        return self._query(models.RecommendQuery(recommend=recommend), limit, where, min_score)

    def _query(self, query: Any, limit: int, where: SearchFilter, min_score: float | None) -> list[Hit]:
        if not self._exists:
            raise ClipdexError(hints.missing_collection(self.collection, self.location, None))
        acorn = models.AcornSearchParams(enable=True) if self._layout >= 2 and not where.empty else None

        def search(k: int, exclude: frozenset[str]) -> list[Hit]:
            wanted = _filter(where, self._layout)
            if exclude:  # damaged points found by earlier rounds or searches (retrieval.store.health)
                wanted = models.Filter(must=[wanted] if wanted else None,
                                       must_not=[models.HasIdCondition(has_id=sorted(exclude))])
            response = self.client.query_points(
                self.collection, query=query, limit=k, query_filter=wanted, score_threshold=min_score,
                with_payload=True, search_params=models.SearchParams(
                    hnsw_ef=max(self.hnsw_ef, k), quantization=_quantization_params(self.config), acorn=acorn))
            return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]

        return health.refill(search, limit, self._damaged)

    def by_hash(self, hashes: Sequence[str]) -> dict[str, tuple[str, np.ndarray, dict[str, Any]]]:
        found: dict[str, tuple[str, np.ndarray, dict[str, Any]]] = {}
        wanted = sorted(set(hashes))
        offset = None
        while wanted and self._exists:
            records, offset = self.client.scroll(
                self.collection, offset=offset, limit=len(wanted), with_payload=True, with_vectors=True,
                scroll_filter=models.Filter(must=[
                    models.FieldCondition(key="hash", match=models.MatchAny(any=wanted))]))
            for r in records:
                payload = dict(r.payload or {})
                found.setdefault(payload["hash"], (str(r.id), np.asarray(r.vector, np.float32), payload))
            wanted = [h for h in wanted if h not in found]
            if offset is None:
                break
        return found

    def root_counts(self) -> dict[str, int]:
        if not self._exists:
            return {}
        response = self.client.facet(self.collection, key="root", limit=100_000, exact=True)
        return {str(hit.value): int(hit.count) for hit in response.hits}

    def set_payload(self, ids: Sequence[str], values: dict[str, Any]) -> None:
        if ids and self._exists:
            self.client.set_payload(self.collection, values, points=[str(uuid.UUID(i)) for i in ids], wait=True)
            self._damaged.difference_update(ids)

    def problems(self) -> list[str]:
        """A server checks its own files."""
        return []

    def facet_counts(self, key: str, limit: int) -> dict[str, int]:
        if not self._exists:
            return {}
        response = self.client.facet(self.collection, key=key, limit=limit, exact=True)
        return {str(hit.value): int(hit.count) for hit in response.hits}

    def set_root(self, root: str) -> None:
        if self._exists:
            self.client.set_payload(self.collection, {"root": root}, wait=True, points=models.Filter(
                should=[_below(root, self._layout),
                        models.FieldCondition(key="path", match=models.MatchValue(value=root))],
                must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="root"))]))

    def unindexed(self) -> int:
        """The server indexes in the background: nothing for clipdex to build."""
        return 0

    def optimize(self) -> None:
        """The server indexes in the background."""

    def flush(self) -> None:
        """Writes are acknowledged with wait=True."""

    def warm(self) -> int:
        """The server keeps its own memory."""
        return 0

    def close(self) -> None:
        self.client.close()
