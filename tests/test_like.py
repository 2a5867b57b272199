"""Search by stored points (``like``/``unlike``): library, CLI, HTTP API and both stores.

The library is three classes of four near-duplicates each (tests/images.py). Expected rankings are
computed from the stored vectors with Qdrant's average_vector formula, never written down by hand.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ingest.records import path_key, point_id
from retrieval import ClipdexError, load_settings
from retrieval.cli import main
from retrieval.index import Index
from retrieval.search.request import MAX_EXAMPLES, SearchRequestError, UnknownPointError
from retrieval.search.run import hit_row
from retrieval.store import CollectionMeta, SearchFilter
from retrieval.store.edge import EdgeStore
from retrieval.store.server import ServerStore
from retrieval.vectors import recommend_vector
from tests.conftest import write_config
from tests.images import write_near_duplicates

N = 12


@dataclass
class Library:
    config: Path
    classes: dict[str, list[Path]]

    @contextmanager
    def index(self) -> Iterator[Index]:
        with Index.open(load_settings(self.config)) as index:
            yield index

    def cli(self, *args: str | Path) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main([str(a) for a in args] + ["--config", str(self.config)])
        return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Library:
    tmp = tmp_path_factory.mktemp("like")
    classes = write_near_duplicates(tmp / "lib")
    config = write_config(tmp / "clipdex.toml", tiny_model_dir, tmp / "store")
    with Index.open(load_settings(config), create=True) as index:
        assert index.ingest([tmp / "lib"]).indexed == N
    return Library(config, classes)


def expected(index: Index, positives: np.ndarray, negatives: np.ndarray) -> list[tuple[str, float]]:
    """Every stored point scored against Qdrant's average_vector of the examples, best first."""
    points = index.store.points([pid for pid, _ in index.store.payloads(["path"])])
    query = recommend_vector(positives, negatives)
    return sorted(((p["path"], float(v @ query)) for v, p in points.values()), key=lambda item: -item[1])


def ranked(hits: list) -> list[tuple[str, float]]:
    return [(h.payload["path"], h.score) for h in hits]


def assert_same_ranking(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-3)  # float16 stored vectors
    for (path, score), (want_path, _) in zip(got, want, strict=True):
        assert path == want_path or any(p == path and abs(s - score) < 1e-4 for p, s in want)  # ties may swap


def test_like_ranks_the_examples_near_duplicates_first(library: Library):
    with library.index() as index:
        for files in library.classes.values():
            example = files[0]
            hits = index.search(like=[example], limit=N)
            assert {h.payload["path"] for h in hits[:4]} == {str(f) for f in files}  # its own class first
            assert min(h.score for h in hits[:4]) > max(h.score for h in hits[4:])
            assert next(h.score for h in hits if h.payload["path"] == str(example)) >= 0.999
            assert_same_ranking(ranked(hits), expected(index, index.stored_vectors([str(example)]),
                                                       np.zeros((0, 32), np.float32)))
        assert index.encoders.query_loaded is None  # nothing was encoded: the model was never even loaded


def test_unlike_pushes_a_class_down(library: Library):
    with library.index() as index:
        like = library.classes["a"][0]
        before = index.search(like=[like], limit=N)
        runner_up = Path(before[4].payload["path"]).parent.name  # the class closest to "a" after "a" itself
        pushed = [str(f) for f in library.classes[runner_up]]
        after = index.search(like=[like], unlike=[library.classes[runner_up][0]], limit=N)
        assert [h.payload["path"] for h in after[-4:]] and {h.payload["path"] for h in after[-4:]} == set(pushed)
        assert {h.payload["path"] for h in after[:4]} == {str(f) for f in library.classes["a"]}
        rank = {h.payload["path"]: i for i, h in enumerate(before)}
        assert all(i > rank[h.payload["path"]] for i, h in enumerate(after) if h.payload["path"] in pushed)
        assert_same_ranking(ranked(after), expected(index, index.stored_vectors([str(like)]),
                                                    index.stored_vectors([str(library.classes[runner_up][0])])))


def test_like_with_text_and_filters(library: Library):
    with library.index() as index:
        likes = [str(library.classes["b"][0]), str(library.classes["c"][2])]
        hits = index.search(text="a green square", like=likes, limit=N)
        positives = np.vstack([index.query_vector(text="a green square")[None], index.stored_vectors(likes)])
        assert_same_ranking(ranked(hits), expected(index, positives, np.zeros((0, 32), np.float32)))
        steered = index.search(like=likes, negative=["a blue square"], limit=N)
        unlike = np.vstack([index.stored_vectors([]), index.encoder.encode_texts(["a blue square"])])
        assert_same_ranking(ranked(steered), expected(index, index.stored_vectors(likes), unlike))
        below = index.search(like=likes, folder=library.classes["c"][0].parent, limit=N)
        assert {h.payload["path"] for h in below} == {str(f) for f in library.classes["c"]}
        strong = index.search(like=likes, min_score=0.99, limit=N)
        assert strong and all(h.score >= 0.99 for h in strong) and len(strong) < N


def test_examples_by_point_id_without_reading_the_file(library: Library):
    example = library.classes["b"][1]
    saved = example.read_bytes()
    example.write_bytes(b"not an image any more")  # only the stored vector can answer now
    try:
        with library.index() as index:
            by_path = ranked(index.search(like=[example], limit=N))
            by_id = ranked(index.search(like=[point_id(path_key(str(example)))], limit=N))
            by_upper_id = ranked(index.search(like=[point_id(path_key(str(example))).upper()], limit=N))
    finally:
        example.write_bytes(saved)
    assert by_path == by_id == by_upper_id
    assert {p for p, _ in by_path[:4]} == {str(f) for f in library.classes["b"]}


def test_unknown_conflicting_and_too_many_examples(library: Library, tmp_path: Path):
    a0, b0 = (str(library.classes[c][0]) for c in "ab")
    with library.index() as index:
        with pytest.raises(UnknownPointError, match="not in the collection: .*nowhere.png"):
            index.search(like=[a0, str(tmp_path / "nowhere.png")])
        with pytest.raises(UnknownPointError, match=str(uuid.UUID(int=7))):
            index.search(like=[a0], unlike=[str(uuid.UUID(int=7))])
        with pytest.raises(SearchRequestError, match="both a like and an unlike"):
            index.search(like=[a0, b0], unlike=[point_id(path_key(b0))])
        with pytest.raises(ClipdexError, match="needs a text, an example image or a like example"):
            index.search(unlike=[a0])
        with pytest.raises(SearchRequestError, match=f"at most {MAX_EXAMPLES} items"):
            index.search(like=[a0] * (MAX_EXAMPLES + 1))


def test_a_damaged_stored_example_is_an_error_not_a_search(library: Library):
    example = str(library.classes["c"][3])
    with library.index() as index:
        pid = point_id(path_key(example))
        vector, payload = index.store.points([pid])[pid]
        index.store.upsert([pid], np.full((1, len(vector)), np.nan, np.float32), [payload])
        try:
            with pytest.raises(ClipdexError, match=f"stored vector of {example} is damaged"):
                index.search(like=[example])
            assert pid not in {h.id for h in index.search(like=[str(library.classes["c"][0])], limit=N)}
        finally:
            index.store.upsert([pid], vector[None], [payload])


# -- CLI -------------------------------------------------------------------------------------------------


def test_cli_like_and_unlike(library: Library, monkeypatch: pytest.MonkeyPatch):
    a, c = library.classes["a"], library.classes["c"]
    code, out, err = library.cli("search", "--like", a[0], "--unlike", c[0], "--limit", N, "--json")
    assert code == 0, err
    with library.index() as index:
        assert json.loads(out) == [hit_row(h) for h in index.search(like=[a[0]], unlike=[c[0]], limit=N)]
    assert {r["path"] for r in json.loads(out)[:4]} == {str(f) for f in a}
    monkeypatch.chdir(a[0].parent)  # a relative path names the same indexed file
    code, relative, err = library.cli("search", "--like", a[0].name, "--unlike", c[0], "--limit", N, "--json")
    assert code == 0 and relative == out, err


@pytest.mark.parametrize("args, code, needle", [
    (["--like", "nowhere.png"], 1, "clipdex: error: not in the collection: "),
    (["--unlike", "{a0}"], 1, "clipdex: error: a search needs a text, an example image or a like example"),
    (["--like", "{a0}", "--unlike", "{a0}"], 1, "is both a like and an unlike example"),
    (["--like", "{a0}"] * (MAX_EXAMPLES + 1), 2, f"--like: Value should have at most {MAX_EXAMPLES} items"),
])
def test_cli_bad_examples_are_one_line(library: Library, args: list[str], code: int, needle: str):
    got, out, err = library.cli("search", *(a.format(a0=library.classes["a"][0]) for a in args))
    assert got == code and needle in err and err.count("\n") == 1 and out == ""


# -- HTTP API ----------------------------------------------------------------------------------------------


def test_api_like_by_path_or_point_id(library: Library):
    from fastapi.testclient import TestClient

    from retrieval.server import create_app

    a, b = library.classes["a"], library.classes["b"]
    with library.index() as index, TestClient(create_app(index)) as client:
        want = [hit_row(h) for h in index.search(like=[a[0]], unlike=[b[0]], limit=N)]
        got = client.post("/api/search", data={"like": str(a[0]), "unlike": str(b[0]), "limit": N})
        assert got.status_code == 200 and got.json() == want, got.text
        by_id = client.get("/api/search", params={"like": point_id(path_key(str(a[0]))), "unlike": str(b[0]),
                                                  "limit": N})
        assert by_id.json() == want
        both = client.get("/api/search", params={"like": [str(a[0]), str(b[1])], "q": "a red square"})
        assert both.json() == [hit_row(h) for h in index.search(like=[a[0], b[1]], text="a red square")]

        unknown = client.get("/api/search", params={"like": [str(a[0]), "/no/such/file.png"]})
        assert unknown.status_code == 404 and "not in the collection: /no/such/file.png" in unknown.json()["error"]
        clash = client.get("/api/search", params={"like": str(a[0]), "unlike": str(a[0])})
        assert clash.status_code == 422 and "both a like and an unlike" in clash.json()["error"]
        many = client.get("/api/search", params={"like": [str(a[0])] * (MAX_EXAMPLES + 1)})
        assert many.status_code == 422 and f"at most {MAX_EXAMPLES}" in many.json()["error"]
        alone = client.get("/api/search", params={"unlike": str(a[0])})
        assert alone.status_code == 400 and "like example" in alone.json()["error"]


# -- both stores ---------------------------------------------------------------------------------------------


def test_both_stores_recommend_alike(tmp_path: Path):
    """The embedded engine's recommend (a nearest search) matches Qdrant's own average_vector strategy."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(40)]
    payloads = [{"path": f"/r/{i}.png", "ancestors": ["/", "/r"]} for i in range(40)]
    results = []
    for store in (EdgeStore(tmp_path / "edge"), ServerStore("t", path=str(tmp_path / "local"))):
        store.create(CollectionMeta("m", "", 16))
        store.upsert(ids, vectors, payloads)
        results.append([(h.id, h.score) for h in store.recommend(vectors[[0, 5]], vectors[[9]], 10, SearchFilter())])
        store.close()
    edge, local = results
    assert [i for i, _ in edge] == [i for i, _ in local]
    # the embedded store keeps float16 vectors (layout 2): cosines agree to its precision
    assert [s for _, s in edge] == pytest.approx([s for _, s in local], abs=1e-3)
    assert edge[0][0] in (ids[0], ids[5]) and all(i != ids[9] for i, _ in edge)
