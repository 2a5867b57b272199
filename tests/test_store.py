"""Both store implementations behave the same: the embedded engine and qdrant-client (local mode)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from retrieval.errors import ClipdexError
from retrieval.store import CollectionMeta, SearchFilter
from retrieval.store.edge import EdgeStore
from retrieval.store.server import ServerStore


@pytest.fixture(params=["edge", "client-local"])
def store(request, tmp_path: Path):
    s = EdgeStore(tmp_path / "edge") if request.param == "edge" else ServerStore("t", path=str(tmp_path / "ql"))
    yield s
    s.close()


def _points(n: int, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}")) for i in range(n)]
    payloads = [{"path": f"/r/{'x' if i % 2 else 'y'}/{i}.jpg",
                 "ancestors": ["/", "/r", f"/r/{'x' if i % 2 else 'y'}"], "taken_ts": float(i), "hash": f"h{i}",
                 "camera_make": "Canon" if i % 3 == 0 else "Nikon"} for i in range(n)]
    return ids, vectors, payloads


def test_create_upsert_query_and_filters(store):
    assert store.meta() is None and store.count() == 0
    store.create(CollectionMeta("m", "w", 8))
    assert store.meta() == CollectionMeta("m", "w", 8)
    ids, vectors, payloads = _points(20)
    store.upsert(ids, vectors, payloads)
    store.upsert(ids[:5], vectors[:5], payloads[:5])  # idempotent
    assert store.count() == 20
    hits = store.query(vectors[3], 5, SearchFilter())
    exact = np.argsort(-(vectors @ vectors[3]))[:5]
    assert [h.id for h in hits] == [ids[i] for i in exact]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    only_x = store.query(vectors[3], 20, SearchFilter(folder="/r/x"))
    assert len(only_x) == 10 and all(h.payload["path"].startswith("/r/x/") for h in only_x)
    dated = store.query(vectors[0], 20, SearchFilter(after=5.0, before=9.0))
    assert sorted(h.payload["taken_ts"] for h in dated) == [5.0, 6.0, 7.0, 8.0]
    canon = store.query(vectors[0], 20, SearchFilter(camera="Canon"))
    assert len(canon) == 7 and {h.payload["camera_make"] for h in canon} == {"Canon"}
    above = store.query(vectors[3], 20, SearchFilter(), min_score=0.5)
    assert all(h.score >= 0.5 for h in above)


def test_points_payloads_and_delete(store):
    store.create(CollectionMeta("m", "", 8))
    ids, vectors, payloads = _points(6)
    store.upsert(ids, vectors, payloads)
    got = store.points(ids[:2] + ["00000000-0000-0000-0000-000000000000"])
    assert set(got) == set(ids[:2])
    np.testing.assert_allclose(got[ids[1]][0], vectors[1], atol=1e-6)
    assert got[ids[1]][1]["hash"] == "h1"
    listed = dict(store.payloads(["path"]))
    assert set(listed) == set(ids) and listed[ids[0]] == {"path": payloads[0]["path"]}
    store.delete(ids[:4])
    assert store.count() == 2


def test_embedded_store_reopens_and_refuses_a_second_opener(tmp_path: Path):
    first = EdgeStore(tmp_path / "s")
    first.create(CollectionMeta("m", "", 8))
    ids, vectors, payloads = _points(3)
    first.upsert(ids, vectors, payloads)
    with pytest.raises(ClipdexError, match="in use"):
        EdgeStore(tmp_path / "s")
    first.close()
    again = EdgeStore(tmp_path / "s")
    assert again.count() == 3 and again.meta() == CollectionMeta("m", "", 8)
    again.close()
