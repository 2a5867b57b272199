"""The real CLI on real image files: counts, incremental re-runs, deletion sync and searches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval import load_settings
from retrieval.index import Index
from retrieval.search.vector import combine
from tests.images import write_library


@pytest.fixture
def library(tmp_path: Path) -> dict[str, list[Path]]:
    return write_library(tmp_path / "photos")


def test_ingest_reports_counts_and_failures(clipdex, library):
    root = library["good"][0].parent.parent
    result = clipdex("ingest", root, "--json")
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["indexed"] == len(library["good"])
    assert summary["unchanged"] == summary["deleted"] == 0
    assert sorted(f["path"] for f in summary["failed"]) == sorted(str(p) for p in library["broken"])
    assert all(f["error"] for f in summary["failed"])
    status = clipdex("status", "--json").json()
    assert status["points"] == len(library["good"])
    assert status["dim"] == 32 and status["collection"] == "test"


def test_rerun_embeds_nothing_and_deletions_sync(clipdex, library):
    root = library["good"][0].parent.parent
    assert clipdex("ingest", root, "--json").code == 0
    again = clipdex("ingest", root, "--json").json()
    assert again["indexed"] == 0 and again["unchanged"] == len(library["good"])
    gone = library["good"][1]
    gone.unlink()
    synced = clipdex("ingest", root, "--json").json()
    assert synced["deleted"] == 1 and synced["indexed"] == 0
    assert clipdex("status", "--json").json()["points"] == len(library["good"]) - 1
    paths = [h["path"] for h in clipdex("search", "--image", library["good"][0], "--limit", "50", "--json").json()]
    assert str(gone) not in paths


def test_each_image_finds_itself_first(clipdex, library):
    root = library["good"][0].parent.parent
    assert clipdex("ingest", root, "--json").code == 0
    for image in library["good"]:
        hits = clipdex("search", "--image", image, "--limit", "3", "--json").json()
        assert hits[0]["path"] == str(image)
        assert hits[0]["score"] >= 0.99
        assert {"size", "mtime", "width", "height", "format", "folder"} <= set(hits[0])


def test_rotated_photo_is_stored_with_upright_size(clipdex, library):
    root = library["good"][0].parent.parent
    clipdex("ingest", root, "--json")
    rotated = next(p for p in library["good"] if p.name == "rotated.jpg")
    hit = clipdex("search", "--image", rotated, "--limit", "1", "--json").json()[0]
    assert hit["path"] == str(rotated)
    assert hit["format"] == "JPEG"
    with Image.open(rotated) as stored:
        assert stored.size == (64, 96)  # the file holds the picture sideways, tagged "rotate to view"
    assert (hit["width"], hit["height"]) == (96, 64)  # the size a viewer shows


def _expected_order(config: Path, query: np.ndarray) -> list[tuple[str, float]]:
    with Index.open(load_settings(config)) as index:
        ids = [pid for pid, _ in index.store.payloads(["path"])]
        points = index.store.points(ids)
    scored = [(payload["path"], float(vector @ query)) for vector, payload in points.values()]
    return sorted(scored, key=lambda item: -item[1])


def _assert_same_ranking(hits: list[dict], expected: list[tuple[str, float]]) -> None:
    assert [round(h["score"], 4) for h in hits] == pytest.approx([round(s, 4) for _, s in expected], abs=2e-4)
    for hit, (path, score) in zip(hits, expected, strict=True):
        if hit["path"] != path:  # only a tie may swap places
            assert abs(hit["score"] - score) < 1e-4


def test_combined_and_negative_queries_follow_the_vectors(clipdex, config, library):
    root = library["good"][0].parent.parent
    clipdex("ingest", root, "--json")
    image = library["good"][2]
    with Index.open(load_settings(config)) as index:
        enc = index.encoder
        text_vec, neg_vec = enc.encode_texts(["a red square", "a blue circle"])
        image_vec = index.query_vector(image=image)
    n = len(library["good"])
    combined = clipdex("search", "a red square", "--image", image, "--text-weight", "0.3", "--limit", n,
                       "--json").json()
    _assert_same_ranking(combined, _expected_order(config, combine(text_vec, image_vec, text_weight=0.3)))
    plain = clipdex("search", "a red square", "--limit", n, "--json").json()
    negated = clipdex("search", "a red square", "--negative", "a blue circle", "--negative-weight", "1.0",
                      "--limit", n, "--json").json()
    _assert_same_ranking(negated, _expected_order(config, combine(text_vec, None, neg_vec[None],
                                                                    negative_weight=1.0)))
    assert [h["score"] for h in plain] != [h["score"] for h in negated]


def test_folder_filter_returns_only_that_subtree(clipdex, library):
    root = library["good"][0].parent.parent
    clipdex("ingest", root, "--json")
    hits = clipdex("search", "--image", library["good"][3], "--folder", root / "a", "--limit", "50",
                   "--json").json()
    expected = sorted(str(p) for p in library["good"] if (root / "a") in p.parents)
    assert sorted(h["path"] for h in hits) == expected
    assert clipdex("search", "x", "--folder", root / "nowhere", "--json").json() == []


def test_min_score_drops_weak_hits(clipdex, library):
    root = library["good"][0].parent.parent
    clipdex("ingest", root, "--json")
    hits = clipdex("search", "--image", library["good"][0], "--min-score", "0.999", "--limit", "50",
                   "--json").json()
    assert hits and all(h["score"] >= 0.999 for h in hits)
    assert hits[0]["path"] == str(library["good"][0])
