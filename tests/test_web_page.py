"""The web page of ``clipdex serve`` in a real headless Chromium (Selenium + Debian's chromedriver).

Set ``CLIPDEX_WEB_SCREENSHOT=some.png`` to keep the screenshot of the results grid.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.chromium import TIMEOUT, browser_session
from tests.test_server import QUERY, Live, live_library

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Live]:
    with live_library(tmp_path_factory.mktemp("web"), tiny_model_dir) as served:
        yield served


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    with browser_session(tmp_path_factory) as driver:
        yield driver


def wait(driver: webdriver.Chrome, condition, message: str):  # noqa: ANN001, ANN201
    return WebDriverWait(driver, TIMEOUT, ignored_exceptions=(StaleElementReferenceException,)).until(
        condition, message)


def cards(driver: webdriver.Chrome) -> list:  # noqa: ANN001
    return driver.find_elements(By.CSS_SELECTOR, "#results .card")


def error_text(driver: webdriver.Chrome) -> str:
    box = wait(driver, ec.visibility_of_element_located((By.ID, "error")), "no visible error message")
    return box.text


ALL_THUMBS_LOADED = ("return [...document.querySelectorAll('#results img')]"
                     ".every(img => img.complete && img.naturalWidth > 0)")


def test_search_page_end_to_end(live: Live, browser: webdriver.Chrome, tmp_path: Path):
    driver = browser
    driver.get(live.url + "/#search")
    status = live.http.get("/api/status").json()
    wait(driver, lambda d: "photos" in d.find_element(By.ID, "status").text, "the status line never loaded")
    line = driver.find_element(By.ID, "status").text
    assert f"collection {status['collection']}" in line and f"{status['points']} photos" in line
    assert status["model"] in line

    # Every control has a label.
    for control in ("q", "negative", "image", "limit"):
        assert driver.find_element(By.CSS_SELECTOR, f"label[for={control}]").text.strip()

    # Type a query, pick a limit, press Enter.
    limit = 5
    Select(driver.find_element(By.ID, "limit")).select_by_value(str(limit))
    driver.find_element(By.ID, "q").send_keys(QUERY, Keys.ENTER)
    expected = live.search(text=QUERY, limit=limit)
    wait(driver, lambda d: len(cards(d)) == min(limit, len(live.good)), "result cards never appeared")
    shown = cards(driver)
    assert [c.get_attribute("data-path") for c in shown] == [path for path, _ in expected]
    assert shown[0].find_element(By.CSS_SELECTOR, ".name").text == Path(expected[0][0]).name
    assert shown[0].find_element(By.CSS_SELECTOR, ".folder").get_attribute("title") == str(Path(expected[0][0]).parent)
    assert [c.find_element(By.CSS_SELECTOR, ".score").text for c in shown] == [f"{s:.4f}" for _, s in expected]
    wait(driver, lambda d: d.execute_script(ALL_THUMBS_LOADED), "thumbnails did not load")
    widths = driver.execute_script("return [...document.querySelectorAll('#results img')].map(i => i.naturalWidth)")
    assert len(widths) == len(shown) and all(w > 0 for w in widths)
    assert not driver.find_element(By.ID, "error").is_displayed()

    screenshot = tmp_path / "results.png"
    assert driver.save_screenshot(str(screenshot))
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and screenshot.stat().st_size > 1000
    with Image.open(screenshot) as shot:
        assert shot.width >= 800 and shot.height >= 600
    if os.environ.get("CLIPDEX_WEB_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["CLIPDEX_WEB_SCREENSHOT"])

    # "more like this" searches by that result's image: it comes back first.
    target = shown[1].get_attribute("data-path")
    shown[1].find_element(By.CSS_SELECTOR, "button.more").click()
    wait(driver, lambda d: cards(d) and cards(d)[0].get_attribute("data-path") == target
         and float(cards(d)[0].find_element(By.CSS_SELECTOR, ".score").text) >= 0.99, "more-like-this failed")
    assert driver.find_element(By.ID, "preview").is_displayed()
    # ... by its stored vector (like=PATH): nothing downloaded and re-uploaded.
    assert driver.execute_script("return new URLSearchParams(location.search).get('like')") == target
    assert driver.find_element(By.ID, "image").get_attribute("value") == ""
    assert [c.get_attribute("data-path") for c in cards(driver)] == [
        p for p, _ in live.search(like=[target], limit=limit)]

    # A text file named .png: the server's one-line reason shows up, visibly, and the grid is cleared.
    fake = tmp_path / "holiday.png"
    fake.write_text("this is not an image\n")
    driver.find_element(By.ID, "image").send_keys(str(fake))
    driver.find_element(By.ID, "q").send_keys(Keys.ENTER)
    message = error_text(driver)
    assert "cannot read query image holiday.png: not an image (looks like text)" in message
    assert cards(driver) == []
    assert not driver.find_element(By.ID, "preview").is_displayed()  # no broken-image icon for a non-image

    # Nothing to search for: the page says so before asking the server.
    driver.find_element(By.ID, "clear-image").click()
    driver.find_element(By.ID, "q").clear()
    driver.find_element(By.ID, "q").send_keys(Keys.ENTER)
    wait(driver, lambda d: "Type a description" in d.find_element(By.ID, "error").text, "no empty-query error")


def test_page_asks_for_the_api_key_and_sends_it(live: Live, browser: webdriver.Chrome):
    from retrieval.server import create_app
    from tests.test_server import serving

    key = "page key/é;="
    app = create_app(live.index, api_key=key)
    app.state.service.lock = live.lock
    driver = browser
    with serving(app) as url:
        driver.get(url + "/")
        driver.delete_all_cookies()
        driver.refresh()
        wait(driver, ec.visibility_of_element_located((By.ID, "key")), "the key field never showed")
        assert "needs an API key" in error_text(driver)

        driver.find_element(By.ID, "key").send_keys("not the key", Keys.ENTER)
        wait(driver, lambda d: "wrong API key" in d.find_element(By.ID, "error").text, "a wrong key was not reported")
        assert driver.find_element(By.ID, "key").is_displayed()

        driver.find_element(By.ID, "key").send_keys(key, Keys.ENTER)
        wait(driver, lambda d: "photos" in d.find_element(By.ID, "status").text, "the status line never loaded")
        assert not driver.find_element(By.ID, "key").is_displayed()
        assert driver.get_cookie("clipdex_key")["sameSite"] == "Strict"

        driver.find_element(By.ID, "q").send_keys(QUERY, Keys.ENTER)
        expected = live.search(text=QUERY, limit=10)
        wait(driver, lambda d: len(cards(d)) == len(expected), "result cards never appeared")
        assert [c.get_attribute("data-path") for c in cards(driver)] == [path for path, _ in expected]
        wait(driver, lambda d: d.execute_script(ALL_THUMBS_LOADED), "thumbnails did not load with the key")
        driver.delete_all_cookies()


# -- filters, the collection's status, the empty state -----------------------------------------------------------


def shown_paths(driver: webdriver.Chrome) -> list[str]:  # noqa: ANN001
    return [c.get_attribute("data-path") for c in cards(driver)]


def fill(driver: webdriver.Chrome, **fields: str) -> None:  # noqa: ANN001
    for name, value in fields.items():
        box = driver.find_element(By.ID, name)
        box.clear()
        if value:
            box.send_keys(value)


def search_and_wait(driver: webdriver.Chrome, expected: list[str], what: str) -> None:  # noqa: ANN001
    driver.find_element(By.ID, "q").send_keys(Keys.ENTER)
    wait(driver, lambda d: shown_paths(d) == expected and not d.find_element(By.ID, "results").get_attribute(
        "aria-busy"), f"{what}: the page did not show {expected}")


def test_folder_date_and_camera_filters_narrow_like_the_library(live: Live, browser: webdriver.Chrome):
    from tests.images import LIBRARY_EXIF

    driver = browser
    driver.get(live.url + "/#search")
    wait(driver, lambda d: "photos" in d.find_element(By.ID, "status").text, "the status line never loaded")
    for control in ("folder", "after", "before", "camera"):
        assert driver.find_element(By.CSS_SELECTOR, f"label[for={control}]").text.strip()
    # The camera and folder choices come from the collection.
    cameras = driver.execute_script("return [...document.querySelectorAll('#cameras option')].map(o => o.value)")
    assert sorted(cameras) == sorted({model for _, _, model in LIBRARY_EXIF.values()})
    folders = driver.execute_script("return [...document.querySelectorAll('#folders option')].map(o => o.value)")
    assert folders == [str(live.root)]

    driver.find_element(By.ID, "q").send_keys(QUERY)
    everything = [p for p, _ in live.search(text=QUERY, limit=10)]
    search_and_wait(driver, everything, "no filter")

    folder = str(live.root / "a")
    below = [p for p, _ in live.search(text=QUERY, folder=folder, limit=10)]
    assert below and len(below) < len(everything)
    fill(driver, folder=folder)
    search_and_wait(driver, below, "folder filter")
    assert all(p.startswith(folder + "/") for p in shown_paths(driver))

    camera, after, before = "iPhone 14", "2022-06", "2023"
    dated = [p for p, _ in live.search(text=QUERY, camera=camera, after=after, before=before, limit=10)]
    assert dated and len(dated) < len([p for p, _ in live.search(text=QUERY, camera=camera, limit=10)])
    fill(driver, folder="", camera=camera, after=after, before=before)
    search_and_wait(driver, dated, "camera and date filters")
    assert "camera iPhone 14" in driver.find_element(By.ID, "summary").text
    query = driver.execute_script("return Object.fromEntries(new URLSearchParams(location.search))")
    assert (query["camera"], query["after"], query["before"]) == (camera, after, before)

    driver.refresh()  # a bookmarked filtered search comes back as it was
    wait(driver, lambda d: shown_paths(d) == dated, "the filtered search did not survive a reload")
    assert driver.find_element(By.ID, "camera").get_attribute("value") == camera

    fill(driver, after="2021-13")  # the server's one-line reason, visibly
    driver.find_element(By.ID, "q").send_keys(Keys.ENTER)
    assert "after" in error_text(driver)

    driver.find_element(By.ID, "clear-filters").click()
    wait(driver, lambda d: shown_paths(d) == everything, "clearing the filters did not search everything")
    assert all(driver.find_element(By.ID, n).get_attribute("value") == "" for n in ("folder", "after", "camera"))


def test_status_panel_shows_folders_offline_unindexed_and_the_sync(tmp_path: Path, tiny_model_dir: Path,
                                                                   browser: webdriver.Chrome):
    import httpx

    from retrieval import load_settings
    from retrieval.index import Index
    from retrieval.server import create_app
    from tests.conftest import write_config
    from tests.images import pattern, write_library
    from tests.test_server import run_cli, serving

    library = tmp_path / "lib"
    write_library(library)
    drive = tmp_path / "drive"
    drive.mkdir()
    for seed in range(3):
        pattern(100 + seed).save(drive / f"{seed}.png")
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    assert run_cli("ingest", library, drive, "--config", config)[0] == 0
    drive.rename(tmp_path / "unplugged")  # the drive is gone: its points stay, and it is offline

    driver = browser
    with Index.open(load_settings(config)) as index:
        app = create_app(index, watch=[str(library)])
        with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            deadline = time.monotonic() + TIMEOUT
            while http.get("/api/status").json()["sync"]["syncs"] < 1:  # the start-up sync
                assert time.monotonic() < deadline, "the start-up sync never finished"
                time.sleep(0.1)
            status = http.get("/api/status").json()
            driver.get(url + "/")
            panel = wait(driver, ec.visibility_of_element_located((By.ID, "roots")), "no folder table")
            rows = {r.find_element(By.CSS_SELECTOR, ".path").text: r for r in
                    panel.find_elements(By.CSS_SELECTOR, "tbody tr")}
            assert set(rows) == {r["path"] for r in status["roots"]} == {str(library), str(drive)}
            for root in status["roots"]:
                cells = [c.text for c in rows[root["path"]].find_elements(By.TAG_NAME, "td")]
                assert cells[1] == f"{root['points']:,}"
                assert cells[2] == (f"offline: {root['offline']} (points kept)" if root["offline"] else "online")
            assert rows[str(drive)].get_attribute("class") == "offline" and status["offline"]
            assert driver.find_element(By.ID, "collection").get_attribute("open")  # an offline folder opens it
            summary = driver.find_element(By.ID, "collection-summary").text
            assert "2 folders" in summary and "1 offline" in summary
            # Below [store] index_threshold nothing is in the HNSW graph yet: no business of the user's, so the
            # page does not say "not yet indexed" (right after an ingest that read as if the ingest had failed).
            assert status["unindexed"] == status["points"] > 0
            page_text = driver.find_element(By.TAG_NAME, "body").text
            assert "not yet indexed" not in page_text and "not in the search index" not in page_text
            assert "Index a folder" not in driver.page_source
            assert "Watching 1 folder: idle" in driver.find_element(By.ID, "sync-state").text
            assert "unchanged" in driver.find_element(By.ID, "sync-last").text

            # A sync that waits for the store (held here, as a long index build would hold it): the page
            # shows it running, with the collection figures it read last, and follows it to the end.
            with app.state.service.lock:
                assert http.post("/api/ingest", params={"root": str(library)}).json()["started"]
                driver.refresh()
                wait(driver, lambda d: "Syncing" in d.find_element(By.ID, "sync-state").text,
                     "the running sync was not shown")
                assert str(library) in driver.find_element(By.ID, "sync-state").text
                assert "store busy" in driver.find_element(By.ID, "collection-summary").text
                assert driver.find_element(By.ID, "roots").is_displayed()
            wait(driver, lambda d: "idle · 2 syncs so far" in d.find_element(By.ID, "sync-state").text,
                 "the page did not follow the sync to its end")
            assert "store busy" not in driver.find_element(By.ID, "collection-summary").text


def test_an_empty_collection_says_what_to_do(tmp_path: Path, tiny_model_dir: Path, browser: webdriver.Chrome):
    from retrieval import load_settings
    from retrieval.index import Index
    from retrieval.server import create_app
    from tests.conftest import write_config
    from tests.test_server import serving

    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store", collection="nothing-yet")
    driver = browser
    with Index.open(load_settings(config)) as index, serving(create_app(index)) as url:
        driver.get(url + "/")
        empty = wait(driver, ec.visibility_of_element_located((By.ID, "empty")), "no empty state")
        assert "no images yet" in empty.text and "nothing-yet" in empty.text
        # the commands carry this server's settings: a bare `clipdex ingest ~/Pictures` writes to another store
        store = str(index.settings.store_path)
        flags = f"--config {config} --store {store} --collection nothing-yet"
        assert driver.find_element(By.ID, "empty-ingest").text == f"clipdex ingest ~/Pictures {flags}"
        assert driver.find_element(By.ID, "empty-watch").text == f"clipdex serve --watch ~/Pictures {flags}"
        assert "0 photos" in driver.find_element(By.ID, "status").text
        driver.find_element(By.ID, "q").send_keys("a cat", Keys.ENTER)
        assert "clipdex ingest" in error_text(driver)

    driver.get("about:blank")
