"""The web page of ``clipdex serve`` in a real headless Chromium (Selenium + Debian's chromedriver).

Set ``CLIPDEX_WEB_SCREENSHOT=some.png`` to keep the screenshot of the results grid.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.test_server import QUERY, Live, live_library

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--window-size=1280,900")
TIMEOUT = 30

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
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
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver (make test does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(TIMEOUT)
        yield driver
    finally:
        driver.quit()


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
    driver.get(live.url + "/")
    status = live.http.get("/api/status").json()
    wait(driver, lambda d: "images" in d.find_element(By.ID, "status").text, "the status line never loaded")
    line = driver.find_element(By.ID, "status").text
    assert f"collection {status['collection']}" in line and f"{status['points']} images" in line
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
    assert shown[0].find_element(By.CSS_SELECTOR, ".path").text == expected[0][0]
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
        wait(driver, lambda d: "images" in d.find_element(By.ID, "status").text, "the status line never loaded")
        assert not driver.find_element(By.ID, "key").is_displayed()
        assert driver.get_cookie("clipdex_key")["sameSite"] == "Strict"

        driver.find_element(By.ID, "q").send_keys(QUERY, Keys.ENTER)
        expected = live.search(text=QUERY, limit=10)
        wait(driver, lambda d: len(cards(d)) == len(expected), "result cards never appeared")
        assert [c.get_attribute("data-path") for c in cards(driver)] == [path for path, _ in expected]
        wait(driver, lambda d: d.execute_script(ALL_THUMBS_LOADED), "thumbnails did not load with the key")
        driver.delete_all_cookies()
