"""The adaptive relevance cutoff (retrieval.search.cutoff) on tiny data the test makes: a tail of vectors near
the query among unrelated ones, through the real tiny CLIP and the real embedded store."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from retrieval import Index, load_settings
from retrieval.search import cutoff
from retrieval.store import CollectionMeta
from tests.conftest import write_config


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def library(query: np.ndarray, relevant: int, other: int, seed: int = 0) -> np.ndarray:
    """``relevant`` vectors close to ``query`` followed by ``other`` unrelated ones."""
    rng = np.random.default_rng(seed)
    near = unit(query + rng.normal(0, 0.6 / np.sqrt(len(query)), (relevant, len(query))))
    far = unit(rng.normal(0, 1, (other, len(query))))
    return np.vstack([near, far])


@pytest.mark.parametrize("method", sorted(cutoff.METHODS))
def test_every_method_returns_a_threshold_within_the_scores(method: str) -> None:
    q = unit(np.random.default_rng(1).normal(0, 1, 32))
    scores = library(q, 30, 500) @ q
    t = cutoff.METHODS[method](scores)
    assert np.isfinite(t) and scores.min() - 1e-6 <= t <= scores.max() + 1e-6


def test_log_distance_is_a_monotone_map_the_threshold_comes_back_through() -> None:
    scores = np.sort(np.random.default_rng(4).uniform(-0.9, 0.999, 200))
    z = cutoff.log_distance(scores)
    assert np.all(np.diff(z) > 0)  # order kept: a cut there is the same cut here
    assert np.allclose([cutoff.from_log_distance(v) for v in z], scores, atol=1e-9)


@pytest.mark.parametrize("method", ["mixture_f1_3_log", "tail_f1_75_log"])
def test_the_log_scale_methods_separate_the_tail(method: str) -> None:
    q = unit(np.random.default_rng(5).normal(0, 1, 32))
    vectors = library(q, 40, 800, seed=5)
    kept = np.nonzero(vectors @ q >= cutoff.threshold(q, vectors, method))[0]
    assert set(range(40)) <= set(kept) and len(kept) < 60


def test_the_default_separates_the_tail() -> None:
    q = unit(np.random.default_rng(2).normal(0, 1, 32))
    vectors = library(q, 40, 800)
    t = cutoff.threshold(q, vectors)
    kept = np.nonzero(vectors @ q >= t)[0]
    assert set(range(40)) <= set(kept) and len(kept) < 60  # every near vector, few others
    assert cutoff.threshold(q, vectors[:10]) is None  # too small a sample to say


def test_search_relevant_returns_only_the_tail(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = load_settings(write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store"))
    with Index.open(settings, create=True) as index:
        ident = index.encoder.identity
        index.store.create(CollectionMeta(ident.name, ident.pretrained, ident.dim, precision=index.encoder.precision,
                                          weights=ident.weights))
        q = index.query_vector(text="a red sneaker")
        vectors = library(q, 25, 600, seed=3)
        ids = [str(uuid.UUID(int=i + 1)) for i in range(len(vectors))]
        index.store.upsert(ids, vectors, [{"path": f"/lib/{i}.jpg"} for i in range(len(vectors))])
        everything = index.search(text="a red sneaker", limit=1000)
        relevant = index.search(text="a red sneaker", limit=1000, relevant=True)
        assert len(everything) == len(vectors)
        assert {h.payload["path"] for h in relevant} >= {f"/lib/{i}.jpg" for i in range(25)}
        assert len(relevant) < 40
        assert [h.id for h in relevant] == [h.id for h in everything[:len(relevant)]]  # a cut, not a re-ranking
        auto = Index(settings.with_overrides(search={"cutoff": "auto"}), index.store, index.encoder)
        assert [h.id for h in auto.search(text="a red sneaker", limit=1000)] == [h.id for h in relevant]
        assert len(auto.search(text="a red sneaker", limit=1000, relevant=False)) == len(vectors)
