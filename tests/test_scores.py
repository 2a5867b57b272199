"""Damaged stored vectors: their non-finite or impossible scores are never returned as results."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np
import pytest

from retrieval.store import CollectionMeta, SearchFilter
from retrieval.store.base import Hit, sane_hits
from retrieval.store.edge import EdgeStore
from retrieval.store.server import ServerStore

DIM = 8


def _healthy(n: int = 12) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}")) for i in range(n)], vectors


def _assert_sane(hits: list[Hit], damaged: set[str]) -> None:
    assert hits, "the healthy points must still be found"
    assert not damaged & {h.id for h in hits}
    assert all(np.isfinite(h.score) and -1.0 - 1e-3 <= h.score <= 1.0 + 1e-3 for h in hits)


def test_embedded_store_never_returns_non_finite_stored_vectors(tmp_path: Path):
    store = EdgeStore(tmp_path / "edge")
    store.create(CollectionMeta("m", "", DIM))
    ids, vectors = _healthy()
    bad = {str(uuid.uuid4()): np.full(DIM, np.nan, np.float32), str(uuid.uuid4()): np.full(DIM, np.inf, np.float32),
           str(uuid.uuid4()): np.r_[np.float32(np.nan), np.ones(DIM - 1, np.float32)]}
    all_ids = ids + list(bad)
    store.upsert(all_ids, np.vstack([vectors, *bad.values()]), [{"path": f"/p/{i}"} for i in all_ids])
    assert store.count() == len(all_ids)  # the engine took them
    try:
        for probe in vectors[:4]:
            _assert_sane(store.query(probe, len(all_ids), SearchFilter()), set(bad))
            _assert_sane(store.recommend(probe[None], vectors[5:6], len(all_ids), SearchFilter()), set(bad))
    finally:
        store.close()


def test_server_store_drops_a_damaged_segments_nan_scores(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """qdrant-client's local mode refuses NaN on upsert, so damage its loaded segment in place."""
    store = ServerStore("t", path=str(tmp_path / "ql"))
    store.create(CollectionMeta("m", "", DIM))
    ids, vectors = _healthy()
    store.upsert(ids, vectors, [{"path": f"/p/{i}"} for i in ids])
    segment = store.client._client.collections["t"]  # the engine's own arrays, not clipdex code
    damaged = set(ids[2:4])
    for point in damaged:
        segment.vectors[""][segment.ids[point]] = np.nan
    raw = store.client.query_points("t", query=vectors[0].tolist(), limit=len(ids)).points
    assert damaged <= {str(p.id) for p in raw if not np.isfinite(p.score)}  # the engine does return them
    try:
        with caplog.at_level(logging.WARNING, logger="clipdex.store"):
            _assert_sane(store.query(vectors[0], len(ids), SearchFilter()), damaged)
            _assert_sane(store.recommend(vectors[:2], vectors[5:6], len(ids), SearchFilter()), damaged)
        assert all(point in caplog.text for point in damaged)  # logged, so they can be found and re-ingested
    finally:
        store.close()


def test_only_cosines_pass():
    hits = [Hit("a", 0.5, {}), Hit("b", float("nan"), {}), Hit("c", 1.0004, {}), Hit("d", 1.5, {}),
            Hit("e", -1.0, {}), Hit("f", float("-inf"), {}), Hit("g", -7.0, {}), Hit("h", 1e30, {})]
    assert [h.id for h in sane_hits(hits)] == ["a", "c", "e"]
