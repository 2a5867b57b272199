"""The recognised-text side of both stores (qdrant-edge and qdrant-client, here in its local mode) on the
same points: word filters, BM25 ranking, RRF fusion, OCR bookkeeping and counts agree."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from retrieval.store import CollectionMeta, SearchFilter
from retrieval.store.edge import EdgeStore
from retrieval.store.server import ServerStore

TEXTS = ["PHARMACY open 24h", "Café Lisboa\nPharmacy Lisboa", "Total 42.50", None, "wifi password hunter 2", None]


def fill(store: EdgeStore | ServerStore) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(0, 1, (len(TEXTS), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.create(CollectionMeta("m", "", 8))
    payloads = []
    for i, text in enumerate(TEXTS):
        p = {"path": f"/lib/{i}.jpg", "hash": f"h{i % 5}", "ancestors": ["/", "/lib"]}
        if i < 4:
            p |= {"ocr": "v1", "ocr_text": text}
        payloads.append(p)
    store.upsert([str(uuid.UUID(int=i + 1)) for i in range(len(TEXTS))], vectors, payloads)


@pytest.fixture
def stores(tmp_path: Path):  # noqa: ANN201
    edge, client = EdgeStore(tmp_path / "edge"), ServerStore("t", path=str(tmp_path / "ql"))
    for s in (edge, client):
        fill(s)
    yield edge, client
    edge.close()
    client.close()


def vectors_of(store, hits: list) -> list[np.ndarray]:  # noqa: ANN001
    found = store.points([h.id for h in hits])
    return [np.asarray(found[h.id][0], np.float32) for h in hits]


def paths(hits: list) -> list[str]:  # noqa: ANN001
    return [h.payload["path"] for h in hits]


def test_both_stores_agree(stores: tuple[EdgeStore, ServerStore]) -> None:
    edge, client = stores
    query = np.ones(8, np.float32) / np.sqrt(8)
    for s in (edge, client):
        assert s.ocr_counts("v1") == {"text": 4 - 1, "done": 4} and s.has_ocr()
        assert sorted(s.ocr_pending("v1")) == [("h0", "/lib/5.jpg"), ("h4", "/lib/4.jpg")]
        assert set(s.ocr_done(["h0", "h4"], "v1", ["ocr_text"])) == {"h0"}
    assert paths(edge.hybrid(None, "CAFE", 10, SearchFilter(text="CAFE"))) == ["/lib/1.jpg"]  # folded accents
    for words in ("pharmacy", "LISBOA", "lisboa pharmacy", "42.50", "hunter"):
        where = SearchFilter(text=words)
        e, c = edge.hybrid(None, words, 10, where), client.hybrid(None, words, 10, where)
        assert paths(e) == paths(c), words
        assert np.allclose([h.score for h in e], [h.score for h in c], atol=1e-4), words
    assert set(paths(edge.hybrid(None, "pharmacy", 10, SearchFilter(text="pharmacy")))) == {"/lib/0.jpg", "/lib/1.jpg"}
    assert edge.hybrid(None, "hunter", 10, SearchFilter(text="hunter")) == []  # /lib/4 is not read yet
    e = edge.hybrid(query, "pharmacy", 10, SearchFilter())
    c = client.hybrid(query, "pharmacy", 10, SearchFilter())
    assert len(e) == len(c) == len(TEXTS)  # same fused scores (ties may come in either order)
    assert all(abs({h.payload["path"]: h.rank_score for h in c}[h.payload["path"]] - h.rank_score) < 1e-6 for h in e)
    cosines = {h.payload["path"]: h.score for h in c}  # the CLIP cosine of each hybrid hit (float16 in the edge)
    assert all(abs(cosines[h.payload["path"]] - h.score) < 2e-3 for h in e)
    assert cosines == pytest.approx({p: float(v @ query) for p, v in zip(paths(c), vectors_of(client, c), strict=True)},
                                    abs=1e-5)
    assert set(paths(e)[:2]) == {"/lib/0.jpg", "/lib/1.jpg"}  # both lists rank them: fused to the top
    for s in (edge, client):
        s.set_hash_payload("h0", {"ocr": "v1", "ocr_text": "EXIT"})  # every copy of h0: /lib/0 and /lib/5
        assert sorted(paths(s.hybrid(None, "exit", 10, SearchFilter(text="exit")))) == ["/lib/0.jpg", "/lib/5.jpg"]
        assert len(s.sample_vectors(100)) == len(TEXTS)


def test_a_text_index_made_before_stemming_is_rebuilt_stemmed(tmp_path: Path) -> None:
    """A collection whose ``ocr_text`` index has no stemmer (made by an older clipdex) keeps its text, and its
    index is rebuilt with stems when it is opened: "kitchen" then finds "KITCHENS"."""
    import qdrant_edge as qe

    store = EdgeStore(tmp_path / "old")
    fill(store)
    store.set_hash_payload("h1", {"ocr": "v1", "ocr_text": "KITCHENS open late"})
    store.shard.update(qe.UpdateOperation.delete_field_index("ocr_text"))
    old = qe.TextIndexParams(tokenizer=qe.TokenizerType.Word, lowercase=True, ascii_folding=True, min_token_len=1,
                             max_token_len=40, scoring=True)
    store.shard.update(qe.UpdateOperation.create_field_index("ocr_text", old))
    assert store.hybrid(None, "kitchen", 10, SearchFilter(text="kitchen")) == []  # the old index: whole words
    store.close()
    store = EdgeStore(tmp_path / "old")
    try:
        assert paths(store.hybrid(None, "kitchen", 10, SearchFilter(text="kitchen"))) == ["/lib/1.jpg"]
        assert paths(store.hybrid(None, "pharmacy", 10, SearchFilter(text="pharmacy"))) == ["/lib/0.jpg"]
    finally:
        store.close()
