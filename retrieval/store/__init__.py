"""Vector storage: embedded qdrant-edge by default, a Qdrant server when a URL is set.

The names below load on first use (numpy, qdrant-edge): ``retrieval.store.lock``, which the CLI reads to find
a running server, is importable without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from retrieval.errors import ClipdexError
from retrieval.names import collection_problem
from retrieval.settings import Settings

if TYPE_CHECKING:
    from retrieval.store.base import LAYOUT, CollectionMeta, Hit, IndexConfig, SearchFilter, VectorStore
    from retrieval.store.edge import EdgeStore, MetadataLost

_BASE = frozenset({"LAYOUT", "CollectionMeta", "Hit", "IndexConfig", "SearchFilter", "VectorStore"})
_EDGE = frozenset({"EdgeStore", "MetadataLost"})


def __getattr__(name: str) -> Any:
    if name in _BASE:
        from retrieval.store import base

        return getattr(base, name)
    if name in _EDGE:
        from retrieval.store import edge

        return getattr(edge, name)
    raise AttributeError(f"module 'retrieval.store' has no attribute {name!r}")

__all__ = ["LAYOUT", "CollectionMeta", "EdgeStore", "Hit", "IndexConfig", "MetadataLost", "SearchFilter", "VectorStore",
           "index_config",
           "open_store"]


def index_config(settings: Settings) -> IndexConfig:
    """The ``[store]`` settings that shape a new collection's vector storage and HNSW index."""
    from retrieval.store.base import IndexConfig

    s = settings.store
    return IndexConfig(m=s.hnsw_m, ef_construct=s.hnsw_ef_construct, quantization=s.quantization,
                       rescore=s.quantization_rescore, oversampling=s.quantization_oversampling,
                       on_disk=s.on_disk_vectors, index_threshold=s.index_threshold, datatype=s.vector_datatype,
                       segment_points=s.segment_points, shards=s.shard_number,
                       replicas=s.replication_factor, write_consistency=s.write_consistency_factor)


def open_store(settings: Settings, *, create: bool = False, owner: str | None = None) -> VectorStore:
    """The collection that ``settings.store`` names; ``create`` makes the embedded folder if needed.

    An embedded store is locked for as long as it is open; ``owner`` says who holds it in the message
    a second opener gets (``retrieval.store.lock.serve_owner(url)`` for ``clipdex serve``).
    """
    store = settings.store
    if store.url:
        from retrieval.store.server import ServerStore  # qdrant-client takes seconds to import: only for a URL

        return ServerStore(store.collection, url=store.url, api_key=store.api_key, hnsw_ef=store.hnsw_ef,
                           config=index_config(settings))
    if problem := collection_problem(store.collection):  # (settings check it too: this guards the folder)
        raise ClipdexError(problem)
    folder = settings.store_path / store.collection
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClipdexError(f"cannot create store directory {folder}: {exc.strerror}") from None
    elif folder.exists() and not folder.is_dir():
        raise ClipdexError(f"store path {folder} is not a directory")
    from retrieval.store.edge import EdgeStore

    return EdgeStore(folder, hnsw_ef=store.hnsw_ef, owner=owner, config=index_config(settings))
