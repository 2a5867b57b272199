"""What clipdex needs from a vector store, independent of where Qdrant runs."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from retrieval.store.layout import LAYOUT  # noqa: F401  (re-exported: retrieval.store.base.LAYOUT)

# Payload fields with a Qdrant payload index, so filters never post-filter. ``path`` has a prefix index:
# ``--folder`` is a prefix match on it (see docs/scale.md).
KEYWORD_FIELDS = ("path", "hash", "camera_make", "camera_model", "root", "concepts", "media")
FLOAT_FIELDS = ("taken_ts",)
LEGACY_KEYWORD_FIELDS = ("ancestors",)
"""Indexed only in layout-1 stores."""
SCORE_TOLERANCE = 1e-3  # float rounding of a cosine between unit vectors stays far below this

log = logging.getLogger("clipdex.store")


@dataclass(frozen=True)
class CollectionMeta:
    """The model that filled a collection: vectors of different models never mix.

    Stored as JSON (``as_dict``/``from_dict``). To record more, add a field with a default: older
    stores then read with that default, and unknown keys written by newer versions are ignored.
    """

    model: str
    pretrained: str
    dim: int
    precision: str = "fp32"
    """The inference precision the collection was built with (collections from before it: fp32)."""
    weights: str = ""
    """Content hash of the weights file (``xxh3:…``) when the weights came from a file: the model's
    identity, wherever the file lives. "" for pretrained tags and random weights."""
    student_of: str = ""
    """For a model distilled by ``clipdex distill``: the teacher whose vector space the vectors share
    (text queries go through that teacher's text tower); "" otherwise."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def weights_id(self) -> str:
        """The weights' content hash: ``weights``, or for collections written before that key existed,
        the ``#xxh3:…`` suffix of ``pretrained`` ("" when the weights are a tag or random)."""
        if self.weights:
            return self.weights
        _, sep, digest = self.pretrained.rpartition("#xxh3:")
        return f"xxh3:{digest}" if sep and digest else ""

    @classmethod
    def from_dict(cls, data: Any) -> CollectionMeta:
        """Read what :meth:`as_dict` wrote; ``ValueError`` names what is missing or malformed."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name not in data:
                if field.default is dataclasses.MISSING:
                    raise ValueError(f"no '{field.name}' key")
                continue
            values[field.name] = _typed(field.name, field.type, data[field.name])
        if values["dim"] < 1:
            raise ValueError(f"dim must be positive, not {values['dim']}")
        return cls(**values)


def _typed(name: str, kind: Any, value: Any) -> Any:
    """``value`` checked against a field's annotation (a string under ``from __future__ import annotations``)."""
    kind = kind if isinstance(kind, str) else getattr(kind, "__name__", "")
    expected = {"str": str, "int": int, "float": (int, float), "bool": bool}.get(kind)
    if expected is None:
        return value
    if not isinstance(value, expected) or (kind in ("int", "float") and isinstance(value, bool)):
        raise ValueError(f"'{name}' should be {kind}, not {json.dumps(value)[:40]}")
    return value


@dataclass(frozen=True)
class IndexConfig:
    """How a new collection stores and indexes its vectors (``[store]`` settings; applied at create)."""

    m: int = 16  # HNSW edges per node
    ef_construct: int = 100  # HNSW candidates while building
    quantization: str = "none"  # "none" | "int8" (scalar quantization, 4x smaller vectors in RAM)
    rescore: bool = True  # re-rank quantized candidates with the original vectors
    oversampling: float = 2.0  # quantized candidates fetched per requested hit before rescoring
    on_disk: bool = True  # original vectors memory-mapped and read on demand instead of loaded at open
    full_scan_threshold: int = 10000  # (KB) below this a filtered search scans instead of walking HNSW
    index_threshold: int = 20000  # unindexed points a segment gathers before it gets an HNSW index
    datatype: str = "float16"  # "float16" | "float32": how a new collection stores its vectors
    segment_points: int = 100_000  # a new collection's segments hold at most this many points (sealed when full)
    shards: int = 0  # Qdrant server/cluster: shard_number (0 = the server's default)
    replicas: int = 0  # Qdrant cluster: replication_factor (0 = the server's default)
    write_consistency: int = 0  # Qdrant cluster: write_consistency_factor (0 = the server's default)

    @property
    def element_bytes(self) -> int:
        """Bytes per stored vector component (Qdrant's optimizer thresholds count stored bytes)."""
        return 2 if self.datatype == "float16" else 4

    def indexing_threshold_kb(self, dim: int) -> int:
        """``index_threshold`` points of ``dim`` stored components, in the KB Qdrant's optimizer counts in."""
        return max(1, self.index_threshold * dim * self.element_bytes // 1024)

    def max_segment_kb(self, dim: int) -> int:
        """``segment_points`` points of ``dim`` stored components, in KB (Qdrant sizes segments by their vectors)."""
        return max(1, self.segment_points * dim * self.element_bytes // 1024)


@dataclass(frozen=True)
class SearchFilter:
    """Payload conditions, all optional, all applied inside Qdrant."""

    folder: str | None = None  # an absolute folder: matches every file below it
    after: float | None = None  # taken_ts >= after (epoch seconds)
    before: float | None = None  # taken_ts < before
    camera: str | None = None  # camera_make or camera_model equals this
    text: str | None = None  # every word of this is in the recognised text (ocr_text), see ingest/ocr.py
    concepts: tuple[str, ...] = ()  # a member of each of these concepts (payload ``concepts``, retrieval.concepts)
    not_concepts: tuple[str, ...] = ()  # a member of none of these
    media: str | None = None  # "image" (points without ``media`` too) or "video" (moments), see ingest.video
    path: str | None = None  # exactly this file (a video's moments)

    @property
    def empty(self) -> bool:
        return (self.folder is None and self.after is None and self.before is None and self.camera is None
                and not self.text and not self.concepts and not self.not_concepts and self.media is None
                and self.path is None)


@dataclass(frozen=True)
class Hit:
    """One result. ``score``: the CLIP cosine of the query and the stored vector (what ``min_score`` bounds),
    or the BM25 score of a search by text in image alone. ``rank_score``: a hybrid hit's fused reciprocal-rank
    score, which orders hybrid results (None elsewhere)."""

    id: str
    score: float
    payload: dict[str, Any]
    rank_score: float | None = None


class VectorStore(Protocol):
    """One collection of unit vectors with payloads."""

    location: str

    def meta(self) -> CollectionMeta | None:
        """The collection's model metadata, or None if the collection does not exist yet."""

    def create(self, meta: CollectionMeta) -> None:
        """Create the collection (vectors of ``meta.dim``, cosine) and its payload indexes."""

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def count(self) -> int: ...

    def payloads(self, fields: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every point's id with the named payload fields."""

    def points(self, ids: Sequence[str]) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        """Stored vector and payload of each given id (missing ids are left out)."""

    def query(self, vector: np.ndarray, limit: int, where: SearchFilter,
              min_score: float | None = None) -> list[Hit]:
        """The ``limit`` points nearest to ``vector`` (cosine), best first; damaged points are left out and
        the top refilled past them (:func:`retrieval.store.health.refill`)."""

    def recommend(self, positives: np.ndarray, negatives: np.ndarray, limit: int, where: SearchFilter,
                  min_score: float | None = None) -> list[Hit]:
        """Points like ``positives`` and unlike ``negatives`` (stored vectors, rows), by Qdrant's
        ``average_vector`` strategy (see retrieval.vectors.recommend_vector); scores are cosines."""

    def by_hash(self, hashes: Sequence[str]) -> dict[str, tuple[str, np.ndarray, dict[str, Any]]]:
        """For each content hash stored, one point holding it: hash -> (id, vector, payload)."""

    def set_payload(self, ids: Sequence[str], values: dict[str, Any]) -> None:
        """Set these payload fields on the given points (others stay)."""

    def problems(self) -> list[str]:
        """Damage a cheap look at the store's files finds (one line each; [] when none)."""

    def root_counts(self) -> dict[str, int]:
        """Points per ``root`` payload value (the ingest root a file was found under)."""

    def facet_counts(self, key: str, limit: int) -> dict[str, int]:
        """Points per value of the keyword-indexed payload field ``key`` (at most ``limit`` values, most first)."""

    def set_root(self, root: str) -> None:
        """Give points at or below ``root`` that have no ``root`` field yet that value."""

    def layout(self) -> int:
        """The collection's store layout (:data:`LAYOUT` for new ones; 1 for those of older clipdex)."""

    def flush(self) -> None:
        """Make every acknowledged write durable (lets the write-ahead log be truncated)."""

    def unindexed(self) -> int:
        """Points not yet in an HNSW index (searched exactly until :meth:`optimize`)."""

    def optimize(self) -> None:
        """Build the HNSW graph of the points that have none yet, once they are over ``index_threshold``
        (may take a while; the embedded store also does it by itself for each full segment)."""

    def warm(self) -> int:
        """Read the stored vectors, graphs and payloads into the page cache ahead of the searches of a
        long-lived process (a server), so its first searches read no pages from disk; returns the bytes read."""

    def close(self) -> None: ...


def folder_chain(path: str) -> list[str]:
    """Every folder above ``path``, from ``/`` down to its parent: the ``ancestors`` of layout 1."""
    out = []
    folder = posixpath.dirname(path)
    while True:
        out.append(folder)
        parent = posixpath.dirname(folder)
        if parent == folder:
            return out[::-1]
        folder = parent


def folder_prefix(folder: str) -> str:
    """The ``path`` prefix of every file below ``folder`` (layout 2's ``--folder`` match)."""
    return folder if folder.endswith("/") else folder + "/"


def layout_payloads(payloads: Sequence[dict[str, Any]], layout: int) -> Sequence[dict[str, Any]]:
    """Payloads as a store of ``layout`` keeps them: layout 1 needs ``ancestors``, layout 2 drops it."""
    if layout < 2:
        return [p if "ancestors" in p or not isinstance(p.get("path"), str)
                else {**p, "ancestors": folder_chain(p["path"])} for p in payloads]
    return [{k: v for k, v in p.items() if k != "ancestors"} if "ancestors" in p else p for p in payloads]


def fused_hits(points: Iterable[tuple[str, float, dict[str, Any], Any]], query: np.ndarray, limit: int,
               min_score: float | None) -> list[Hit]:
    """Hybrid hits from fused points (id, RRF score, payload, stored vector), best fused first: each one's
    ``score`` is its CLIP cosine (the stored vector against ``query``), ``rank_score`` the RRF score; a hit whose
    cosine is below ``min_score`` is left out (a BM25 match too), then the first ``limit`` are kept."""
    query = np.asarray(query, np.float32)
    hits: list[Hit] = []
    for pid, fused, payload, vector in points:
        stored = np.asarray(vector if vector is not None else [], np.float32).ravel()
        cosine = float(stored @ query) if stored.shape == query.shape else float("nan")
        if min_score is not None and cosine < min_score:
            continue
        hits.append(Hit(pid, cosine, payload, rank_score=fused))
        if len(hits) == limit:
            break
    return sane_hits(hits)


def sane_hits(hits: Sequence[Hit]) -> list[Hit]:
    """``hits`` without those whose score is no cosine (not finite, or outside [-1, 1]).

    A damaged segment or stored vector can make the engine return NaN or absurd scores; those points
    are never results. Each dropped point is logged with its id, so it can be found and re-ingested.
    """
    kept = [h for h in hits if math.isfinite(h.score) and abs(h.score) <= 1.0 + SCORE_TOLERANCE]
    if len(kept) < len(hits):
        bad = [f"{h.id} ({h.score})" for h in hits if h not in kept]
        log.warning("dropped %d hit(s) with impossible scores (damaged vectors?): %s", len(bad), ", ".join(bad))
    return kept
