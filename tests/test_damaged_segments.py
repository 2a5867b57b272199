"""Damaged segment files of the embedded store (issue 26, case 14), on real qdrant-edge stores.

Before: a truncated ``id_tracker.versions`` or an ``id_tracker.deleted`` full of ones lost points while
``status --check`` said "damaged 0"; ``id_tracker.mappings`` full of ones made every command abort with a
Rust panic; a damaged ``graph.bin`` or ``links_compressed.bin`` kept the whole store from opening. Now a
damaged segment is set aside (moved, never deleted), the store opens, ``status --check`` counts the points
the store's records say it holds against those the engine serves, and the next ingest embeds the rest.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from retrieval.store.base import CollectionMeta, IndexConfig, SearchFilter
from retrieval.store.edge import EdgeStore
from retrieval.store.segments import DAMAGED_DIR, LEDGER, read_ledger

DIM = 32
POINTS = 5300  # five sealed 1,000-point segments and 300 points in the segment still being written
SEGMENT = 1000


def _sealed(store: Path) -> list[Path]:
    return sorted(p for p in (store / "shard" / "segments").iterdir() if (p / "id_tracker.versions").exists())


def _appendable(store: Path) -> Path:
    (segment,) = [p for p in (store / "shard" / "segments").glob("*/mutable_id_tracker.versions")
                  if p.stat().st_size]
    return segment.parent


def _overwrite(file: Path, start: int = 0, length: int | None = None) -> None:
    data = bytearray(file.read_bytes())
    end = len(data) if length is None else start + length
    data[start:end] = b"\xff" * (end - start)
    file.write_bytes(bytes(data))


def _truncate(file: Path) -> None:
    with file.open("r+b") as fh:
        fh.truncate(file.stat().st_size // 3)


DAMAGES = {
    "versions cut short": lambda seg: _truncate(seg / "id_tracker.versions"),
    "deleted flags all ones": lambda seg: _overwrite(seg / "id_tracker.deleted"),
    "deleted flags half ones": lambda seg: _overwrite(seg / "id_tracker.deleted", 0, 64),
    "mappings all ones": lambda seg: _overwrite(seg / "id_tracker.mappings"),
    "mappings cut short": lambda seg: _truncate(seg / "id_tracker.mappings"),
    "graph.bin all ones": lambda seg: _overwrite(seg / "vector_index" / "graph.bin"),
    "links_compressed.bin all ones": lambda seg: _overwrite(seg / "vector_index" / "links_compressed.bin"),
    "links_compressed.bin cut short": lambda seg: _truncate(seg / "vector_index" / "links_compressed.bin"),
    "mutable versions cut short": lambda seg: _truncate(_appendable(seg.parent.parent.parent)
                                                        / "mutable_id_tracker.versions"),
    "mutable mappings cut short": lambda seg: _truncate(_appendable(seg.parent.parent.parent)
                                                        / "mutable_id_tracker.mappings"),
}
SEEN_BY_THE_LEDGER_ONLY = ("deleted flags half ones", "mutable versions cut short", "mutable mappings cut short")
"""Damage whose files look sound: the count against the ledger is what tells."""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], np.ndarray]:
    """5,300 points: 1,000-point sealed segments and 300 unsealed, written through the store as ingest does."""
    folder = tmp_path_factory.mktemp("segments") / "store"
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(POINTS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(POINTS)]
    store = EdgeStore(folder, config=IndexConfig(segment_points=SEGMENT, index_threshold=SEGMENT))
    try:
        store.create(CollectionMeta("m", "", DIM))
        for start in range(0, POINTS, 500):
            store.upsert(ids[start:start + 500], vectors[start:start + 500],
                         [{"path": f"/p/{i}.jpg", "root": "/p"} for i in range(start, min(start + 500, POINTS))])
    finally:
        store.close()
    assert len(_sealed(folder)) == POINTS // SEGMENT and read_ledger(folder) == POINTS
    return folder, ids, vectors


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_segment_never_loses_points_silently(pristine, tmp_path: Path, damage: str,
                                                       capfd: pytest.CaptureFixture[str]):
    source, ids, vectors = pristine
    folder = tmp_path / "store"
    shutil.copytree(source, folder)
    victim = _sealed(folder)[0]
    DAMAGES[damage](victim)
    capfd.readouterr()
    store = EdgeStore(folder)  # opens: no panic, no refusal
    try:
        served = store.count()
        losses = store.losses()
        assert losses["expected"] == POINTS and losses["served"] == served
        assert losses["lost"] == POINTS - served and losses["lost"] <= SEGMENT, losses  # never a silent loss
        if not damage.startswith("mutable"):  # (the write-ahead log may still hold what a mutable tracker lost)
            assert losses["lost"] > 0, losses
        hits = store.query(vectors[-1], 5, SearchFilter())
        assert hits and hits[0].id == ids[-1]  # a healthy segment's point is found
        if damage not in SEEN_BY_THE_LEDGER_ONLY:
            (aside,) = losses["set_aside"]
            moved = Path(aside["segment"])
            assert moved.parent == folder / DAMAGED_DIR and moved.name.endswith(victim.name) and aside["reason"]
            assert not victim.exists() and (moved / "id_tracker.versions").exists()  # moved, never deleted
        # The points it lost are stored again (what the next ingest does for their files): nothing missing.
        present = set(store.points(ids))
        missing = [i for i, pid in enumerate(ids) if pid not in present]
        assert len(missing) == losses["lost"]
        store.upsert([ids[i] for i in missing], vectors[missing],
                     [{"path": f"/p/{i}.jpg", "root": "/p"} for i in missing])
        assert store.count() == POINTS and store.losses()["lost"] == 0
    finally:
        store.close()
    err = capfd.readouterr().err
    assert "panicked" not in err and "Traceback" not in err and "stack backtrace" not in err, err[-2000:]
    again = EdgeStore(folder)
    try:
        assert again.count() == POINTS and again.losses()["lost"] == 0
    finally:
        again.close()


def test_the_ledger_only_falls_before_a_deletion(pristine, tmp_path: Path):
    """Deleting points is no loss: the ledger is lowered first, so ``lost`` stays 0."""
    source, ids, _ = pristine
    folder = tmp_path / "store"
    shutil.copytree(source, folder)
    store = EdgeStore(folder)
    try:
        store.delete(ids[:300])
        assert store.losses() == {"expected": POINTS - 300, "served": POINTS - 300, "lost": 0, "set_aside": []}
    finally:
        store.close()
    assert read_ledger(folder) == POINTS - 300 and (folder / LEDGER).is_file()


@pytest.mark.slow
def test_status_check_counts_and_the_next_ingest_embeds_the_lost_points(clipdex, config: Path, tmp_path: Path):
    """Through the CLI on a real library: a truncated version file of the sealed segment."""
    from retrieval import load_settings
    from tests.images import pattern

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(1100):
        pattern(i, (16, 12)).save(lib / f"{i:04d}.png")
    config.write_text(config.read_text().replace("[store]\n", "[store]\nsegment_points = 1000\n"
                                                 "index_threshold = 1000\n"))
    assert clipdex("ingest", lib).code == 0
    settings = load_settings(config)
    folder = settings.store_path / settings.store.collection
    (victim,) = _sealed(folder)
    _truncate(victim / "id_tracker.versions")
    checked = clipdex("status", "--check", "--json")
    assert checked.code == 1, checked.err
    files = checked.json()["check"]["files"]
    assert files["expected"] == 1100 and files["served"] == 100 and files["lost"] == 1000
    assert "Traceback" not in checked.err and "panicked" not in checked.err
    human = clipdex("status", "--check")
    assert "1,000 lost to damaged store files" in human.out and "set aside" in human.out
    assert clipdex("search", "a photo", "--limit", "3").code == 0
    again = clipdex("ingest", lib, "--json").json()
    assert again["indexed"] == 1000 and again["unchanged"] == 100
    after = clipdex("status", "--check", "--json")
    assert after.code == 0 and after.json()["check"]["files"]["lost"] == 0 and after.json()["points"] == 1100
