"""Personal concepts end to end: the real CLI, the bundled Fashion-MNIST model, a real embedded store, real
sample images (bags and sneakers from samples/fashion-mnist)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Result

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "fashion-mnist"


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """8 bags and 8 sneakers."""
    root = tmp_path / "photos"
    for kind in ("bag", "sneaker"):
        (root / kind).mkdir(parents=True)
        for src in sorted((SAMPLES / kind).iterdir())[:8]:
            shutil.copy(src, root / kind / src.name)
    return root


def _config(tmp_path: Path, collection: str = "fm", model: Path = REPO / "models" / "fmnist-tiny") -> Path:
    path = tmp_path / f"{collection}.toml"
    path.write_text("\n".join([
        "[model]", f'name = "local-dir:{model}"', 'pretrained = ""', 'engine = "torch"', "batch_size = 16",
        "[store]", f'path = "{tmp_path / "store"}"', f'collection = "{collection}"', "[ingest]", "workers = 0"]) + "\n")
    return path


@pytest.fixture
def cx(capfd: pytest.CaptureFixture[str], tmp_path: Path, library: Path) -> Callable[..., Result]:
    """The real CLI on the bundled model; the library is ingested first."""
    from retrieval.cli import main

    config = _config(tmp_path)

    def run(*args: object, config_file: Path = config) -> Result:
        capfd.readouterr()
        code = main([str(a) for a in args] + ["--config", str(config_file)])
        out = capfd.readouterr()
        return Result(code, out.out, out.err)

    assert run("ingest", library).code == 0
    return run


def _bags(library: Path) -> list[Path]:
    return sorted((library / "bag").iterdir())


def _payloads(tmp_path: Path, collection: str = "fm") -> dict[str, dict]:
    from retrieval import Index, load_settings

    with Index.open(load_settings(_config(tmp_path, collection))) as index:
        return {p["path"]: p for _, p in index.store.payloads(["path", "concepts", "concepts_at"])}


def _payload_concepts(tmp_path: Path, collection: str = "fm") -> dict[str, list[str]]:
    return {path: p.get("concepts") or [] for path, p in _payloads(tmp_path, collection).items()}


def test_teach_search_export_forget(cx: Callable[..., Result], library: Path, tmp_path: Path) -> None:
    bags = _bags(library)
    taught = cx("concept", "teach", "rex", "--example", bags[0], "--example", bags[1], "--json")
    assert taught.code == 0, taught.err
    doc = taught.json()
    assert doc["members"] >= 2 and len(doc["examples"]) == 2 and doc["threshold"] is not None
    shown = cx("concept", "show", "rex", "--json").json()
    assert shown["members"] == doc["members"] and shown["examples"] == [str(b) for b in bags[:2]]
    assert [c["name"] for c in cx("concept", "list", "--json").json()] == ["rex"]

    hits = cx("search", "--concept", "rex", "-k", "6", "--json").json()
    assert sum("/bag/" in h["path"] for h in hits) >= 5  # the model knows bags apart from sneakers
    assert all(isinstance(h["concepts"], list) for h in hits)
    members = cx("search", "--concept", "rex", "--relevant", "-k", "100", "--json").json()
    assert members and all("rex" in h["concepts"] for h in members)
    exported = cx("concept", "export", "rex").out.splitlines()
    assert sorted(exported) == sorted(h["path"] for h in members) and len(exported) == doc["members"]
    inside = cx("search", "a sneaker", "--in-concept", "rex", "-k", "100", "--json").json()
    assert {h["path"] for h in inside} == set(exported)
    away = cx("search", "a bag", "--not-concept", "rex", "-k", "3", "--json").json()
    assert len(away) == 3
    tags = _payload_concepts(tmp_path)
    assert sorted(p for p, c in tags.items() if "rex" in c) == sorted(exported)

    forgot = cx("concept", "forget", "rex")
    assert forgot.code == 0, forgot.err
    assert all(set(p) == {"path"} for p in _payloads(tmp_path).values())  # the last concept: no field left
    gone = cx("search", "--concept", "rex")
    assert gone.code == 1 and "no concept named 'rex'" in gone.err and len(gone.err.splitlines()) == 1


def test_survives_rebuild_and_keeps_renamed_and_new_files(cx: Callable[..., Result], library: Path) -> None:
    bags = _bags(library)
    assert cx("concept", "teach", "rex", "--example", bags[0], "--example", bags[1]).code == 0
    before = cx("concept", "show", "rex", "--json").json()
    assert cx("rebuild").code == 0
    assert cx("concept", "show", "rex", "--json").json()["examples"] == before["examples"]  # another process too
    moved = bags[0].with_name("renamed.png")
    bags[0].rename(moved)
    copy = library / "sneaker" / "copy-of-example.png"  # an example's bytes under a sneaker's folder and name
    shutil.copy(bags[1], copy)
    report = cx("ingest", library, "--json").json()
    assert report["concepts"]["scanned"] >= 2  # only the new and moved points were scored
    exported = set(cx("concept", "export", "rex").out.splitlines())
    assert str(moved) in exported and str(copy) in exported and str(bags[0]) not in exported
    assert cx("concept", "show", "rex", "--json").json()["members"] == len(exported)  # counted from the tags now


def test_review_takes_one_keystroke_per_answer(cx: Callable[..., Result], library: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bags = _bags(library)
    assert cx("concept", "teach", "rex", "--example", bags[0]).code == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("y\nn\ns\nq\n"))
    reviewed = cx("concept", "review", "rex", "--json")
    assert reviewed.code == 0, reviewed.err
    lines = [json.loads(line) for line in reviewed.out.splitlines()]
    asked = [line["candidate"] for line in lines if "candidate" in line]
    assert len(asked) == 4 and len({c["id"] for c in asked}) == 4  # each answer refits; nothing asked twice
    assert lines[-1]["answered"] == 2
    shown = cx("concept", "show", "rex", "--json").json()
    assert asked[0]["path"] in shown["examples"] and asked[1]["path"] in shown["non_examples"]
    assert asked[2]["path"] not in shown["examples"] + shown["non_examples"]


def test_tagged_by_the_watcher_path(cx: Callable[..., Result], library: Path, tmp_path: Path) -> None:
    """``serve --watch`` applies changes through retrieval.changes.apply_changes, which ingests by path."""
    from retrieval import Index, load_settings
    from retrieval.changes import apply_changes

    bags = _bags(library)
    assert cx("concept", "teach", "rex", "--example", bags[0], "--example", bags[1]).code == 0
    new = library / "bag" / "arrived.png"
    shutil.copy(bags[0], new)
    with Index.open(load_settings(_config(tmp_path))) as index:
        apply_changes(index, str(library), [str(new)])
    assert "rex" in _payload_concepts(tmp_path)[str(new)]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def test_bad_input_one_line_nothing_changed(cx: Callable[..., Result], library: Path, tmp_path: Path,
                                            tiny_model_dir: Path) -> None:
    bags = _bags(library)
    assert cx("concept", "teach", "rex", "--example", bags[0]).code == 0
    book = tmp_path / "store" / "fm" / "concepts.json"
    before = _digest(book)
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    cases = {
        "unknown": (("concept", "show", "nobody"), "no concept named"),
        "empty": (("concept", "teach", "", "--example", bags[0]), "cannot be empty"),
        "path characters": (("concept", "teach", "../evil", "--example", bags[0]), "path characters"),
        "not an image": (("concept", "teach", "rex", "--example", not_image), "notes.txt"),
        "missing": (("concept", "teach", "rex", "--example", tmp_path / "nope.png"), "not found"),
        "both": (("concept", "teach", "rex", "--example", bags[2], "--not", bags[2]), "both"),
        "new without example": (("concept", "teach", "fido", "--not", bags[2]), "at least one --example"),
        "too many": (("concept", "teach", "rex", *[a for _ in range(10_000) for a in ("--example", bags[3])]),
                     "at most 1000"),
        "search unknown": (("search", "--concept", "nobody"), "no concept named"),
    }
    for what, (args, needle) in cases.items():
        result = cx(*args)
        assert result.code != 0, what
        assert needle in result.err and len(result.err.strip().splitlines()) == 1, (what, result.err)
        assert _digest(book) == before, what
    # a concept taught on one model, used on a collection of another model (its concepts.json copied there)
    other = _config(tmp_path, "other", tiny_model_dir)
    assert cx("ingest", library / "bag", config_file=other).code == 0
    shutil.copy(book, tmp_path / "store" / "other" / "concepts.json")
    refused = cx("search", "--concept", "rex", config_file=other)
    assert refused.code == 1 and "was taught on model" in refused.err and len(refused.err.splitlines()) == 1


def test_http_api(cx: Callable[..., Result], library: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from retrieval import Index, load_settings
    from retrieval.server import create_app

    bags = [str(b) for b in _bags(library)]
    with Index.open(load_settings(_config(tmp_path))) as index, TestClient(create_app(index)) as client:
        taught = client.post("/api/concepts/rex", json={"examples": bags[:2]})
        assert taught.status_code == 200, taught.text
        assert [c["name"] for c in client.get("/api/concepts").json()] == ["rex"]
        hits = client.get("/api/search", params={"concept": "rex", "limit": 4}).json()
        assert hits and all("concepts" in h for h in hits)
        review = client.get("/api/concepts/rex/review", params={"n": 3}).json()["candidates"]
        assert len(review) == 3
        answered = client.post("/api/concepts/rex/answer", json={"ref": review[0]["path"], "answer": "n"})
        assert answered.status_code == 200, answered.text
        assert review[0]["path"] in client.get("/api/concepts/rex").json()["non_examples"]
        assert review[0]["path"] not in client.get("/api/concepts/rex/members").json()["paths"]
        suggestions = client.get("/api/concept-suggestions", params={"clusters": 2}).json()
        assert suggestions["uncovered"] >= 1 and suggestions["clusters"]
        bad = {
            "unknown": client.get("/api/concepts/nobody"),
            "path characters": client.post("/api/concepts/a..b%5Cc", json={"examples": bags[:1]}),
            "not indexed": client.post("/api/concepts/fido", json={"examples": [str(tmp_path / "x.png")]}),
            "too many": client.post("/api/concepts/rex", json={"examples": bags[:1] * 1001}),
            "both": client.post("/api/concepts/rex", json={"examples": bags[2:3], "non_examples": bags[2:3]}),
            "bad answer": client.post("/api/concepts/rex/answer", json={"ref": bags[3], "answer": "maybe"}),
            "cross-site": client.delete("/api/concepts/rex", headers={"origin": "http://evil.example"}),
        }
        for what, response in bad.items():
            assert 400 <= response.status_code < 500, (what, response.status_code, response.text)
            assert response.json()["error"] and "\n" not in response.json()["error"], what
        assert client.delete("/api/concepts/rex").status_code == 200
        assert client.get("/api/concepts").json() == []


def test_suggest_clusters_what_no_concept_covers(cx: Callable[..., Result], library: Path) -> None:
    bags = _bags(library)
    assert cx("concept", "teach", "rex", "--example", bags[0], "--example", bags[1]).code == 0
    members = set(cx("concept", "export", "rex").out.splitlines())
    found = cx("concept", "suggest", "--clusters", "2", "--json")
    assert found.code == 0, found.err
    doc = found.json()
    assert doc["uncovered"] == 16 - len(members) and len(doc["clusters"]) == 2
    assert not {p for c in doc["clusters"] for p in c["typical"]} & members  # only what rex does not cover
    assert all(c["name"] and c["typical"] for c in doc["clusters"])
    first = doc["clusters"][0]
    accepted = cx("concept", "suggest", "--clusters", "2", "--accept", "1", "--name", "cluster one", "--json")
    assert accepted.code == 0, accepted.err
    assert sorted(accepted.json()["examples"]) == sorted(first["typical"])
    assert cx("concept", "suggest", "--accept", "1").code == 2  # --accept without --name: a usage error


def test_a_video_moment_is_an_example_of_its_own(capfd: pytest.CaptureFixture[str], tmp_path: Path,
                                                 library: Path) -> None:
    """A concept taught from a video moment (``path#t=S``, as the page sends a selected moment) holds that
    moment, not the whole video: a "no" for another moment of the same video leaves the first one an example and
    a member, and only the answered moment is kept out."""
    from fastapi.testclient import TestClient
    from PIL import Image

    from retrieval import Index, load_settings
    from retrieval.cli import main
    from retrieval.server import create_app
    from tests.videos import write_video

    bag, sneaker = (Image.open(sorted((SAMPLES / kind).iterdir())[20]).convert("RGB") for kind in ("bag", "sneaker"))
    video = write_video(library / "walk.mp4", [(bag, 2.0), (sneaker, 2.0)], size=(112, 84))
    config = _config(tmp_path)
    assert main(["ingest", str(library), "--config", str(config)]) == 0
    capfd.readouterr()
    with Index.open(load_settings(config)) as index, TestClient(create_app(index)) as client:
        moments = sorted((p for _, p in index.store.payloads(["path", "time_s", "start_s"]) if p["path"] == str(video)),
                         key=lambda p: p["start_s"])
        assert len(moments) == 2
        bag_at, sneaker_at = (f"{video}#t={m['time_s']}" for m in moments)
        sneakers = [str(p) for p in sorted((library / "sneaker").iterdir())[:2]]
        taught = client.post("/api/concepts/shoe", json={"examples": [*sneakers, sneaker_at]})
        assert taught.status_code == 200, taught.text
        answered = client.post("/api/concepts/shoe/answer", json={"ref": bag_at, "answer": "n"})
        assert answered.status_code == 200, answered.text
        shown = client.get("/api/concepts/shoe").json()
        assert str(video) in shown["examples"] and str(video) in shown["non_examples"]
        tags = {round(p["time_s"], 3): p.get("concepts") or [] for _, p in index.store.payloads(
            ["path", "time_s", "concepts"]) if p["path"] == str(video)}
        assert "shoe" in tags[round(moments[1]["time_s"], 3)] and "shoe" not in tags[round(moments[0]["time_s"], 3)]
        nothing = f"{library / 'nothing.mp4'}#t=1"
        unknown = client.post("/api/concepts/shoe/answer", json={"ref": nothing, "answer": "y"})
        assert unknown.status_code == 404 and "not in the collection" in unknown.json()["error"]
