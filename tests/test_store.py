"""Both store implementations behave the same: the embedded engine and qdrant-client (local mode)."""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import models

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
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)  # the embedded store keeps float16 vectors
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
    np.testing.assert_allclose(got[ids[1]][0], vectors[1], atol=1e-3)  # float16 in the embedded store
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


# -- metadata file lost or damaged: points are never dropped ----------------------------------------


def _meta_file(tmp_path: Path) -> Path:
    return tmp_path / "store" / "test" / "clipdex.json"  # tests/conftest.py: store path + collection "test"


def test_lost_or_damaged_metadata_file_is_rebuilt_and_no_point_is_dropped(clipdex, tmp_path, forty):
    assert clipdex("ingest", forty, "--json").json()["indexed"] == 40
    meta_file = _meta_file(tmp_path)
    original = meta_file.read_text()
    for damage in (meta_file.unlink, lambda: meta_file.write_text("{\"model\": "),
                   lambda: meta_file.write_text('{"model": "x"}'), lambda: meta_file.write_bytes(b"\xff\xfe\x00")):
        damage()
        status = clipdex("status", "--json")
        assert status.code == 0, status.err
        assert status.json()["points"] == 40 and status.json()["dim"] == 32
        assert json.loads(meta_file.read_text()) == json.loads(original)  # rebuilt from the copy in the shard
    meta_file.unlink()
    again = clipdex("ingest", forty, "--json").json()
    assert again["deleted"] == 0 and again["indexed"] == 0 and again["unchanged"] == 40


@pytest.mark.parametrize("damage", ["missing", "bad json"])
def test_metadata_without_any_copy_refuses_in_one_line_and_keeps_the_points(clipdex, tmp_path, forty, damage):
    assert clipdex("ingest", forty, "--json").code == 0
    meta_file = _meta_file(tmp_path)
    original = meta_file.read_text()
    (meta_file.parent / "shard" / "clipdex.json").unlink()  # a store written before the copy existed
    meta_file.unlink() if damage == "missing" else meta_file.write_text("{oops")
    for args in (("status",), ("ingest", forty), ("search", "a shoe")):
        result = clipdex(*args)
        lines = result.err.strip().splitlines()
        assert result.code == 1 and len(lines) == 1, result.err
        assert "internal error" not in result.err and "40 points" in result.err and "clipdex.json" in result.err
        assert "kept" in result.err
    line = result.err.strip().split(f"write this line to {meta_file}: ", 1)[1].split("; else restore", 1)[0]
    assert json.loads(line) == json.loads(original)  # the configured model's metadata, exactly
    meta_file.write_text(line)  # the recovery the message describes
    assert clipdex("status", "--json").json()["points"] == 40
    assert clipdex("ingest", forty, "--json").json()["unchanged"] == 40


def test_an_old_store_gets_its_metadata_copy_on_the_next_open(tmp_path: Path):
    first = EdgeStore(tmp_path / "s")
    first.create(CollectionMeta("m", "w", 8))
    first.close()
    (tmp_path / "s" / "shard" / "clipdex.json").unlink()
    EdgeStore(tmp_path / "s").close()
    (tmp_path / "s" / "clipdex.json").unlink()
    again = EdgeStore(tmp_path / "s")
    assert again.meta() == CollectionMeta("m", "w", 8)
    again.close()


def test_a_store_made_before_a_payload_index_existed_gets_it_on_the_next_open(tmp_path: Path):
    """Stores written by an earlier clipdex lack the `root` index that status facets on."""
    import qdrant_edge as qe

    first = EdgeStore(tmp_path / "s")
    first.create(CollectionMeta("m", "w", 8))
    ids, vectors, payloads = _points(6)
    first.upsert(ids, vectors, [p | {"root": "/r"} for p in payloads])
    first.shard.update(qe.UpdateOperation.delete_field_index("root"))  # as an older store was made
    first.close()
    again = EdgeStore(tmp_path / "s")
    assert "root" in again.shard.info().payload_schema
    assert again.root_counts() == {"/r": 6} and again.count() == 6
    again.close()


def test_a_half_made_empty_store_is_recreated_but_a_full_one_never(tmp_path: Path):
    first = EdgeStore(tmp_path / "s")
    first.create(CollectionMeta("m", "", 8))
    first.close()
    for name in ("clipdex.json", "shard/clipdex.json"):
        (tmp_path / "s" / name).unlink()  # creation died before its metadata was written: no points yet
    empty = EdgeStore(tmp_path / "s")
    assert empty.meta() is None
    empty.create(CollectionMeta("m", "", 8))
    ids, vectors, payloads = _points(3)
    empty.upsert(ids, vectors, payloads)
    empty.close()
    for name in ("clipdex.json", "shard/clipdex.json"):
        (tmp_path / "s" / name).unlink()
    with pytest.raises(ClipdexError, match="3 points"):
        EdgeStore(tmp_path / "s")


def test_server_collection_with_damaged_metadata_is_one_clear_error(tmp_path: Path):
    store = ServerStore("t", path=str(tmp_path / "ql"))
    store.client.create_collection("t", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE),
                                   metadata={"model": "m", "dim": "eight"})
    store.close()
    again = ServerStore("t", path=str(tmp_path / "ql"))
    with pytest.raises(ClipdexError, match="damaged"):
        again.meta()
    again.close()


# -- one opener at a time, and it says who it is ----------------------------------------------------

def test_second_opener_is_told_who_holds_the_store(tmp_path: Path):
    folder = tmp_path / "s"
    folder.mkdir()
    holder = EdgeStore(folder, owner="clipdex ingest photos/")
    with pytest.raises(ClipdexError, match=rf"in use by another clipdex process \(pid {os.getpid()}: "
                                           r"clipdex ingest photos/\)"):
        EdgeStore(folder)
    holder.close()
    EdgeStore(folder).close()  # released on close


def test_a_running_server_is_named_with_the_way_to_ingest_while_serving(tmp_path: Path, tiny_model_dir: Path):
    from retrieval import load_settings
    from retrieval.index import Index
    from retrieval.store.lock import serve_owner
    from tests.conftest import write_config

    settings = load_settings(write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store"))
    (tmp_path / "store" / "test").mkdir(parents=True)
    with Index.open(settings, owner=serve_owner("http://127.0.0.1:8765/")), pytest.raises(ClipdexError) as err:
        Index.open(settings, create=True)
    message = str(err.value)
    assert "clipdex serve at http://127.0.0.1:8765/" in message and "clipdex serve --watch DIR" in message
    assert "\n" not in message


def test_two_first_time_openers_race_cleanly(tmp_path: Path):
    """Both try to create a new store at once: one wins, the other gets one line; the store is whole."""
    from retrieval.settings import Settings
    from retrieval.store import open_store

    def first_ingest(settings: Settings, barrier: threading.Barrier, outcomes: list[object]) -> None:
        barrier.wait()
        try:
            store = open_store(settings, create=True)
            if store.meta() is None:
                store.create(CollectionMeta("m", "", 8))
            store.upsert(*_points(4))
            store.close()
            outcomes.append("ok")
        except ClipdexError as exc:
            outcomes.append(exc)

    for round_ in range(5):
        settings = Settings().with_overrides(store={"path": str(tmp_path / f"r{round_}"), "collection": "c"})
        barrier = threading.Barrier(2)
        outcomes: list[object] = []
        threads = [threading.Thread(target=first_ingest, args=(settings, barrier, outcomes)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert "ok" in outcomes
        assert all(o == "ok" or "in use" in str(o) for o in outcomes), outcomes
        store = open_store(settings)
        assert store.meta() == CollectionMeta("m", "", 8) and store.count() == 4
        store.close()


def test_server_collection_created_meanwhile_by_another_client(tmp_path: Path):
    """Two first-time ingests against one Qdrant server: the second create() finds the first one's collection."""
    store = ServerStore("t", path=str(tmp_path / "ql"))
    assert store.meta() is None
    other = CollectionMeta("m", "", 8)  # what the other client created in between
    store.client.create_collection("t", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE),
                                   metadata=other.as_dict())
    store.create(CollectionMeta("m", "", 8))  # the same model: it just uses the collection
    assert store.meta() == other
    with pytest.raises(ClipdexError, match="was created meanwhile"):
        store.create(CollectionMeta("another", "", 16))
    store.close()
