"""The store at scale (issue 18): layout 2 on small stores, old stores kept, bulk loads, ``rebuild``."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tarfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import models

from retrieval.store import LAYOUT, CollectionMeta, IndexConfig, SearchFilter
from retrieval.store.edge import BULK_FILE, NEW_DIR, OLD_DIR, SHARD_DIR, EdgeStore, _with_hnsw
from retrieval.store.server import ServerStore, collection_params, index_schemas

OLD_STORE = Path(__file__).parent / "data" / "store-layout1.tar.gz"



@pytest.fixture
def old_store(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A store written by the previous release (layout 1; see tests/data/make_store_layout1.py)."""
    with tarfile.open(OLD_STORE) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "images", np.load(tmp_path / "vectors.npy")


def _paths(hits) -> set[str]:
    return {h.payload["path"] for h in hits}


def _all(store) -> dict[str, dict]:
    return {pid: p for pid, p in store.payloads(["path", "taken_ts", "camera_make", "camera_model", "ancestors"])}


def _check_filters(store, vectors: np.ndarray) -> None:
    """Every filter returns exactly the points whose payload satisfies it (compared with the payloads)."""
    points = _all(store)
    cases = [
        (SearchFilter(folder="/lib/2021"), lambda p: p["path"].startswith("/lib/2021/")),
        (SearchFilter(folder="/lib/202"), lambda p: p["path"].startswith("/lib/202/")),  # a prefix of a name: none
        (SearchFilter(folder="/"), lambda p: True),
        (SearchFilter(after=10.0, before=20.0), lambda p: 10.0 <= p.get("taken_ts", -1) < 20.0),
        (SearchFilter(camera="Nikon"), lambda p: "Nikon" in (p.get("camera_make"), p.get("camera_model"))),
        (SearchFilter(camera="M2"), lambda p: "M2" in (p.get("camera_make"), p.get("camera_model"))),
        (SearchFilter(folder="/lib/2020/a", camera="Canon"),
         lambda p: p["path"].startswith("/lib/2020/a/") and p.get("camera_make") == "Canon"),
    ]
    for where, wanted in cases:
        expected = {p["path"] for p in points.values() if wanted(p)}
        assert _paths(store.query(vectors[0], 1000, where)) == expected, where


def _exact_order(store, vectors: np.ndarray, query: np.ndarray, k: int) -> list[str]:
    got = store.points(list(_all(store)))
    ids = list(got)
    stored = np.stack([got[i][0] for i in ids])
    return [ids[i] for i in np.argsort(-(stored @ query))[:k]]


def test_a_store_of_the_previous_release_opens_searches_and_ingests_unchanged(old_store):
    folder, vectors = old_store
    store = EdgeStore(folder)
    try:
        assert store.layout() == 1 and store.count() == 61
        assert json.loads((folder / SHARD_DIR / "edge_config.json").read_text())["vectors"][""].get(
            "datatype", "float32") == "float32"  # its vectors are not rewritten
        top = store.query(vectors[3], 5, SearchFilter())
        assert [h.id for h in top] == _exact_order(store, vectors, vectors[3], 5)
        assert top[0].score == pytest.approx(1.0, abs=1e-5)  # float32, as it was stored
        _check_filters(store, vectors)
        # an ingest into it after the upgrade: the new payloads (no ancestors) get them from the store
        new_id = str(uuid.uuid4())
        store.upsert([new_id], vectors[5:6], [{"path": "/lib/2021/new/n.jpg", "hash": "hn"}])
        assert store.points([new_id])[new_id][1]["ancestors"] == ["/", "/lib", "/lib/2021", "/lib/2021/new"]
        assert new_id in {h.id for h in store.query(vectors[5], 100, SearchFilter(folder="/lib/2021"))}
        store.set_root("/lib")
        assert store.root_counts() == {"/lib": 62}
        _check_filters(store, vectors)
    finally:
        store.close()


def test_rebuild_rewrites_an_old_store_in_the_new_layout_with_the_same_points(old_store):
    folder, vectors = old_store
    store = EdgeStore(folder, config=IndexConfig(index_threshold=10, segment_points=1000))
    try:
        before_ids = set(_all(store))
        before = {i: [h.id for h in store.query(vectors[i], 10, SearchFilter())] for i in range(0, 60, 7)}
        assert store.rebuild() == 61
        assert store.layout() == LAYOUT == 2 and set(_all(store)) == before_ids
        assert not (folder / NEW_DIR).exists() and not (folder / OLD_DIR).exists()
        config = json.loads((folder / SHARD_DIR / "edge_config.json").read_text())
        assert config["vectors"][""]["datatype"] == "float16" and config["hnsw_config"]["m"] == 16
        assert all("ancestors" not in p for p in _all(store).values())
        assert store.unindexed() == 0
        for i, ids in before.items():
            assert [h.id for h in store.query(vectors[i], 10, SearchFilter())] == ids
        _check_filters(store, vectors)
    finally:
        store.close()
    reopened = EdgeStore(folder)
    assert reopened.layout() == 2 and reopened.count() == 61 and reopened.meta() == CollectionMeta("m", "", 16)
    reopened.close()


def test_a_rebuild_interrupted_before_or_during_its_switch_loses_nothing(old_store, tmp_path):
    folder, vectors = old_store
    done = tmp_path / "done"
    shutil.copytree(folder, done)
    rebuilt = EdgeStore(done)
    rebuilt.rebuild()
    rebuilt.close()
    # killed while copying: a partial shard.new beside the untouched old shard
    shutil.copytree(done / SHARD_DIR, folder / NEW_DIR)
    store = EdgeStore(folder)
    assert store.layout() == 1 and store.count() == 61 and (folder / NEW_DIR).exists()
    assert store.rebuild() == 61 and store.layout() == 2
    store.close()
    # killed between the two renames of the switch: shard.old and the verified shard.new, no shard
    shutil.rmtree(folder)
    shutil.copytree(old_store[0].parent / "done", folder)
    (folder / SHARD_DIR).rename(folder / NEW_DIR)
    with tarfile.open(OLD_STORE) as tar:
        tar.extractall(tmp_path / "again", filter="data")
    shutil.copytree(tmp_path / "again" / "images" / SHARD_DIR, folder / OLD_DIR)
    store = EdgeStore(folder)
    assert store.layout() == 2 and store.count() == 61
    assert not (folder / NEW_DIR).exists() and not (folder / OLD_DIR).exists()
    _check_filters(store, vectors)
    store.close()


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, dim)).astype(np.float32)
    vectors = centers[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


BULK = IndexConfig(m=16, ef_construct=64, full_scan_threshold=1, index_threshold=500, segment_points=1000)


def _bulk_load(store: EdgeStore, vectors: np.ndarray, start: int = 0) -> list[str]:
    ids = [str(uuid.UUID(int=i + 1)) for i in range(start, start + len(vectors))]
    for lo in range(0, len(vectors), 256):
        store.upsert(ids[lo:lo + 256], vectors[lo:lo + 256],
                     [{"path": f"/p/{i % 7}/{i}.jpg", "hash": f"h{i}", "taken_ts": float(i)}
                      for i in range(start + lo, start + min(lo + 256, len(vectors)))])
    return ids


def _graph_segments(shard: Path) -> list[int]:
    """Per segment folder with an HNSW graph of real links (m > 0): the bytes of its links file."""
    sizes = []
    for segment in (shard / "segments").iterdir():
        config = json.loads((segment / "segment.json").read_text())["config"]["vector_data"][""]["index"]
        if config["type"] == "hnsw" and config["options"]["m"] > 0:
            sizes.append(sum(f.stat().st_size for f in (segment / "vector_index").glob("links*")))
    return sizes


def test_a_large_load_seals_each_full_segment_with_its_graph_and_gives_the_exact_top10(tmp_path):
    vectors = _clustered(4000, 32, 1)
    store = EdgeStore(tmp_path / "s", hnsw_ef=256, config=BULK)
    store.create(CollectionMeta("m", "", 32))
    ids = _bulk_load(store, vectors)
    shard = tmp_path / "s" / SHARD_DIR
    # every 1000 points (4 batches of 256) a segment was sealed with its graph; the rest is appendable
    assert len(_graph_segments(shard)) == 3 and store.unindexed() == 4000 - 3 * 1024
    assert json.loads((shard / "edge_config.json").read_text())["hnsw_config"]["m"] == 16  # never m = 0
    assert not (shard / BULK_FILE).exists()
    stored = vectors.astype(np.float16).astype(np.float32)  # what the store keeps
    store.optimize()
    assert store.unindexed() == 0 and len(_graph_segments(shard)) == 4
    rng = np.random.default_rng(2)
    overlap = []
    for q in rng.integers(0, 4000, 20):
        query = vectors[q] + 0.05 * rng.standard_normal(32).astype(np.float32)
        query /= np.linalg.norm(query)
        exact = [ids[i] for i in np.argsort(-(stored @ query))[:10]]
        assert [h.id for h in store.query(query, 10, SearchFilter())] == exact
        # filtered, through the graph (full_scan_threshold 1): only matching points, nearly all of the best
        in_folder = [ids[i] for i in np.argsort(-(stored @ query)) if i % 7 == 2][:10]
        found = store.query(query, 10, SearchFilter(folder="/p/2"))
        assert all(h.payload["path"].startswith("/p/2/") for h in found)
        overlap.append(len({h.id for h in found} & set(in_folder)) / 10)
    assert np.mean(overlap) >= 0.9  # a filtered graph walk is approximate (Qdrant's filterable HNSW)
    store.close()


def test_a_load_smaller_than_a_segment_stays_appendable_and_an_interrupted_one_counts_on_reopen(tmp_path):
    vectors = _clustered(1500, 32, 3)
    store = EdgeStore(tmp_path / "s", hnsw_ef=256, config=BULK)
    store.create(CollectionMeta("m", "", 32))
    ids = _bulk_load(store, vectors[:768])
    shard = tmp_path / "s" / SHARD_DIR
    assert _graph_segments(shard) == [] and store.unindexed() == 768  # searched exactly meanwhile
    stored = vectors[:768].astype(np.float16).astype(np.float32)
    assert [h.id for h in store.query(vectors[5], 10, SearchFilter())] == [
        ids[i] for i in np.argsort(-(stored @ vectors[5]))[:10]]
    store.close()  # no optimize(): as if the ingest had died
    store = EdgeStore(tmp_path / "s", config=BULK)
    _bulk_load(store, vectors[768:], start=768)  # its first batch makes 768 + 256 >= 1000: sealed then
    assert len(_graph_segments(shard)) == 1 and store.unindexed() == 1500 - 1024 and store.count() == 1500
    store.close()


def test_a_store_seals_at_its_own_segment_size_whatever_the_settings_say_now(tmp_path):
    vectors = _clustered(1536, 32, 5)
    made = EdgeStore(tmp_path / "s", config=dataclasses.replace(BULK, segment_points=2000))
    made.create(CollectionMeta("m", "", 32))
    made.close()
    store = EdgeStore(tmp_path / "s", config=BULK)  # [store] segment_points is 1000 now
    _bulk_load(store, vectors)
    assert _graph_segments(tmp_path / "s" / SHARD_DIR) == [] and store.unindexed() == 1536  # no seal under 2000
    store.close()


def test_a_bulk_load_of_the_previous_release_that_died_gets_its_graph_from_the_next_ingest(tmp_path):
    vectors = _clustered(2500, 32, 3)
    store = EdgeStore(tmp_path / "s", config=BULK)
    store.create(CollectionMeta("m", "", 32))
    shard = tmp_path / "s" / SHARD_DIR
    # what that release left: bulk.json with the real HNSW settings, the shard reopened with m = 0, sealed
    hnsw = json.loads((shard / "edge_config.json").read_text())["hnsw_config"]
    (shard / BULK_FILE).write_text(json.dumps(hnsw))
    store._reload(_with_hnsw(shard, {**hnsw, "m": 0}))
    store._seal_every = 10**9
    _bulk_load(store, vectors)
    store.shard.flush()
    store.shard.optimize()  # m = 0: sealed segments without a graph
    store.close()
    store = EdgeStore(tmp_path / "s", config=BULK)
    assert json.loads((shard / "edge_config.json").read_text())["hnsw_config"]["m"] == 16  # restored at open
    assert store.unindexed() == 2500 and store.count() == 2500 and _graph_segments(shard) == []
    store.optimize()
    assert store.unindexed() == 0 and not (shard / BULK_FILE).exists() and _graph_segments(shard)
    store.close()


def test_the_server_gets_the_new_layout_and_an_old_collection_keeps_its_own(tmp_path):
    params = collection_params(CollectionMeta("m", "", 512), IndexConfig())
    assert params["vectors_config"].datatype == models.Datatype.FLOAT16
    assert params["optimizers_config"].max_segment_size == 100_000 * 512 * 2 // 1024
    assert params["hnsw_config"].m == 16 and params["metadata"]["layout"] == LAYOUT
    schemas = dict(index_schemas())
    assert "ancestors" not in schemas and schemas["path"].prefix is True
    assert all(s.on_disk and s.enable_hnsw is False for s in schemas.values())
    # a collection made by the previous release: ancestors indexed, payloads with ancestors
    old = ServerStore("t", path=str(tmp_path / "ql"))
    old.client.create_collection("t", vectors_config=models.VectorParams(size=16, distance=models.Distance.COSINE),
                                 metadata=CollectionMeta("m", "", 16).as_dict())
    old.client.create_payload_index("t", "ancestors", models.PayloadSchemaType.KEYWORD)
    old.close()
    store = ServerStore("t", path=str(tmp_path / "ql"))
    assert store.meta() == CollectionMeta("m", "", 16) and store.layout() == 1
    vectors = _clustered(3, 16, 4)
    store.upsert(["00000000-0000-0000-0000-000000000001"], vectors[:1], [{"path": "/a/b/c.jpg"}])
    hit = store.query(vectors[0], 5, SearchFilter(folder="/a"))
    assert [h.payload["ancestors"] for h in hit] == [["/", "/a", "/a/b"]]
    store.close()
    new = ServerStore("n", path=str(tmp_path / "ql2"))
    new.create(CollectionMeta("m", "", 16))
    new.upsert(["00000000-0000-0000-0000-000000000001"], vectors[:1], [{"path": "/a/b/c.jpg", "ancestors": ["x"]}])
    assert new.layout() == 2
    hit = new.query(vectors[0], 5, SearchFilter(folder="/a"))
    assert len(hit) == 1 and "ancestors" not in hit[0].payload
    assert new.query(vectors[0], 5, SearchFilter(folder="/a/b/c")) == []
    new.close()


def _as_layout1(collection: Path) -> None:
    """Rewrite an embedded collection the way the previous release stored it (float32 vectors, ancestors
    lists indexed as keywords, main's shard settings at 33f8e19), keeping its points and metadata."""
    import qdrant_edge as qe

    from retrieval.store.base import folder_chain

    store = EdgeStore(collection)
    records = list(store.points([pid for pid, _ in store.payloads(["path"])]).items())
    dim, meta = store.meta().dim, store.meta()
    store.close()
    shutil.rmtree(collection / SHARD_DIR)
    shard = qe.EdgeShard.create(str(collection / SHARD_DIR), qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
        hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10000),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=20000 * dim * 4 // 1024)))
    for field in ("path", "ancestors", "hash", "camera_make", "camera_model", "root"):
        shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
    shard.update(qe.UpdateOperation.create_field_index("taken_ts", qe.PayloadSchemaType.Float))
    shard.update(qe.UpdateOperation.upsert_points([
        qe.Point(pid, vec.tolist(), {**payload, "ancestors": folder_chain(payload["path"])})
        for pid, (vec, payload) in records]))
    shard.close()
    (collection / SHARD_DIR / "clipdex.json").write_text(json.dumps(meta.as_dict()))


def test_status_names_an_old_layout_and_clipdex_rebuild_upgrades_it(clipdex, tmp_path, forty):
    assert clipdex("ingest", forty, "--json").json()["indexed"] == 40
    assert clipdex("status", "--json").json()["layout"] == LAYOUT
    _as_layout1(tmp_path / "store" / "test")
    status = clipdex("status")
    assert status.code == 0 and "layout      1" in status.out and "clipdex rebuild" in status.out
    query = ["search", "a picture", "--folder", str(forty), "--limit", "5", "--json"]
    before = [r["path"] for r in clipdex(*query).json()]
    assert len(before) == 5 and all(p.startswith(f"{forty}/") for p in before)
    done = clipdex("rebuild", "--json")
    assert done.code == 0, done.err
    assert done.json() == {"points": 40, "layout_before": 1, "layout": LAYOUT}
    assert clipdex("status", "--json").json()["layout"] == LAYOUT and "layout " not in clipdex("status").out
    assert [r["path"] for r in clipdex(*query).json()] == before
    again = clipdex("ingest", forty, "--json").json()
    assert again["unchanged"] == 40 and again["indexed"] == 0 and again["deleted"] == 0


@pytest.mark.parametrize("shortlist", [False, True], ids=["acorn-walk", "shortlist"])
def test_filtered_graph_walks_at_the_filtered_ef_find_nearly_all_of_the_exact_top10(tmp_path, monkeypatch, shortlist):
    """Filtered searches walk the graph with ACORN at ``FILTERED_EF`` (not ``hnsw_ef``), or take a broad
    filter's answer from the unfiltered graph's shortlist (``shortlist``: on for this small store too): a camera
    holding a quarter of the points and a folder holding a fifth still give recall@10 >= 0.99 against an exact
    filtered search, and only matching points (full_scan_threshold 1: always the graph, never the payload
    index). A camera found only far from the query (the shortlist holds none of it) falls back to the walk."""
    from retrieval.store import edge
    from retrieval.store.edge import FILTERED_EF

    if shortlist:
        monkeypatch.setattr(edge, "SHORTLIST_MIN_POINTS", 0)
    else:
        monkeypatch.setattr(edge, "SHORTLIST_SELECTIVITY", 2.0)  # no filter passes twice the points
    vectors = _clustered(4000, 32, 3)
    store = EdgeStore(tmp_path / "s", config=BULK)  # hnsw_ef 128: filtered walks run at FILTERED_EF
    assert store.hnsw_ef > FILTERED_EF
    store.create(CollectionMeta("m", "", 32))
    ids = [str(uuid.UUID(int=i + 1)) for i in range(len(vectors))]
    cameras = ("Apple", "Canon", "NIKON", "SONY")
    # the model only cameras of the points nearest to vector 0 carry: no query far from them shortlists one
    near_first = set(np.argsort(-(vectors @ vectors[0]))[:400].tolist())
    for lo in range(0, len(vectors), 256):
        store.upsert(ids[lo:lo + 256], vectors[lo:lo + 256],
                     [{"path": f"/p/{i % 5}/{i}.jpg", "hash": f"h{i}", "camera_make": cameras[i % 4],
                       "camera_model": "Leica M" if i in near_first else "other"}
                      for i in range(lo, min(lo + 256, len(vectors)))])
    store.optimize()
    stored = vectors.astype(np.float16).astype(np.float32)
    rng = np.random.default_rng(4)
    far = np.argsort(vectors @ vectors[0])[:30]  # queries from the points least like vector 0
    cases = {"camera": (SearchFilter(camera="Canon"), np.arange(4000) % 4 == 1, rng.integers(0, 4000, 30)),
             "folder": (SearchFilter(folder="/p/2"), np.arange(4000) % 5 == 2, rng.integers(0, 4000, 30)),
             "far camera": (SearchFilter(camera="Leica M"), np.isin(np.arange(4000), list(near_first)), far)}
    for name, (where, mask, picks) in cases.items():
        recall = []
        for q in picks:
            query = vectors[q] + 0.05 * rng.standard_normal(32).astype(np.float32)
            query /= np.linalg.norm(query)
            scores = np.where(mask, stored @ query, -np.inf)
            exact = {ids[i] for i in np.argsort(-scores)[:10]}
            found = store.query(query, 10, where)
            assert len(found) == 10 and all(mask[int(uuid.UUID(h.id)) - 1] for h in found), name
            recall.append(len({h.id for h in found} & exact) / 10)
        assert np.mean(recall) >= 0.99, (name, np.mean(recall))
    store.close()
