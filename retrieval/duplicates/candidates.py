"""Candidate pairs from the store's own nearest-neighbour search over the vectors it holds.

Nothing is re-encoded and no pair loop runs in Python: every stored vector is sent back to the
store as a query (in batches where the embedded store can plan them together) for its ``k``
nearest neighbours above a cosine threshold. The threshold is generous on purpose: an embedding
cannot separate "the same photo" from "a similar photo", the pixel check (``verify``) does that.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.store import SearchFilter, VectorStore

FIELDS = ("path", "hash", "size", "width", "height", "format", "taken_at", "taken_ts", "root", "mtime", "media")
MOMENT_FIELDS = ("start_s", "end_s", "time_s", "duration_s", "codec")
CHUNK = 256
"""Points per store call (a server's lock is held for one call at a time)."""
NEAR_EF = 32
"""HNSW candidates per query (at least twice the neighbours asked): duplicates lie very close, so the
search needs far less than a text query's ``hnsw_ef``."""


@dataclass(frozen=True)
class Point:
    """A stored file: its point id, path and the payload fields duplicates need."""

    id: str
    payload: dict[str, Any]

    @property
    def path(self) -> str:
        return str(self.payload.get("path", ""))

    @property
    def hash(self) -> str:
        return str(self.payload.get("hash", ""))


Lock = AbstractContextManager[Any]
"""Held around each store call (a server's lock; ``nullcontext()`` elsewhere)."""


def points_in(store: VectorStore, folder: str | None, lock: Lock | None = None) -> list[Point]:
    """Every photo's point (below ``folder``, a path key, if given) with the payload fields in :data:`FIELDS`."""
    return scan(store, folder, lock)[0]


def scan(store: VectorStore, folder: str | None, lock: Lock | None = None) -> tuple[list[Point], list[Point]]:
    """(every photo's point, every video moment's point) below ``folder`` (a path key, if given), one scroll.

    The photos' candidates never include a moment (their hits as neighbours are ignored by the caller: no hash
    of theirs is known there), and a video's moments are never duplicates of each other: whole videos are
    compared by their moment sequences instead (:mod:`.videos`)."""
    lock = lock or nullcontext()
    below = None if folder is None else folder.rstrip("/") + "/"
    photos, moments = [], []
    with lock:
        scroll = store.payloads(FIELDS + MOMENT_FIELDS)
    while True:
        with lock:
            item = next(scroll, None)
        if item is None:
            break
        pid, payload = item
        path = str(payload.get("path", ""))
        if path and (below is None or path.startswith(below)):
            (moments if payload.get("media") == "video" else photos).append(Point(pid, payload))
    photos.sort(key=lambda p: p.path)
    return photos, moments


def vectors_of(store: VectorStore, ids: Sequence[str], dim: int, lock: Lock) -> np.ndarray:
    """The stored vectors of ``ids`` (rows in order; a point gone meanwhile gets a zero row)."""
    out = np.zeros((len(ids), dim), np.float32)
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start:start + CHUNK])
        with lock:
            found = store.points(chunk)
        for row, pid in enumerate(chunk, start):
            if pid in found:
                out[row] = found[pid][0]
    return out


def neighbours(store: VectorStore, queries: Sequence[Point], limits: Sequence[int], threshold: float,
               folder: str | None, lock: Lock | None = None, media: str | None = None
               ) -> Iterator[tuple[int, str, float]]:
    """``(row, point id, cosine)``: the nearest neighbours of each query point's stored vector (at most
    ``limits[row]`` of them, the point itself included) whose cosine is ``threshold`` or above (``media``:
    "video" asks among video moments only)."""
    lock = lock or nullcontext()
    meta = store.meta()
    dim = meta.dim if meta else 0
    where = SearchFilter(folder=folder, media=media)
    for start in range(0, len(queries), CHUNK):
        chunk = queries[start:start + CHUNK]
        vectors = vectors_of(store, [p.id for p in chunk], dim, lock)
        with lock:
            found = _nearest(store, vectors, limits[start:start + CHUNK], where, threshold)
        for row, hits in enumerate(found, start):
            for hit_id, score in hits:
                yield row, hit_id, score


def _nearest(store: VectorStore, vectors: np.ndarray, limits: Sequence[int], where: SearchFilter,
             threshold: float) -> list[list[tuple[str, float]]]:
    """The neighbours of each row: one planned batch in the embedded store, else one query per row."""
    from retrieval.store.edge import EdgeStore

    if isinstance(store, EdgeStore):
        return _edge_batch(store, vectors, limits, where, threshold)
    return [[(h.id, h.score) for h in store.query(v, limit, where, threshold)] if np.any(v) else []
            for v, limit in zip(vectors, limits, strict=True)]


def _edge_batch(store: Any, vectors: np.ndarray, limits: Sequence[int], where: SearchFilter,
                threshold: float) -> list[list[tuple[str, float]]]:
    import qdrant_edge as qe

    from retrieval.store.edge import _filter, _quantization_params

    quantization, filter_ = _quantization_params(store.config), _filter(where)
    rows = [i for i, v in enumerate(vectors) if np.any(v)]
    requests = [qe.QueryRequest(
        limit=limits[i], query=qe.Query.Nearest(vectors[i].tolist()), filter=filter_, score_threshold=threshold,
        with_payload=False, with_vector=False,
        params=qe.SearchParams(hnsw_ef=max(NEAR_EF, 2 * limits[i]), quantization=quantization)) for i in rows]
    out: list[list[tuple[str, float]]] = [[] for _ in vectors]
    if requests:
        for i, result in zip(rows, store.shard.query_batch(qe.QueryBatchRequest(requests)), strict=True):
            out[i] = [(str(p.id), float(p.score)) for p in result if np.isfinite(p.score)]
    return out
