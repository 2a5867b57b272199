"""What clipdex needs from a vector store, independent of where Qdrant runs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

# Payload fields with a Qdrant payload index, so filters never post-filter.
KEYWORD_FIELDS = ("path", "ancestors", "hash", "camera_make", "camera_model", "root")
FLOAT_FIELDS = ("taken_ts",)


@dataclass(frozen=True)
class CollectionMeta:
    """The model that filled a collection: vectors of different models never mix."""

    model: str
    pretrained: str
    dim: int

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "pretrained": self.pretrained, "dim": self.dim}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectionMeta:
        return cls(str(data["model"]), str(data.get("pretrained", "")), int(data["dim"]))


@dataclass(frozen=True)
class IndexConfig:
    """How a new collection stores and indexes its vectors (``[store]`` settings; applied at create)."""

    m: int = 16  # HNSW edges per node
    ef_construct: int = 100  # HNSW candidates while building
    quantization: str = "none"  # "none" | "int8" (scalar quantization, 4x smaller vectors in RAM)
    rescore: bool = True  # re-rank quantized candidates with the original vectors
    oversampling: float = 2.0  # quantized candidates fetched per requested hit before rescoring
    on_disk: bool = False  # original vectors memory-mapped from disk instead of held in RAM
    full_scan_threshold: int = 10000  # (KB) below this a filtered search scans instead of walking HNSW
    index_threshold: int = 20000  # unindexed points a segment gathers before it gets an HNSW index

    def indexing_threshold_kb(self, dim: int) -> int:
        """``index_threshold`` points of ``dim`` float32s, in the KB Qdrant's optimizer counts in."""
        return max(1, self.index_threshold * dim * 4 // 1024)


@dataclass(frozen=True)
class SearchFilter:
    """Payload conditions, all optional, all applied inside Qdrant."""

    folder: str | None = None  # an absolute folder: matches every file below it
    after: float | None = None  # taken_ts >= after (epoch seconds)
    before: float | None = None  # taken_ts < before
    camera: str | None = None  # camera_make or camera_model equals this

    @property
    def empty(self) -> bool:
        return self.folder is None and self.after is None and self.before is None and self.camera is None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


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
              min_score: float | None = None) -> list[Hit]: ...

    def by_hash(self, hashes: Sequence[str]) -> dict[str, tuple[str, np.ndarray, dict[str, Any]]]:
        """For each content hash stored, one point holding it: hash -> (id, vector, payload)."""

    def root_counts(self) -> dict[str, int]:
        """Points per ``root`` payload value (the ingest root a file was found under)."""

    def set_root(self, root: str) -> None:
        """Give points at or below ``root`` that have no ``root`` field yet that value."""

    def unindexed(self) -> int:
        """Points not yet in an HNSW index (searched exactly until :meth:`optimize`)."""

    def optimize(self) -> None:
        """Build indexes after a bulk load (may take a while)."""

    def close(self) -> None: ...
