"""Store methods the ingest relies on, on both implementations: look-up by hash, roots, index settings."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from retrieval.store import CollectionMeta, IndexConfig, SearchFilter
from retrieval.store.edge import EdgeStore
from retrieval.store.server import ServerStore

TUNED = IndexConfig(m=8, ef_construct=32, quantization="int8", on_disk=True, index_threshold=50)


@pytest.fixture(params=["edge", "client-local"])
def store(request, tmp_path: Path):
    if request.param == "edge":
        s = EdgeStore(tmp_path / "edge", config=TUNED)
    else:
        s = ServerStore("t", path=str(tmp_path / "ql"), config=TUNED)
    s.create(CollectionMeta("m", "", 16))
    yield s
    s.close()


def _fill(store, n: int, root: str | None, hashes: list[str]) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(n)
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{root}{i}")) for i in range(n)]
    folder = root or "/old"
    payloads = [{"path": f"{folder}/{i}.jpg", "ancestors": ["/", folder], "hash": hashes[i]} for i in range(n)]
    if root:
        for p in payloads:
            p["root"] = root
    store.upsert(ids, vectors, payloads)
    return ids, vectors


def test_by_hash_finds_one_point_per_hash_even_among_many_copies(store):
    hashes = ["same"] * 30 + [f"h{i}" for i in range(30, 40)]
    ids, vectors = _fill(store, 40, "/lib", hashes)
    found = store.by_hash(["same", "h33", "h39", "nowhere"])
    assert set(found) == {"same", "h33", "h39"}
    point, vector, payload = found["h33"]
    assert point == ids[33] and payload["path"] == "/lib/33.jpg"
    np.testing.assert_allclose(vector, vectors[33], atol=1e-3)  # float16 in the embedded store
    assert found["same"][2]["hash"] == "same"


def test_root_counts_and_set_root_for_points_stored_before_roots_were_recorded(store):
    _fill(store, 5, "/lib", [f"a{i}" for i in range(5)])
    _fill(store, 3, None, [f"b{i}" for i in range(3)])  # an older collection: no root field
    assert store.root_counts() == {"/lib": 5}
    store.set_root("/old")
    store.set_root("/lib")  # already tagged: unchanged
    assert store.root_counts() == {"/lib": 5, "/old": 3}


def test_tuned_collection_searches_exactly_before_and_after_its_index_is_built(store):
    ids, vectors = _fill(store, 300, "/lib", [f"h{i}" for i in range(300)])
    before = store.query(vectors[7], 5, SearchFilter())
    exact = [ids[i] for i in np.argsort(-(vectors @ vectors[7]))[:5]]
    assert [h.id for h in before] == exact
    if isinstance(store, EdgeStore):
        assert store.unindexed() == 300  # nothing is indexed until optimize()
        store.optimize()
        assert store.unindexed() == 0  # 300 points of 16 floats exceed 50 points' worth
    assert [h.id for h in store.query(vectors[7], 5, SearchFilter())][0] == ids[7]
