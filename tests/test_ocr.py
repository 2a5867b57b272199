"""The OCR pass and search by the words in images: real PP-OCRv4 models on pictures the tests render,
a real tiny CLIP and the real embedded store. One collection is built per module (the OCR engine loads once)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval import Index, load_settings
from retrieval.errors import ClipdexError
from retrieval.search.request import MAX_PHRASE_CHARS, SearchRequestError
from tests.conftest import write_config
from tests.ocr_images import sign, text_page, textured

SIGNS = {"pharmacy.jpg": "PHARMACY", "cafe.jpg": "Café Lisboa", "receipt.png": "Total 42.50",
         "wifi.jpg": "WiFi hunter2"}
REPO = Path(__file__).resolve().parent.parent


def write_pictures(folder: Path, plain: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, words) in enumerate(SIGNS.items()):
        sign(words, seed=i, angle=(-6, 0, 5, 0)[i], font_size=(40, 34, 28, 32)[i]).save(folder / name)
    for i in range(plain):
        textured((320, 240), 100 + i).save(folder / f"plain{i}.jpg")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path, dict]:
    """A folder of signs and plain photos, ingested with ``--ocr`` through the real CLI once."""
    root = tmp_path_factory.mktemp("ocr")
    write_pictures(root / "pics")
    config = write_config(root / "c.toml", tiny_model_dir, root / "store")
    report = cli(config, "ingest", root / "pics", "--ocr", "--json")
    return root, config, report


def cli(config: Path, *args: object, code: int = 0) -> dict | list | str:
    """Run the real CLI entry point in-process (the OCR engine then loads once per module)."""
    from retrieval.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        got = main([*map(str, args), "--config", str(config)])
    assert got == code, err.getvalue()
    if code:
        return err.getvalue()
    return json.loads(out.getvalue()) if "--json" in map(str, args) else out.getvalue()


def test_words_are_found_and_stored(built: tuple[Path, Path, dict]) -> None:
    root, config, report = built
    assert report["indexed"] == len(SIGNS) + 4
    assert report["ocr"]["read"] == len(SIGNS) + 4 and report["ocr"]["with_text"] == len(SIGNS)
    for name, words in SIGNS.items():
        hits = cli(config, "search", "--text-in-image", words, "--json")
        assert [Path(h["path"]).name for h in hits] == [name], (words, hits)
        assert hits[0]["ocr_text"]
    status = cli(config, "status", "--json")
    assert status["ocr"] == {"text": len(SIGNS), "pending": 0}


def test_matching_is_word_level_case_and_accent_insensitive(built: tuple[Path, Path, dict]) -> None:
    root, config, _ = built
    for phrase in ("café", "CAFE", "lisboa", "pharmacy", "42.50", "total"):
        hits = cli(config, "search", "--text-in-image", phrase, "--json")
        assert len(hits) == 1, (phrase, hits)
    assert cli(config, "search", "--text-in-image", "pharm", "--json") == []  # words, not substrings
    assert cli(config, "search", "--text-in-image", "giraffe", "--json") == []  # an absent word finds nothing
    both = cli(config, "search", "--text-in-image", "cafe pharmacy", "--json")  # every word must be there
    assert both == []


def test_text_in_image_matches_word_stems(built: tuple[Path, Path, dict]) -> None:
    """English stems, in the stored text and the phrase alike: "pharmacies" finds PHARMACY, "totals" Total."""
    root, config, _ = built
    for phrase, name in (("pharmacies", "pharmacy.jpg"), ("totals", "receipt.png")):
        hits = cli(config, "search", "--text-in-image", phrase, "--json")
        assert [Path(h["path"]).name for h in hits] == [name], (phrase, hits)


def test_text_in_image_combines_with_filters_and_a_query(built: tuple[Path, Path, dict]) -> None:
    root, config, _ = built
    hits = cli(config, "search", "a shop", "--text-in-image", "pharmacy", "--json")
    assert [Path(h["path"]).name for h in hits] == ["pharmacy.jpg"]
    assert cli(config, "search", "--text-in-image", "pharmacy", "--folder", root / "nowhere", "--json") == []


def test_hybrid_ranking_puts_the_sign_first(built: tuple[Path, Path, dict]) -> None:
    _, config, _ = built
    for query, name in (("pharmacy", "pharmacy.jpg"), ("the wifi password", "wifi.jpg")):
        hits = cli(config, "search", query, "--json")
        assert Path(hits[0]["path"]).name == name
        assert len(hits) == len(SIGNS) + 4  # hybrid still ranks every image (CLIP), the sign first
    clip = cli(config, "search", "pharmacy", "--no-ocr", "--json")
    assert all(-1 <= h["score"] <= 1 for h in clip) and len(clip) == len(SIGNS) + 4
    assert [h["score"] for h in clip] == sorted((h["score"] for h in clip), reverse=True)


def test_one_score_the_cosine_that_min_score_bounds(built: tuple[Path, Path, dict]) -> None:
    """Hybrid hits show their CLIP cosine as ``score`` (the fused order as ``rank_score``), and ``--min-score``
    bounds that cosine for every hit, BM25 matches included."""
    _, config, _ = built
    cosine = {h["path"]: h["score"] for h in cli(config, "search", "pharmacy", "--no-ocr", "--json")}
    hybrid = cli(config, "search", "pharmacy", "--json")
    assert Path(hybrid[0]["path"]).name == "pharmacy.jpg"
    assert {h["path"]: h["score"] for h in hybrid} == pytest.approx(cosine, abs=2e-3)
    ranks = [h["rank_score"] for h in hybrid]
    assert ranks == sorted(ranks, reverse=True) and all(0 < r < 0.05 for r in ranks)
    bound = sorted(cosine.values())[len(cosine) // 2]  # half the collection is below it
    cut = cli(config, "search", "pharmacy", "--min-score", bound, "--json")
    assert cut and all(h["score"] >= bound for h in cut)
    assert {h["path"] for h in cut} == {p for p, c in cosine.items() if c >= bound + 2e-3} | (
        {p for p, c in cosine.items() if abs(c - bound) < 2e-3} & {h["path"] for h in cut})
    assert len(cli(config, "search", "pharmacy", "--min-score", -1, "--limit", 2, "--json")) == 2  # the limit holds
    err = cli(config, "search", "--text-in-image", "pharmacy", "--min-score", 0.1, code=2)
    assert "--min-score" in err and "BM25" in err


def test_moved_and_copied_files_reuse_their_text(built: tuple[Path, Path, dict], tmp_path: Path) -> None:
    root, config, _ = built
    pics = root / "pics"
    shutil.move(pics / "pharmacy.jpg", pics / "moved-pharmacy.jpg")
    shutil.copy(pics / "cafe.jpg", pics / "cafe-copy.jpg")
    report = cli(config, "ingest", pics, "--ocr", "--json")
    assert report["moved"] == 1 and report["duplicates"] == 1
    assert report["ocr"]["read"] == 0  # nothing new to read: the text came with the reused vectors
    names = {Path(h["path"]).name for h in cli(config, "search", "--text-in-image", "pharmacy", "--json")}
    assert names == {"moved-pharmacy.jpg"}
    names = {Path(h["path"]).name for h in cli(config, "search", "--text-in-image", "lisboa", "--json")}
    assert names == {"cafe.jpg", "cafe-copy.jpg"}
    again = cli(config, "ingest", pics, "--ocr", "--json")
    assert again["ocr"] == again["ocr"] | {"read": 0, "reused": 0, "failed": []}  # re-runs do only new content


def test_bad_phrases_get_one_clear_line(built: tuple[Path, Path, dict]) -> None:
    _, config, _ = built
    err = cli(config, "search", "--text-in-image", "  ", code=2)
    assert "--text-in-image: the phrase is empty" in err
    err = cli(config, "search", "--text-in-image", "x" * (MAX_PHRASE_CHARS + 1), code=2)
    assert "--text-in-image" in err and str(MAX_PHRASE_CHARS) in err
    err = cli(config, "search", "--text-in-image", "!!! ...", code=1)
    assert err.strip().splitlines() == ["clipdex: error: text_in_image: needs at least one word (letters or digits)"]


def test_text_in_image_on_a_store_built_without_ocr(tmp_path: Path, tiny_model_dir: Path) -> None:
    write_pictures(tmp_path / "pics", plain=1)
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    cli(config, "ingest", tmp_path / "pics", "--json")
    err = cli(config, "search", "--text-in-image", "pharmacy", code=1)
    assert err.strip().splitlines() == [
        "clipdex: error: collection 'test' has no OCR text: it was built without OCR; run `clipdex ingest DIR "
        f"--ocr --config {config}` (or set [ocr] enabled = true) to read the text in its images"]
    assert cli(config, "status", "--json")["ocr"] == {"text": 0, "pending": len(SIGNS) + 1}
    # a collection that was read but holds no words at all
    (tmp_path / "plain").mkdir()
    textured((200, 150), 5).save(tmp_path / "plain" / "p.jpg")
    other = write_config(tmp_path / "o.toml", tiny_model_dir, tmp_path / "store", collection="plain")
    cli(other, "ingest", tmp_path / "plain", "--ocr", "--json")
    err = cli(other, "search", "--text-in-image", "pharmacy", code=1)
    assert "has no recognised text: OCR found no words in any of its images" in err


def test_hostile_images_are_reported_in_one_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    Image.new("RGB", (1, 5000), (200, 10, 10)).save(pics / "strip.png")
    Image.new("RGB", (5000, 1), (10, 200, 10)).save(pics / "wide.png")
    Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(pics / "deep.png")
    Image.new("CMYK", (64, 48), (0, 200, 200, 0)).save(pics / "cmyk.jpg")
    sign("EXIT", seed=3).save(pics / "exit.jpg")
    sign("GONE", seed=4).save(pics / "changing.jpg")
    settings = load_settings(write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store"))
    with Index.open(settings, create=True) as index:
        assert not index.ingest([pics]).failed
        with open(pics / "changing.jpg", "r+b") as fh:  # truncated after the CLIP pass read it
            fh.truncate(300)
        report = index.read_text()
        assert report.read == 6 and report.with_text == 1
        assert report.failed == [{"path": str(pics / "changing.jpg"),
                                  "error": "changed since it was indexed (run ingest again)"}]
        assert index.ocr_status() == {"text": 1, "pending": 0}  # the failure is recorded, not retried forever
        hits = index.search(text_in_image="exit")
        assert [Path(h.payload["path"]).name for h in hits] == ["exit.jpg"]


@pytest.mark.slow
def test_ocr_resumes_after_kill_9(tmp_path: Path, tiny_model_dir: Path) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    words = ["ALPHA", "BRAVO", "DELTA", "OSCAR", "TANGO", "HOTEL", "LIMA", "ROMEO", "SIERRA", "VICTOR",
             "ZULU", "KILO"]
    for i, w in enumerate(words):
        sign(w, seed=i, font_size=30).save(pics / f"s{i:02d}.jpg")
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    cli(config, "ingest", pics, "--json")  # the CLIP pass, complete
    proc = subprocess.Popen([sys.executable, "-m", "retrieval.cli", "ingest", str(pics), "--ocr", "--progress",
                             "--config", str(config)], stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        seen = ""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # wait until the OCR bar has counted a few images
            chunk = os.read(proc.stderr.fileno(), 4096).decode(errors="replace")  # type: ignore[union-attr]
            if not chunk:
                break
            seen += chunk
            counts = [int(m.group(1)) for m in re.finditer(r"ocr:[^\r\n]*?\| (\d+)/", seen)]
            if counts and max(counts) >= 3:
                break
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, seen
    status = cli(config, "status", "--json")
    left = status["ocr"]["pending"]
    assert 0 < left < len(words), seen  # some were read and kept, some are still pending
    report = cli(config, "ingest", pics, "--ocr", "--json")
    assert report["ocr"]["read"] == left  # the re-run read only what was pending
    assert cli(config, "status", "--json")["ocr"] == {"text": len(words), "pending": 0}
    for w in words:
        hits = cli(config, "search", "--text-in-image", w, "--json")
        assert len(hits) == 1, w


def test_library_errors(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = load_settings(write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store"))
    with Index.open(settings, create=True) as index:
        with pytest.raises(ClipdexError, match="empty or missing"):
            index.read_text()
        with pytest.raises(SearchRequestError, match="text_in_image"):
            index.search(text_in_image="y" * (MAX_PHRASE_CHARS + 1))


# -- the time budget (issue 26, case 10) ---------------------------------------------------------------------------

SLOW_OCR = "[ocr]\ntimeout_s = 2\ndet_max_side = 2048\nrec_max_side = 4096\nmax_boxes = 1000\n"
"""Settings under which :func:`tests.ocr_images.text_page` takes about 100 s to read (2 cores), signs < 1 s."""


def slow_library(folder: Path) -> None:
    folder.mkdir(parents=True)
    text_page().save(folder / "page.png")
    sign("EXIT", seed=3).save(folder / "exit.jpg")
    sign("BAKERY", seed=2, font_size=40).save(folder / "bakery.jpg")


def test_the_time_budget_stops_a_slow_image_and_the_pass_goes_on(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The budget used to expire inside ONNX Runtime, where rapidocr re-raised it as ``ONNXRuntimeError``:
    ``ingest --ocr`` exited with an internal error, the same on every re-run. Now the slow image gets
    ``ocr_error`` and the others are read."""
    slow_library(tmp_path / "pics")
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    config.write_text(config.read_text() + SLOW_OCR)
    started = time.monotonic()
    report = cli(config, "ingest", tmp_path / "pics", "--ocr", "--json")
    ocr = report["ocr"]  # type: ignore[index]
    assert ocr["failed"] == [{"path": str(tmp_path / "pics" / "page.png"),
                              "error": "OCR took longer than 2 s ([ocr] timeout_s)"}]
    assert ocr["read"] == 3 and ocr["with_text"] == 2
    assert ocr["seconds"] < 30, ocr  # the page alone would take minutes
    assert time.monotonic() - started < 120
    for word, name in (("exit", "exit.jpg"), ("bakery", "bakery.jpg")):
        hits = cli(config, "search", "--text-in-image", word, "--json")
        assert [Path(h["path"]).name for h in hits] == [name]  # type: ignore[index]
    again = cli(config, "ingest", tmp_path / "pics", "--ocr", "--json")  # the failure is recorded: not retried
    assert again["ocr"]["read"] == 0 and again["ocr"]["failed"] == []  # type: ignore[index]


def test_serve_watch_honours_the_time_budget(tmp_path: Path, tiny_model_dir: Path) -> None:
    """``serve --watch`` reads in its sync thread, where the ``SIGALRM`` budget never fired: with
    ``timeout_s = 2`` an image took as long as it took. The engine's own deadline holds in any thread."""
    import httpx

    from ingest.records import point_id
    from retrieval.server import create_app
    from tests.test_server import serving

    lib = tmp_path / "lib"
    slow_library(lib)
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    config.write_text(config.read_text() + SLOW_OCR + "enabled = true\n")
    with Index.open(load_settings(config), create=True) as index:
        app = create_app(index, watch=[str(lib)])
        with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            deadline = time.monotonic() + 180
            while (sync := http.get("/api/status").json()["sync"])["last"] is None:
                assert time.monotonic() < deadline, sync
                time.sleep(0.2)
            assert not sync["last"]["error"], sync["last"]
            rows = http.get("/api/search", params={"text_in_image": "bakery"}).json()
            assert [Path(r["path"]).name for r in rows] == ["bakery.jpg"]
            with app.state.service.lock:
                found = index.store.points([point_id(str(lib / "page.png"))])
        payload = next(iter(found.values()))[1]
        assert payload.get("ocr_error") == "OCR took longer than 2 s ([ocr] timeout_s)", payload
        assert sync["last"]["seconds"] < 60, sync["last"]  # the page alone would take minutes
