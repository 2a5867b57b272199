"""Words in images over HTTP and on the web page: the real server with ``watch`` (``serve --watch``), real
OCR models, real Chromium. A new sign written into the watched folder becomes findable by its word."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from retrieval import load_settings
from retrieval.index import Index
from retrieval.server import create_app
from tests.conftest import write_config
from tests.ocr_images import sign, textured
from tests.test_server import assert_error, serving
from tests.test_web_page import browser, cards, error_text, wait  # noqa: F401  (browser: a fixture)

By = pytest.importorskip("selenium.webdriver.common.by").By


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[tuple[str, httpx.Client, Path]]:
    """A watched folder (a sign and two plain photos) served with ``[ocr] enabled = true``."""
    tmp = tmp_path_factory.mktemp("ocr-web")
    lib = tmp / "lib"
    lib.mkdir()
    sign("PHARMACY", seed=1, font_size=40).save(lib / "pharmacy.jpg")
    for i in range(2):
        textured((320, 240), 50 + i).save(lib / f"plain{i}.jpg")
    config = write_config(tmp / "c.toml", tiny_model_dir, tmp / "store")
    config.write_text(config.read_text() + "[ocr]\nenabled = true\n")
    with Index.open(load_settings(config), create=True) as index:
        app = create_app(index, watch=[str(lib)])
        with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            until(lambda: http.get("/api/search", params={"text_in_image": "pharmacy"}).status_code == 200,
                  "the initial sync never read the sign")
            yield url, http, lib


def until(check: Any, message: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(message)


def test_api_text_in_image_and_status(served: tuple[str, httpx.Client, Path]) -> None:
    _, http, _ = served
    rows = http.get("/api/search", params={"text_in_image": "Pharmacy"}).json()
    assert [Path(r["path"]).name for r in rows] == ["pharmacy.jpg"] and rows[0]["ocr_text"] == "PHARMACY"
    assert http.get("/api/search", params={"text_in_image": "giraffe"}).json() == []
    until(lambda: http.get("/api/status").json()["ocr"]["pending"] == 0, "the OCR pass never finished")
    assert http.get("/api/status").json()["ocr"]["text"] >= 1
    assert_error(http.get("/api/search", params={"text_in_image": "x" * 201}), 422, "text_in_image")
    assert_error(http.get("/api/search", params={"text_in_image": "?!"}), (400, 422), "at least one word")


def test_watch_reads_the_text_of_a_new_file(served: tuple[str, httpx.Client, Path]) -> None:
    _, http, lib = served
    sign("BAKERY", seed=2, font_size=40).save(lib / "bakery.jpg")

    def found() -> bool:
        rows = http.get("/api/search", params={"text_in_image": "bakery"}).json()
        return [Path(r["path"]).name for r in rows] == ["bakery.jpg"]

    until(found, "the watched folder's new sign never became findable by its word")


def test_page_text_in_image_field(served: tuple[str, httpx.Client, Path], browser) -> None:  # noqa: ANN001, F811
    url, _, _ = served
    browser.get(url + "/#search")
    field = wait(browser, lambda d: d.find_element(By.ID, "text-in-image"), "no text-in-image field")
    field.clear()
    field.send_keys("pharmacy")
    browser.find_element(By.ID, "go").click()
    wait(browser, lambda d: len(cards(d)) == 1, "one card expected for the word")
    card = cards(browser)[0]
    assert "pharmacy.jpg" in card.text
    assert card.find_element(By.CSS_SELECTOR, ".ocr").text == "PHARMACY"  # the recognised text under the hit
    assert "text_in_image=pharmacy" in browser.current_url
    field.clear()
    field.send_keys("?!")
    browser.find_element(By.ID, "go").click()
    assert "at least one word" in error_text(browser)
