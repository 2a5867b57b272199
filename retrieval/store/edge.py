"""The embedded store: Qdrant's own engine in-process (qdrant-edge), one folder on disk."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from retrieval import hints
from retrieval.errors import ClipdexError
from retrieval.store import health, segments, space
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
from retrieval.store.edge_text import EdgeTextMixin, edge_text_conditions
from retrieval.store.lock import StoreLock
from retrieval.vectors import recommend_vector

log = logging.getLogger(__name__)

META_FILE = "clipdex.json"
SHARD_DIR = "shard"
NEW_DIR, OLD_DIR = "shard.new", "shard.old"  # a rebuild's copy, and the shard it replaced, while it switches
BULK_FILE = "bulk.json"
"""Left inside the shard folder by a bulk load of the previous release (m = 0 during the load) that died:
the HNSW settings the next open restores (and the next :meth:`EdgeStore.optimize` builds the graph with).
This release never writes it: each segment gets its graph as soon as it is full (:meth:`EdgeStore.upsert`)."""


def _below(folder: str, layout: int) -> Any:
    """The condition "lies below ``folder``" in a store of ``layout``."""
    if layout < 2:
        return qe.FieldCondition(key="ancestors", match=qe.MatchValue(folder))
    return qe.FieldCondition(key="path", match=qe.MatchPrefix(folder_prefix(folder)))


def _filter(where: SearchFilter, layout: int = LAYOUT) -> qe.Filter | None:
    if where.empty:
        return None
    must: list[Any] = []
    if where.folder is not None:
        must.append(_below(where.folder, layout))
    if where.after is not None or where.before is not None:
        must.append(qe.FieldCondition(key="taken_ts", range=qe.RangeFloat(gte=where.after, lt=where.before)))
    if where.camera is not None:
        must.append(qe.Filter(should=[
            qe.FieldCondition(key="camera_make", match=qe.MatchValue(where.camera)),
            qe.FieldCondition(key="camera_model", match=qe.MatchValue(where.camera)),
        ]))
    must += edge_text_conditions(where)
    must += [qe.FieldCondition(key="concepts", match=qe.MatchValue(name)) for name in where.concepts]
    must_not = [qe.FieldCondition(key="concepts", match=qe.MatchValue(name)) for name in where.not_concepts]
    if where.path is not None:
        must.append(qe.FieldCondition(key="path", match=qe.MatchValue(where.path)))
    if where.media == "video":
        must.append(qe.FieldCondition(key="media", match=qe.MatchValue("video")))
    elif where.media is not None:  # images: points stored before ``media`` existed are images too
        must_not.append(qe.FieldCondition(key="media", match=qe.MatchValue("video")))
    return qe.Filter(must=must or None, must_not=must_not or None)


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
        self._layout = LAYOUT
        self._since_seal = 0  # points in the appendable segment (no graph yet), as far as this process knows
        self._seal_every = self.config.segment_points  # the shard's own segment size once it is open
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
        _finish_switch(self.folder)
        if not shard_dir.is_dir():
            return  # no collection yet (a clipdex.json alone describes nothing that holds points)
        space.allocate_for_open(self.folder)  # tmpfs: an open reads files whole; a full disk must not SIGBUS
        aside = 0  # points of the segments set aside by this open (retrieval.store.segments)
        for segment, problem in segments.check_all(shard_dir):
            aside += self._set_aside(segment, problem)
        bulk = _read_bulk(shard_dir)
        if bulk is not None:  # a bulk load died before its index build: give the shard its HNSW settings back
            log.warning("%s: a bulk load did not finish; the HNSW index is built by the next ingest", self.folder)
            self._shard, more = self._open(lambda: qe.EdgeShard.load(str(shard_dir), _with_hnsw(shard_dir, bulk)))
        else:
            self._shard, more = self._open(lambda: qe.EdgeShard.load(str(shard_dir)))
        if segments.read_ledger(self.folder) is None:  # a store from before the ledger: start it now
            with suppress(OSError):
                segments.write_ledger(self.folder, self.count() + aside + more)
        self._layout = 1 if set(LEGACY_KEYWORD_FIELDS) & set(self._shard.info().payload_schema or {}) else LAYOUT
        self._since_seal = self.unindexed()  # an ingest that died left them: they count towards the next seal
        self._seal_every = _segment_points(shard_dir) or self.config.segment_points
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
        missing = _index_fields(self.shard, self._layout)
        if self._text_indexes(have) or missing:
            self.shard.flush()

    def rebuild(self, progress: Any = None) -> int:
        """Rewrite the collection in the current layout (:data:`LAYOUT`, the ``[store]`` settings) beside
        the old shard, check that it holds exactly the same point ids, then switch atomically.

        Until the switch the old shard is untouched and in use; a crash leaves it (and a partial copy that
        the next rebuild discards). Returns the number of points. ``progress(done, total)`` after each page.
        """
        meta = self._meta
        if meta is None or self._shard is None:
            raise ClipdexError(f"no collection in {self.folder} to rebuild")
        new_dir, total = self.folder / NEW_DIR, self.count()
        if new_dir.exists():
            shutil.rmtree(new_dir)  # an unfinished earlier rebuild: a partial copy, never the only one
        # The copy is written through memory maps: a disk that fills mid-way would end in SIGBUS, no message,
        # and the copy left behind. So the whole copy's room is checked first (the store is untouched when it
        # does not fit), and each page and each index build is checked again before it is written.
        what = "rebuild the store (a full copy is written beside it, then switched)"
        segment, m = self.config.segment_points, self.config.m
        # (tmpfs: the first open of the copy allocates its holes only after the switch has freed the old shard)
        space.require(self.folder, space.rebuild_bytes(total, meta.dim, self._payload_bytes(total), m, segment), what)
        new = qe.EdgeShard.create(str(new_dir), _edge_config(meta.dim, self.config))
        try:
            try:
                _index_fields(new, LAYOUT)
                copied, since_seal, offset = 0, 0, None
                while True:
                    records, offset = self._shard.scroll(qe.ScrollRequest(offset=offset, limit=1024,
                                                                          with_payload=True, with_vector=True))
                    payloads = layout_payloads([dict(r.payload or {}) for r in records], LAYOUT)
                    points = [qe.Point(r.id, _dense(r.vector), p) for r, p in zip(records, payloads, strict=True)]
                    if points:
                        space.require(self.folder, space.upsert_bytes(len(points), meta.dim, len(
                            json.dumps(payloads, default=str))) + space.optimize_bytes(since_seal, meta.dim, m), what)
                        new.update(qe.UpdateOperation.upsert_points(points))
                    copied, since_seal = copied + len(points), since_seal + len(points)
                    if since_seal >= segment:  # a full segment gets its graph now
                        space.require(self.folder, space.optimize_bytes(since_seal, meta.dim, m), what)
                        _seal(new)
                        since_seal = 0
                    if progress:
                        progress(copied, total)
                    if offset is None:
                        break
                space.require(self.folder, space.optimize_bytes(since_seal, meta.dim, m), what)
                _seal(new)
                if _ids(new) != _ids(self._shard):
                    raise ClipdexError(f"rebuild of {self.folder}: the copy does not hold the same points; "
                                       "the store is unchanged")
            finally:
                new.close()
        except BaseException:
            shutil.rmtree(new_dir, ignore_errors=True)  # our own partial copy: the store is the old shard still
            raise
        _write_json(new_dir / META_FILE, meta.as_dict())
        self._shard.close()
        self._shard = None
        os.rename(self.folder / SHARD_DIR, self.folder / OLD_DIR)
        os.rename(new_dir, self.folder / SHARD_DIR)  # the switch: from here on the store is the new shard
        _fsync_dir(self.folder)
        _finish_switch(self.folder)
        self._load()
        return copied

    def _payload_bytes(self, total: int, sample: int = 256) -> int:
        """An estimate of the JSON size of all ``total`` payloads, from the first ``sample`` points'."""
        if self._shard is None or not total:
            return 0
        records, _ = self._shard.scroll(qe.ScrollRequest(limit=sample, with_payload=True, with_vector=False))
        if not records:
            return 0
        size = len(json.dumps([dict(r.payload or {}) for r in records], default=str))
        return size * total // len(records)

    def _open(self, opener: Any) -> tuple[qe.EdgeShard, int]:
        """The shard ``opener`` loads, and the points of the segments set aside because the engine could
        not load them (each is moved out and the load tried again). A Rust panic is one line."""
        shard_dir, aside = self.folder / SHARD_DIR, 0
        for _ in range(1 + len(list((shard_dir / "segments").glob("*")))):
            try:
                with segments.engine_stderr():  # a panic's backtrace is not for the user's terminal
                    return opener(), aside
            except BaseException as exc:  # qdrant-edge raises plain exceptions with Rust messages, or panics
                text = str(exc).strip()
                line = text.splitlines()[0] if text else type(exc).__name__
                if type(exc).__name__ == "PanicException":
                    raise health.StoreDamaged(
                        f"cannot open store {self.folder}: its engine stopped on a damaged file ({line}); "
                        "restore it from a backup, or ingest into a new --collection") from None
                if not isinstance(exc, Exception):
                    raise
                if "WouldBlock" in text or "lock" in text.lower():
                    raise ClipdexError(f"store {self.folder} is in use by another clipdex process "
                                       "(an ingest still running?); try again when it has finished") from None
                if (segment := segments.load_failure(text, shard_dir)) is None:
                    raise ClipdexError(f"cannot open store {self.folder}: {line}") from None
                aside += self._set_aside(segment, f"the engine could not load it: {line}")
        raise ClipdexError(f"cannot open store {self.folder}: its segments keep failing to load")

    def _set_aside(self, segment: Path, reason: str) -> int:
        """Move a damaged segment out of the shard (never deleted); the points it held, about."""
        points = segments.estimated_points(segment)
        target = segments.set_aside(self.folder, segment, reason)
        log.warning("%s: damaged segment set aside in %s (%s); its %s points are missing until the next "
                    "`clipdex ingest` of their folders embeds them again", self.folder, target, reason,
                    f"{points:,}" if points else "")
        return points

    def losses(self) -> dict[str, Any]:
        """The points the store's records say it holds against those the engine serves, and the segments
        set aside (:func:`retrieval.store.segments.lost`)."""
        return segments.lost(self.folder, self.count())

    def meta(self) -> CollectionMeta | None:
        return self._meta

    def _query_filter(self, where: SearchFilter) -> qe.Filter | None:
        return _filter(where, self._layout)

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
        self._layout = LAYOUT
        self._seal_every = self.config.segment_points
        self._shard, _ = self._open(lambda: qe.EdgeShard.create(str(shard_dir), config))
        with suppress(OSError):
            segments.write_ledger(self.folder, 0)  # a new collection: nothing stored yet
        self._index_payload_fields()
        _write_json(shard_dir / META_FILE, meta.as_dict())
        _write_json(self.folder / META_FILE, meta.as_dict())  # the collection exists once this file does
        self._meta = meta

    @property
    def shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise ClipdexError(hints.missing_collection(self.folder.name, str(self.folder), self.folder.parent))
        return self._shard

    def layout(self) -> int:
        return self._layout

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        """Store points. Once the appendable segment holds ``segment_points`` points it is sealed with its
        HNSW graph (:meth:`optimize`): a large load keeps one segment's payload indexes in RAM at most, and
        builds each segment's graph once, holding no other segment twice (see docs/scale.md)."""
        self._wrote()
        rows = zip(ids, vectors, layout_payloads(payloads, self._layout), strict=True)
        points = [qe.Point(pid, vec.tolist(), payload) for pid, vec, payload in rows]
        if points:
            self._room(space.upsert_bytes(len(points), vectors.shape[1], len(json.dumps(payloads, default=str))),
                       f"store {len(points)} points")
            self.shard.update(qe.UpdateOperation.upsert_points(points))
            self._since_seal += len(points)
            if self._since_seal >= max(self._seal_every, self.config.index_threshold):  # else nothing to seal
                self.optimize()

    def _bulk_file(self) -> Path:
        return self.folder / SHARD_DIR / BULK_FILE

    def _reload(self, config: qe.EdgeConfig) -> None:
        """Close the shard and open it again with ``config`` (written to its edge_config.json)."""
        shard_dir = self.folder / SHARD_DIR
        self.shard.flush()
        self.shard.close()
        self._shard = None
        self._shard, _ = self._open(lambda: qe.EdgeShard.load(str(shard_dir), config))

    def delete(self, ids: Sequence[str]) -> None:
        self._wrote()
        if ids:
            self._room(space.small_write_bytes(len(ids)), f"delete {len(ids)} points")
            if (recorded := segments.read_ledger(self.folder)) is not None:  # lowered first: a lower bound
                segments.write_ledger(self.folder, recorded - len(ids))
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

    def scroll_vectors(self, fields: Sequence[str], *, missing: str | None = None,
                       having: tuple[str, str] | None = None, vectors: bool = True, page: int = 8192,
                       raw_ids: bool = False) -> Iterator[tuple[list[Any], np.ndarray, list[dict[str, Any]]]]:
        """Pages of (ids, vectors as rows, payloads with ``fields``): every point, or only those whose payload
        field ``missing`` is empty, or whose keyword field ``having[0]`` holds ``having[1]``. ``vectors``: False
        gives a (n, 0) array. ``raw_ids``: the engine's id objects (which :meth:`set_payload` takes as they are)
        instead of strings."""
        if self._shard is None:
            return
        must: list[Any] = []
        if missing is not None:
            must.append(qe.IsEmptyCondition(missing))
        if having is not None:
            must.append(qe.FieldCondition(key=having[0], match=qe.MatchValue(having[1])))
        wanted = qe.Filter(must=must) if must else None
        offset = None
        while True:
            records, offset = self._shard.scroll(qe.ScrollRequest(
                offset=offset, limit=page, with_payload=list(fields), with_vector=vectors, filter=wanted))
            if records:
                rows = (np.asarray([_dense(r.vector) for r in records], np.float32) if vectors
                        else np.zeros((len(records), 0), np.float32))
                ids = [r.id for r in records] if raw_ids else [str(r.id) for r in records]
                yield ids, rows, [dict(r.payload or {}) for r in records]
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
        acorn = _ACORN if self._layout >= 2 and not where.empty else None
        ef = self.hnsw_ef if acorn is None else min(self.hnsw_ef, FILTERED_EF)

        def search(k: int, exclude: frozenset[str]) -> list[Hit]:
            wanted = _filter(where, self._layout)
            if exclude:  # damaged points found by earlier rounds or searches
                left_out = qe.HasIdCondition({uuid.UUID(i) for i in exclude})
                wanted = qe.Filter(must=[wanted] if wanted else None, must_not=[left_out])
            try:
                points = None
                if acorn is not None and wanted is not None:
                    points = self._shortlisted(nearest, wanted, k, min_score)
                if points is None:
                    points = self.shard.query(qe.QueryRequest(
                        limit=k, query=nearest, filter=wanted, score_threshold=min_score, with_payload=True,
                        with_vector=False,
                        params=qe.SearchParams(hnsw_ef=max(ef, k), quantization=_quantization_params(self.config),
                                               acorn=acorn)))
            except Exception as exc:  # qdrant-edge raises plain exceptions: a file it cannot read
                raise health.StoreDamaged(f"cannot search store {self.folder}: {str(exc).splitlines()[0]}; "
                                          f"{hints.command('status --check')} says what is damaged") from None
            return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

        return health.refill(search, limit, self._damaged)

    def _shortlisted(self, nearest: Any, wanted: qe.Filter, k: int, min_score: float | None) -> list[Any] | None:
        """A broad filter's top ``k`` from the unfiltered graph, or None where that cannot answer it.

        A filter that lets through at least :data:`SHORTLIST_SELECTIVITY` of the points is walked slowly by
        ACORN (every candidate looks two hops ahead), while the plain graph is fast. So: the unfiltered nearest
        ``L = k / share * SHORTLIST_FACTOR`` (ids only), then the filter applied to those ``L`` exactly.
        If at least ``k`` of them pass, they are the answer, and the same answer the filtered walk would give:
        every point the filter passes outside the shortlist scores below all of it. Fewer than ``k`` (the query
        is near points the filter refuses): None, and the caller walks the filtered graph as before."""
        total = self.shard.count(qe.CountRequest(exact=False))  # estimates, from the segments' own counts
        if total < SHORTLIST_MIN_POINTS:
            return None  # small stores: the filtered walk is fast enough, and exact below the index threshold
        estimate = self.shard.count(qe.CountRequest(filter=wanted, exact=False))
        if estimate < SHORTLIST_SELECTIVITY * total:
            return None
        shortlist = min(SHORTLIST_MAX, max(k, math.ceil(k * total / max(estimate, 1) * SHORTLIST_FACTOR)))
        first = self.shard.query(qe.QueryRequest(
            limit=shortlist, query=nearest, filter=None, score_threshold=min_score, with_payload=False,
            with_vector=False, params=qe.SearchParams(hnsw_ef=max(self.hnsw_ef, shortlist),
                                                      quantization=_quantization_params(self.config))))
        if len(first) < k:
            return None
        among = qe.HasIdCondition({p.id for p in first})
        points = self.shard.query(qe.QueryRequest(
            limit=k, query=nearest, filter=qe.Filter(must=[wanted, among]), score_threshold=min_score,
            with_payload=True, with_vector=False,
            params=qe.SearchParams(exact=True, quantization=_quantization_params(self.config))))
        return points if len(points) >= k else None

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
        self._wrote()
        if ids:
            self._room(space.small_write_bytes(len(ids)), f"update {len(ids)} points")
            self.shard.update(qe.UpdateOperation.set_payload(
                [uuid.UUID(i) if isinstance(i, str) else i for i in ids], values))
            self._damaged.difference_update(str(i) for i in ids)

    def drop_fields(self, keys: Sequence[str]) -> None:
        """Remove these payload fields from every point that has one of them."""
        if self._shard is not None and keys:
            having = qe.Filter(should=[qe.Filter(must_not=[qe.IsEmptyCondition(k)]) for k in keys])
            self._room(space.small_write_bytes(self.count()), f"remove {', '.join(keys)} from the points")
            self._shard.update(qe.UpdateOperation.delete_payload_by_filter(having, list(keys)))

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
        self._wrote()
        if self._shard is not None:
            untagged = qe.Filter(should=[_below(root, self._layout),
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
        if self._bulk_file().exists():  # the previous release's m = 0 segments count as "indexed", with no graph
            return int(info.points_count)
        return max(0, int(info.points_count) - int(info.indexed_vectors_count))

    def optimize(self) -> None:
        if self._shard is None:
            return
        dim = self._meta.dim if self._meta else 0
        rewritten = min(self.count(), max(self.unindexed(), self._seal_every))  # one segment at most
        self._room(space.optimize_bytes(rewritten, dim, self.config.m), "build the search index")
        bulk = _read_bulk(self.folder / SHARD_DIR)
        if bulk is not None:  # a bulk load of the previous release died: its m back, then the graphs
            self._reload(_with_hnsw(self.folder / SHARD_DIR, bulk))
        _seal(self.shard)
        if bulk is not None:
            self._bulk_file().unlink(missing_ok=True)
        self._since_seal = self.unindexed()  # a last segment under index_threshold stays appendable

    def flush(self) -> None:
        if self._shard is not None:
            self._shard.flush()

    def _room(self, needed: int, what: str) -> None:
        """Refuse a write the disk has no room for (:class:`retrieval.store.space.NoSpace`), before it starts."""
        space.require(self.folder, needed, what)
        self._written = True

    def warm(self) -> int:
        """Read the shard's segment files (vectors, HNSW links, payloads and their indexes) into the page cache;
        returns the bytes read.

        Vectors are memory-mapped (layout 2, ``on_disk_vectors``): a search reads the pages its graph walk
        touches, and a page not in the page cache is a disk read inside the query (a 100k store evicted from
        the cache: its first hundred searches took 5-25 ms each, against 0.5 ms once the pages were in;
        docs/benchmarks.md). A long-lived process (a server) reads them up front, in a background thread; a
        one-shot search does not (it needs a few pages). ``posix_fadvise(WILLNEED)`` was tried and did not
        bring them in. The page cache is the kernel's: nothing here adds to the process's resident memory."""
        if self._shard is None:
            return 0
        total = 0
        buffer = bytearray(1 << 22)
        for path in sorted((self.folder / SHARD_DIR / "segments").rglob("*")):
            try:
                if path.is_symlink() or not path.is_file():
                    continue
                with open(path, "rb", buffering=0) as fh:
                    while n := fh.readinto(buffer):
                        total += n
            except OSError:
                continue  # a file that cannot be read ahead is read by the search that needs it
        return total

    def close(self) -> None:
        try:
            if self._shard is not None:
                self._shard.flush()
                if self._written:  # the ledger rises to what the engine serves, never falls (see segments)
                    with suppress(OSError):
                        recorded = segments.read_ledger(self.folder) or 0
                        segments.write_ledger(self.folder, max(recorded, self.count()))
                self._shard.close()
                self._shard = None
                if self._written:  # tmpfs: while the room kept for it is there, so the store opens on a full disk
                    space.allocate_for_open(self.folder, strict=False)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None


def _index_fields(shard: qe.EdgeShard, layout: int) -> bool:
    """Create the payload indexes of ``layout`` that ``shard`` does not have yet (True if it made any)."""
    have = set(shard.info().payload_schema or {})
    wanted: list[tuple[str, Any]]
    if layout < 2:  # as older clipdex made them
        wanted = [(f, qe.PayloadSchemaType.Keyword) for f in KEYWORD_FIELDS + LEGACY_KEYWORD_FIELDS]
        wanted += [(f, qe.PayloadSchemaType.Float) for f in FLOAT_FIELDS]
    else:  # memory-mapped once a segment is sealed (an appendable segment keeps its indexes in RAM)
        # enable_hnsw=False: no extra graph per payload value (see docs/scale.md, "Filterable HNSW")
        wanted = [(f, qe.KeywordIndexParams(prefix=f == "path" or None, memory=qe.Memory.Cold, enable_hnsw=False))
                  for f in KEYWORD_FIELDS]
        wanted += [(f, qe.FloatIndexParams(memory=qe.Memory.Cold, enable_hnsw=False)) for f in FLOAT_FIELDS]
    missing = [(field, kind) for field, kind in wanted if field not in have]
    for field, kind in missing:
        shard.update(qe.UpdateOperation.create_field_index(field, kind))
    if missing:
        shard.flush()
    return bool(missing)


def _seal(shard: qe.EdgeShard) -> None:
    """Run the engine's optimizers (an appendable segment over ``index_threshold`` becomes a sealed one with
    its HNSW graph and memory-mapped payload indexes), then hand the freed heap back."""
    shard.flush()
    shard.optimize()
    _trim_heap()


def _ids(shard: qe.EdgeShard) -> set[str]:
    """Every point id in ``shard``."""
    found: set[str] = set()
    offset = None
    while True:
        records, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=4096, with_payload=False,
                                                        with_vector=False))
        found.update(str(r.id) for r in records)
        if offset is None:
            return found


def _finish_switch(folder: Path) -> None:
    """Complete a rebuild's switch that a crash interrupted (see :meth:`EdgeStore.rebuild`)."""
    shard, new, old = folder / SHARD_DIR, folder / NEW_DIR, folder / OLD_DIR
    if not old.is_dir():
        return
    if not shard.exists() and new.is_dir():  # between the two renames: the verified copy goes in place
        os.rename(new, shard)
        _fsync_dir(folder)
    if shard.is_dir():  # the switch happened: the old shard was proven equal to the new one before it
        shutil.rmtree(old)
    else:  # no copy to switch to (never left by clipdex): put the old shard back
        os.rename(old, shard)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
                                    datatype=qe.VectorStorageDatatype.Float16 if config.datatype == "float16" else None,
                                    memory=qe.Memory.Cold if config.on_disk else None),
        hnsw_config=qe.HnswIndexConfig(m=config.m, ef_construct=config.ef_construct,
                                       full_scan_threshold=config.full_scan_threshold),
        quantization_config=quantization,
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=config.indexing_threshold_kb(dim),
                                           max_segment_size=config.max_segment_kb(dim)))


def _persisted(shard_dir: Path) -> dict[str, Any]:
    """The shard's own ``edge_config.json`` ({} when unreadable)."""
    try:
        data = json.loads((shard_dir / "edge_config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_ACORN = qe.AcornSearchParams(enable=True)
"""Filtered graph walks look two hops ahead (ACORN): layout 2 builds no per-value graphs to lean on."""
FILTERED_EF = 24
"""The ``hnsw_ef`` of a filtered (ACORN) graph walk, when ``[store] hnsw_ef`` is larger. ACORN looks at the
neighbours' neighbours, so each candidate costs many times a plain step: at a camera filter holding a quarter of
60k points, ef 128 took 72-90 ms per search with recall@10 1.0, ef 24 took 3-4 ms with 0.998 (a folder holding a
fifth: 6-9 ms, 0.994; a plain walk without ACORN: 2 ms but 0.86, and still 0.97 at ef 1024); docs/benchmarks.md,
"Engine, second pass". Filters matching few points are answered exactly from the payload index anyway."""
SHORTLIST_SELECTIVITY = 0.05
"""Filters that pass at least this share of the points (by the payload index's estimate) are answered from the
unfiltered graph's shortlist first (:meth:`EdgeStore._shortlisted`); narrower ones are walked with ACORN, or
answered exactly from the payload index."""
SHORTLIST_FACTOR = 2
"""The shortlist holds this many times the points the filter's share says ``k`` passing ones need (at 1M points,
camera filter, benchmarks/filtered.py: 2 gave p50 8.2-8.7 ms, 4 gave 9.2-10.0 ms; docs/benchmarks.md, "Engine,
third pass")."""
SHORTLIST_MAX = 2000
"""At most this many unfiltered neighbours are shortlisted (a graph walk at ef 2000 still takes milliseconds)."""
SHORTLIST_MIN_POINTS = 20_000
"""Stores smaller than this (about ``[store] index_threshold``: searched exactly) skip the shortlist."""
_MEMORY = {"cold": qe.Memory.Cold, "cached": qe.Memory.Cached, "pinned": qe.Memory.Pinned}
_DATATYPES = {"float32": qe.VectorStorageDatatype.Float32, "float16": qe.VectorStorageDatatype.Float16}
_DISTANCES = {"Cosine": qe.Distance.Cosine, "Dot": qe.Distance.Dot, "Euclid": qe.Distance.Euclid}


def _with_hnsw(shard_dir: Path, hnsw: dict[str, Any]) -> qe.EdgeConfig:
    """The shard's persisted configuration with other HNSW settings (``ValueError`` if it holds anything
    this function does not know how to carry over: then nothing is changed)."""
    data = _persisted(shard_dir)
    known = {"vectors", "sparse_vectors", "hnsw_config", "quantization_config", "optimizers", "on_disk_payload",
             "payload_memory"}
    if not data or set(data) - known or data.get("sparse_vectors") or set(data.get("vectors", {})) != {""}:
        raise ValueError("unexpected shard configuration")
    vec = data["vectors"][""]
    if set(vec) - {"size", "distance", "datatype", "memory", "on_disk"} or vec.get("distance") not in _DISTANCES:
        raise ValueError("unexpected vector configuration")
    vectors = qe.EdgeVectorParams(size=int(vec["size"]), distance=_DISTANCES[vec["distance"]],
                                  datatype=_DATATYPES[vec["datatype"]] if "datatype" in vec else None,
                                  memory=_MEMORY[vec["memory"]] if "memory" in vec else None,
                                  on_disk=vec.get("on_disk"))
    quantization = None
    if data.get("quantization_config"):
        scalar = data["quantization_config"].get("scalar")
        if set(data["quantization_config"]) != {"scalar"} or scalar.get("type") != "int8":
            raise ValueError("unexpected quantization configuration")
        quantization = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=scalar.get("quantile"),
                                                    memory=_MEMORY[scalar["memory"]] if "memory" in scalar else None,
                                                    always_ram=scalar.get("always_ram"))
    opt = data.get("optimizers") or {}
    optimizers = qe.EdgeOptimizersConfig(**{k: opt.get(k) for k in (
        "deleted_threshold", "vacuum_min_vector_number", "default_segment_number", "max_segment_size",
        "indexing_threshold", "prevent_unoptimized")})
    return qe.EdgeConfig(
        vectors=vectors, quantization_config=quantization, optimizers=optimizers,
        hnsw_config=qe.HnswIndexConfig(m=int(hnsw["m"]), ef_construct=int(hnsw["ef_construct"]),
                                       full_scan_threshold=int(hnsw["full_scan_threshold"]),
                                       max_indexing_threads=int(hnsw.get("max_indexing_threads", 0))),
        on_disk_payload=data.get("on_disk_payload"),
        payload_memory=_MEMORY[data["payload_memory"]] if "payload_memory" in data else None)


def _segment_points(shard_dir: Path) -> int | None:
    """Points per segment the shard was made with (its ``max_segment_size``, in KB of stored vectors), or
    None (a store made before segments had a size: then ``[store] segment_points`` decides the seals)."""
    data = _persisted(shard_dir)
    try:
        vec = data["vectors"][""]
        size_kb = int(data["optimizers"]["max_segment_size"])
        element = IndexConfig(datatype=vec.get("datatype", "float32")).element_bytes  # max_segment_kb, inverted
        return max(1, size_kb * 1024 // (int(vec["size"]) * element))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def _read_bulk(shard_dir: Path) -> dict[str, Any] | None:
    """The HNSW settings a bulk load left to restore, or None outside one."""
    try:
        data = json.loads((shard_dir / BULK_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), int) for k in ("m", "ef_construct",
                                                                                     "full_scan_threshold")):
        raise ClipdexError(f"{shard_dir / BULK_FILE} is damaged; write the store's HNSW settings into it "
                           '(e.g. {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000}) and run again')
    return data


def _trim_heap() -> None:
    """Give freed heap pages back to the system (glibc keeps them otherwise; RSS would count them)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return
    if trim is not None:
        trim(0)


def _quantization_params(config: IndexConfig) -> qe.QuantizationSearchParams | None:
    if config.quantization == "none":
        return None
    return qe.QuantizationSearchParams(rescore=config.rescore, oversampling=config.oversampling)


def _dense(vector: Any) -> list[float]:
    if isinstance(vector, dict):  # the default (unnamed) vector comes back under ""
        return vector.get("", next(iter(vector.values())))
    return vector
