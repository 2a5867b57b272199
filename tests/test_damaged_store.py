"""Damaged vectors and truncated vector files: searches stay full, `status --check` finds and marks them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from retrieval import load_settings
from retrieval.index import Index
from retrieval.server import create_app
from retrieval.store.base import CollectionMeta, SearchFilter
from retrieval.store.edge import EdgeStore
from tests.hostile import write_photo
from tests.test_server import serving

DIM = 32


def _vector_file(store: Path) -> Path:
    (chunk,) = store.glob("shard/segments/*/vector_storage/vectors/chunk_0.mmap")
    return chunk


def damage(store: Path, count: int, dim: int, seed: int = 0) -> None:
    """Overwrite the first ``count`` stored vectors (insertion order) with ±1e30, on disk, store closed."""
    vectors = np.memmap(_vector_file(store), dtype=np.float32, mode="r+")
    rng = np.random.default_rng(seed)
    vectors[:count * dim] = rng.choice([-1e30, 1e30], size=count * dim).astype(np.float32)
    vectors.flush()
    del vectors


def test_damaged_points_never_crowd_out_the_top_k(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(300)]
    store = EdgeStore(tmp_path / "s")
    store.create(CollectionMeta("m", "", DIM))
    store.upsert(ids, vectors, [{"path": f"/p/{i}.jpg"} for i in range(300)])
    store.close()
    damage(tmp_path / "s", 100, DIM)
    query = rng.normal(size=DIM).astype(np.float32)
    query /= np.linalg.norm(query)
    store = EdgeStore(tmp_path / "s")
    try:
        stored = store.points(ids)  # which points the damage hit (the file's order is the engine's)
        bad = {i for i, pid in enumerate(ids) if np.linalg.norm(stored[pid][0].astype(np.float64)) > 1e20}
        assert len(bad) == 100
        good = np.array([i for i in range(300) if i not in bad])
        healthy = good[np.argsort(-(vectors[good] @ query))]
        for limit in (20, 1, 5):
            hits = store.query(query, limit, SearchFilter())
            assert [h.id for h in hits] == [ids[i] for i in healthy[:limit]]
            assert all(abs(h.score) <= 1.0 + 1e-3 for h in hits)
        assert len(store.query(query, 250, SearchFilter())) == 200  # everything healthy, and no more
    finally:
        store.close()


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(30):
        write_photo(lib / f"p{i:02d}.png", seed=i, size=(64, 48))
    return lib


def _store_folder(config: Path) -> Path:
    settings = load_settings(config)
    return settings.store_path / settings.store.collection


def test_status_check_marks_damaged_points_and_ingest_embeds_them_again(clipdex, config, library):
    assert clipdex("ingest", library).code == 0
    assert clipdex("status", "--check", "--json").json()["check"]["damaged"] == 0
    damage(_store_folder(config), 10, DIM)
    found = clipdex("search", "a photo", "--limit", "25", "--json")
    assert found.code == 0 and len(found.json()) == 20  # the 20 healthy points, none of the damaged
    checked = clipdex("status", "--check", "--json")
    assert checked.code == 1
    report = checked.json()["check"]
    assert report["checked"] == 30 and report["damaged"] == 10
    assert len({item["path"] for item in report["examples"]}) == 10
    assert all(Path(item["path"]).parent == library and "length" in item["reason"] for item in report["examples"])
    again = clipdex("ingest", library, "--json").json()
    assert again["indexed"] == 10 and again["unchanged"] == 20 and again["deleted"] == 0
    assert clipdex("status", "--check", "--json").json()["check"]["damaged"] == 0
    assert len(clipdex("search", "a photo", "--limit", "30", "--json").json()) == 30


def test_truncated_vector_file_is_a_clear_status_and_one_line_errors(clipdex, config, library):
    assert clipdex("ingest", library).code == 0
    store = _store_folder(config)
    chunk = _vector_file(store)
    with chunk.open("r+b") as fh:
        fh.truncate(1024)  # 8 of its 30 vectors are left
    status = clipdex("status", "--json")
    assert status.code == 0 and any("truncated" in p for p in status.json()["problems"])
    assert "damaged" in clipdex("status").out
    searched = clipdex("search", "a photo", "--limit", "30")
    assert searched.code == 1 and len(searched.err.strip().splitlines()) == 1
    assert "internal error" not in searched.err and "cannot search store" in searched.err
    refused = clipdex("ingest", library)
    assert refused.code == 1 and "damaged" in refused.err and "nothing was written" in refused.err
    assert chunk.stat().st_size == 1024
    with Index.open(load_settings(config)) as index, serving(create_app(index)) as url:
        response = httpx.get(f"{url}/api/search", params={"text": "a photo", "limit": 30}, timeout=30)
        assert response.status_code == 503 and "cannot search store" in response.json()["error"]
        assert httpx.get(f"{url}/api/status", timeout=30).json()["problems"]
    assert json.loads(clipdex("status", "--json").out)["points"] == 30
