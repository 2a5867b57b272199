"""The embedded store: Qdrant's own engine in-process (qdrant-edge), one folder on disk."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from retrieval.errors import ClipdexError
from retrieval.query import recommend_vector
from retrieval.store import health, space
from retrieval.store.base import (
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
    CollectionMeta,
    Hit,
    IndexConfig,
    SearchFilter,
)
from retrieval.store.edge_text import EdgeTextMixin, edge_text_conditions
from retrieval.store.lock import StoreLock

log = logging.getLogger(__name__)

META_FILE = "clipdex.json"
SHARD_DIR = "shard"


def _filter(where: SearchFilter) -> qe.Filter | None:
    if where.empty:
        return None
    must: list[Any] = []
    if where.folder is not None:
        must.append(qe.FieldCondition(key="ancestors", match=qe.MatchValue(where.folder)))
    if where.after is not None or where.before is not None:
        must.append(qe.FieldCondition(key="taken_ts", range=qe.RangeFloat(gte=where.after, lt=where.before)))
    if where.camera is not None:
        must.append(qe.Filter(should=[
            qe.FieldCondition(key="camera_make", match=qe.MatchValue(where.camera)),
            qe.FieldCondition(key="camera_model", match=qe.MatchValue(where.camera)),
        ]))
    must += edge_text_conditions(where)
    return qe.Filter(must=must)


class EdgeStore(EdgeTextMixin):
    """A collection stored in ``folder``: its shard, ``clipdex.json`` and a copy of that inside the shard.

    Opening takes the folder's lock (see :mod:`retrieval.store.lock`) before reading or creating
    anything. ``clipdex.json`` names the model that filled the shard; if it is lost or damaged it is
    rebuilt from ``shard/clipdex.json``. A shard with points and no readable metadata at all is
    refused with a line saying how to recover, never emptied.
    """

    def __init__(self, folder: Path, hnsw_ef: int = 128, *, owner: str | None = None,
                 config: IndexConfig | None = None):
        self.folder = folder
        self.location = str(folder)
        self.hnsw_ef = hnsw_ef
        self.owner = owner
        self.config = config or IndexConfig()
        self._shard: qe.EdgeShard | None = None
        self._meta: CollectionMeta | None = None
        self._lock: StoreLock | None = None
        self._damaged: set[str] = set()  # ids whose vectors searches found damaged (retrieval.store.health)
        self._written = False  # tmpfs: allocate what the next open reads when closing (retrieval.store.space)
        if folder.is_dir():
            self._lock = StoreLock(folder, owner)
            try:
                self._load()
            except BaseException:
                self.close()
                raise

    def _load(self) -> None:
        shard_dir = self.folder / SHARD_DIR
        if not shard_dir.is_dir():
            return  # no collection yet (a clipdex.json alone describes nothing that holds points)
        space.allocate_for_open(self.folder)  # tmpfs: an open reads files whole; a full disk must not SIGBUS
        self._shard = self._open(lambda: qe.EdgeShard.load(str(shard_dir)))
        main, main_problem = _read_meta(self.folder / META_FILE)
        copy, _ = _read_meta(shard_dir / META_FILE)
        if main is not None:
            if copy != main:
                _write_json(shard_dir / META_FILE, main.as_dict())  # stores made before the copy existed
            self._meta = main
        elif copy is not None:
            log.warning("%s: %s %s; rebuilt from %s/%s", self.folder, META_FILE, main_problem, SHARD_DIR, META_FILE)
            _write_json(self.folder / META_FILE, copy.as_dict())
            self._meta = copy
        elif (points := self.count()) > 0:
            raise MetadataLost(self.folder / META_FILE, main_problem, points, _shard_dim(shard_dir))
        # else: a create() that died before writing any metadata, and no point was stored: create() redoes it
        if self._meta is not None:
            self._index_payload_fields()  # stores made by an older clipdex lack the newer fields' indexes

    def _index_payload_fields(self) -> None:
        """Create the payload indexes clipdex filters and facets on that the shard does not have yet."""
        have = set(self.shard.info().payload_schema or {})
        wanted = [(f, qe.PayloadSchemaType.Keyword) for f in KEYWORD_FIELDS]
        wanted += [(f, qe.PayloadSchemaType.Float) for f in FLOAT_FIELDS]
        missing = [(field, kind) for field, kind in wanted if field not in have]
        for field, kind in missing:
            self.shard.update(qe.UpdateOperation.create_field_index(field, kind))
        if self._text_indexes(have) or missing:
            self.shard.flush()

    def _open(self, opener: Any) -> qe.EdgeShard:
        try:
            return opener()
        except Exception as exc:  # qdrant-edge raises plain exceptions with Rust messages
            text = str(exc)
            if "WouldBlock" in text or "lock" in text.lower():
                raise ClipdexError(f"store {self.folder} is in use by another clipdex process "
                                  "(an ingest still running?); try again when it has finished") from None
            raise ClipdexError(f"cannot open store {self.folder}: {text.splitlines()[0]}") from None

    def meta(self) -> CollectionMeta | None:
        return self._meta

    _query_filter = staticmethod(_filter)

    def create(self, meta: CollectionMeta) -> None:
        if self._meta is not None:
            raise ClipdexError(f"store {self.folder} already holds a collection")
        if self._lock is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock = StoreLock(self.folder, self.owner)
        shard_dir = self.folder / SHARD_DIR
        if self._shard is not None:  # left by a create that died before its metadata: proven empty in _load
            if self.count():
                raise ClipdexError(f"store {self.folder} holds points of an unknown model; not replacing it")
            self._shard.close()
            self._shard = None
            shutil.rmtree(shard_dir)
        elif shard_dir.exists():
            raise ClipdexError(f"store {self.folder} has a {SHARD_DIR}/ folder that could not be loaded; "
                               "move it away first")
        space.require(self.folder, space.CREATE_BYTES, "create the collection", new=True)
        self._written = True
        config = _edge_config(meta.dim, self.config)
        self._shard = self._open(lambda: qe.EdgeShard.create(str(shard_dir), config))
        self._index_payload_fields()
        _write_json(shard_dir / META_FILE, meta.as_dict())
        _write_json(self.folder / META_FILE, meta.as_dict())  # the collection exists once this file does
        self._meta = meta

    @property
    def shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise ClipdexError(f"no collection in {self.folder} yet (run `clipdex ingest` first)")
        return self._shard

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        rows = zip(ids, vectors, payloads, strict=True)
        points = [qe.Point(pid, vec.tolist(), payload) for pid, vec, payload in rows]
        if points:
            self._room(space.upsert_bytes(len(points), vectors.shape[1], len(json.dumps(payloads, default=str))),
                       f"store {len(points)} points")
            self.shard.update(qe.UpdateOperation.upsert_points(points))

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._room(space.small_write_bytes(len(ids)), f"delete {len(ids)} points")
            self.shard.update(qe.UpdateOperation.delete_points(list(ids)))

    def count(self) -> int:
        return 0 if self._shard is None else self._shard.count(qe.CountRequest(exact=True))

    def payloads(self, fields: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        if self._shard is None:
            return
        offset = None
        while True:
            records, offset = self._shard.scroll(
                qe.ScrollRequest(offset=offset, limit=2048, with_payload=list(fields), with_vector=False))
            for record in records:
                yield str(record.id), dict(record.payload or {})
            if offset is None:
                return

    def points(self, ids: Sequence[str]) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        if not ids or self._shard is None:
            return {}
        records = self._shard.retrieve([uuid.UUID(i) for i in set(ids)], with_payload=True, with_vector=True)
        return {str(r.id): (np.asarray(_dense(r.vector), dtype=np.float32), dict(r.payload or {}))
                for r in records}

    def query(self, vector: np.ndarray, limit: int, where: SearchFilter,
              min_score: float | None = None) -> list[Hit]:
        nearest = qe.Query.Nearest(vector.astype(np.float32).tolist())

        def search(k: int, exclude: frozenset[str]) -> list[Hit]:
            wanted = _filter(where)
            if exclude:  # damaged points found by earlier rounds or searches
                left_out = qe.HasIdCondition({uuid.UUID(i) for i in exclude})
                wanted = qe.Filter(must=[wanted] if wanted else None, must_not=[left_out])
            request = qe.QueryRequest(
                limit=k, query=nearest, filter=wanted, score_threshold=min_score, with_payload=True,
                with_vector=False,
                params=qe.SearchParams(hnsw_ef=max(self.hnsw_ef, k), quantization=_quantization_params(self.config)))
            try:
                points = self.shard.query(request)
            except Exception as exc:  # qdrant-edge raises plain exceptions: a file it cannot read
                raise health.StoreDamaged(f"cannot search store {self.folder}: {str(exc).splitlines()[0]}; "
                                          "`clipdex status --check` says what is damaged") from None
            return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

        return health.refill(search, limit, self._damaged)

    def recommend(self, positives: np.ndarray, negatives: np.ndarray, limit: int, where: SearchFilter,
                  min_score: float | None = None) -> list[Hit]:
        # qdrant-edge's recommend queries are best_score/sum_scores only (their scores are no cosines):
        # average_vector, Qdrant's default strategy, is one nearest search for this vector.
        return self.query(recommend_vector(positives, negatives), limit, where, min_score)

    def by_hash(self, hashes: Sequence[str]) -> dict[str, tuple[str, np.ndarray, dict[str, Any]]]:
        found: dict[str, tuple[str, np.ndarray, dict[str, Any]]] = {}
        wanted = sorted(set(hashes))
        offset = None
        while wanted and self._shard is not None:
            records, offset = self._shard.scroll(qe.ScrollRequest(
                offset=offset, limit=len(wanted), with_payload=True, with_vector=True,
                filter=qe.Filter(must=[qe.FieldCondition(key="hash", match=qe.MatchAny(wanted))])))
            for r in records:
                payload, vector = dict(r.payload or {}), np.asarray(_dense(r.vector), np.float32)
                if health.sane_vector(vector):  # a damaged copy is never reused for a moved or copied file
                    found.setdefault(payload["hash"], (str(r.id), vector, payload))
            wanted = [h for h in wanted if h not in found]  # duplicates can fill a page: ask for the rest
            if offset is None:
                break
        return found

    def set_payload(self, ids: Sequence[str], values: dict[str, Any]) -> None:
        if ids:
            self._room(space.small_write_bytes(len(ids)), f"update {len(ids)} points")
            self.shard.update(qe.UpdateOperation.set_payload([uuid.UUID(i) for i in ids], values))
            self._damaged.difference_update(ids)

    def problems(self) -> list[str]:
        return health.file_problems(self.folder)

    def root_counts(self) -> dict[str, int]:
        if self._shard is None:
            return {}
        response = self._shard.facet(qe.FacetRequest(key="root", limit=100_000, exact=True))
        return {str(hit.value): int(hit.count) for hit in response.hits}

    def facet_counts(self, key: str, limit: int) -> dict[str, int]:
        if self._shard is None:
            return {}
        response = self._shard.facet(qe.FacetRequest(key=key, limit=limit, exact=True))
        return {str(hit.value): int(hit.count) for hit in response.hits}

    def set_root(self, root: str) -> None:
        if self._shard is not None:
            untagged = qe.Filter(should=[qe.FieldCondition(key="ancestors", match=qe.MatchValue(root)),
                                         qe.FieldCondition(key="path", match=qe.MatchValue(root))],
                                 must=[qe.IsEmptyCondition("root")])
            points = self._shard.count(qe.CountRequest(filter=untagged, exact=True))
            if points:
                self._room(space.small_write_bytes(points), f"tag {points} points with their root")
                self._shard.update(qe.UpdateOperation.set_payload_by_filter(untagged, {"root": root}))

    def unindexed(self) -> int:
        if self._shard is None:
            return 0
        info = self._shard.info()
        return max(0, int(info.points_count) - int(info.indexed_vectors_count))

    def optimize(self) -> None:
        if self._shard is not None:
            dim = self._meta.dim if self._meta else 0
            self._room(space.optimize_bytes(self.count(), dim, self.config.m), "build the search index")
            self._shard.optimize()

    def flush(self) -> None:
        if self._shard is not None:
            self._shard.flush()

    def _room(self, needed: int, what: str) -> None:
        """Refuse a write the disk has no room for (:class:`retrieval.store.space.NoSpace`), before it starts."""
        space.require(self.folder, needed, what)
        self._written = True

    def close(self) -> None:
        try:
            if self._shard is not None:
                self._shard.flush()
                self._shard.close()
                self._shard = None
                if self._written:  # tmpfs: while the room kept for it is there, so the store opens on a full disk
                    space.allocate_for_open(self.folder, strict=False)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None


class MetadataLost(ClipdexError):
    """A shard holds points but neither ``clipdex.json`` nor its copy can be read: the store is refused.

    :meth:`fix` names the file to write; ``Index.open`` fills in the configured model's metadata.
    """

    def __init__(self, meta_file: Path, problem: str, points: int, dim: int | None):
        self.meta_file, self.problem, self.points, self.dim = meta_file, problem, points, dim
        super().__init__(self.fix("restore it from a backup, or write the metadata of the model that built it"))

    def fix(self, how: str) -> str:
        folder = self.meta_file.parent
        return (f"store {folder} holds {self.points} points (dim {self.dim or '?'}) but its {META_FILE} is "
                f"{self.problem} and there is no copy in {SHARD_DIR}/; the points are kept. To recover, {how}")


def _read_meta(file: Path) -> tuple[CollectionMeta | None, str]:
    """The metadata in ``file``, or None and what is wrong with it ("missing", "damaged (...)")."""
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return None, "missing"
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    try:
        return CollectionMeta.from_dict(json.loads(raw.decode("utf-8"))), ""
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "damaged (not valid JSON)"
    except ValueError as exc:
        return None, f"damaged ({exc})"


def _write_json(file: Path, data: dict[str, Any]) -> None:
    """Write ``file`` atomically (a crash leaves the old file or the new one, never half of one)."""
    tmp = file.with_name(file.name + ".tmp")
    with tmp.open("w") as fh:
        fh.write(json.dumps(data))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, file)


def _shard_dim(shard_dir: Path) -> int | None:
    """The vector size qdrant-edge recorded for the shard (None when unreadable): a hint for recovery."""
    try:
        size = json.loads((shard_dir / "edge_config.json").read_text())["vectors"][""]["size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return size if isinstance(size, int) else None


def _edge_config(dim: int, config: IndexConfig) -> qe.EdgeConfig:
    quantization = (qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned)
                    if config.quantization == "int8" else None)
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine,
                                    memory=qe.Memory.Cold if config.on_disk else None),
        hnsw_config=qe.HnswIndexConfig(m=config.m, ef_construct=config.ef_construct,
                                       full_scan_threshold=config.full_scan_threshold),
        quantization_config=quantization,
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=config.indexing_threshold_kb(dim)))


def _quantization_params(config: IndexConfig) -> qe.QuantizationSearchParams | None:
    if config.quantization == "none":
        return None
    return qe.QuantizationSearchParams(rescore=config.rescore, oversampling=config.oversampling)


def _dense(vector: Any) -> list[float]:
    if isinstance(vector, dict):  # the default (unnamed) vector comes back under ""
        return vector.get("", next(iter(vector.values())))
    return vector
