"""The page as a photo app, in a real headless Chromium over one real served store: the library by date and by
folder (``GET /api/browse``), the viewer, multi-select and its actions, the Duplicates view, search results;
each view screenshotted at two widths, and checked with axe-core.

Set ``CLIPDEX_WEB_SHOTS=DIR`` to keep the screenshots (``scripts/web_screenshot.py`` takes the docs' ones).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from retrieval.cli import main
from retrieval.index import Index
from retrieval.server import create_app
from retrieval.settings import load_settings
from tests.axe import axe_source, serious_violations
from tests.chromium import TIMEOUT, browser_session
from tests.conftest import write_config
from tests.photos import exif_of, render
from tests.test_duplicates import make_library
from tests.test_server import assert_error, serving

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WIDTHS = (1280, 420)
SCROLL_ON = "const y = scrollY; scrollBy(0, innerHeight * 0.8); return scrollY === y"  # true: at the end
DEEP = "a-rather-long-folder-name-for-the-summer-holidays"
HOSTILE = "<img src=x onerror=alert(1)>.jpg"  # a legal file name: it must show as text
DATED = {"2023-08-14": (640, 480), "2023-08-02": (300, 600), "2023-05-20": (640, 360), "2021-12-31": (480, 480)}


@dataclass
class Served:
    url: str
    http: httpx.Client
    lib: Path
    aside: Path
    families: dict[str, list[str]]
    index: Index
    lock: object


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    """Two duplicate families, bursts, a lone shot, a backup copy, photos of four dates (one portrait, one
    panorama) in a deep folder, and a file whose name is markup; served with [duplicates] move_to."""
    tmp = tmp_path_factory.mktemp("views")
    made = make_library(tmp, families=2)
    lib = made["lib"]
    deep = lib / "2023" / DEEP
    deep.mkdir(parents=True)
    for seed, (day, size) in enumerate(DATED.items()):
        render(80 + seed, size=size).save(deep / f"IMG_{seed:04d}.jpg", quality=90,
                                          exif=exif_of(day.replace("-", ":") + " 10:00:00", "Apple", "iPhone 14"))
    render(99, size=(320, 240)).save(lib / "lone" / HOSTILE, quality=90)
    config = write_config(tmp / "clipdex.toml", tiny_model_dir, tmp / "store")
    with config.open("a") as fh:
        fh.write(f'[duplicates]\nthreshold = 0.2\nmove_to = "{tmp / "aside"}"\n')
    assert main(["ingest", str(lib), "--config", str(config)]) == 0
    with Index.open(load_settings(config)) as index:
        app = create_app(index)
        with serving(app) as url, httpx.Client(base_url=url, timeout=60) as http:
            yield Served(url, http, lib, tmp / "aside", made["families"], index, app.state.service.lock)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    with browser_session(tmp_path_factory, "chromium-views") as driver:
        yield driver


@pytest.fixture(scope="module")
def axe() -> str:
    return axe_source()


def wait(driver: webdriver.Chrome, condition, message: str):  # noqa: ANN001, ANN201
    return WebDriverWait(driver, TIMEOUT, ignored_exceptions=(StaleElementReferenceException,)).until(
        condition, message)


def shot(driver: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    """A screenshot of the window, kept in $CLIPDEX_WEB_SHOTS when set."""
    wait(driver, lambda d: d.execute_script(
        "return [...document.querySelectorAll('img')].filter(i => i.getBoundingClientRect().bottom > 0 && "
        "i.getBoundingClientRect().top < innerHeight && i.offsetParent).every(i => i.complete)"), "images never loaded")
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path))
    with Image.open(path) as im:
        assert im.width >= 400 and len(im.convert("L").resize((32, 32)).getcolors(1024) or ()) > 8  # not blank
    if os.environ.get("CLIPDEX_WEB_SHOTS"):
        Path(os.environ["CLIPDEX_WEB_SHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(os.environ["CLIPDEX_WEB_SHOTS"]) / path.name)
    return path


def at_width(driver: webdriver.Chrome, width: int) -> None:
    driver.set_window_size(width, 900)


def shown(driver: webdriver.Chrome, css: str) -> list[str]:
    return driver.execute_script(
        f"return [...document.querySelectorAll({css!r})].map(n => n.dataset.path)")


def library_walk(driver: webdriver.Chrome) -> tuple[list[str], list[list[str]], int]:
    """Scroll the library from top to bottom: its cards' paths by position (each checked to sit in reading
    order), its headings' texts in order, and the most cards the DOM held at once (virtualised: not all)."""
    cards: dict[int, tuple[float, float, str]] = {}
    heads: dict[float, list[str]] = {}
    most = 0
    driver.execute_script("window.scrollTo(0, 0)")
    while True:
        wait(driver, lambda d: not d.execute_script("return document.querySelector('#library .placeholder')"),
             "library pages never loaded")
        now = driver.execute_script(
            "return [...document.querySelectorAll('#library .card')].map(n => [Number(n.dataset.position), "
            "n.offsetTop, n.offsetLeft, n.dataset.path])")
        most = max(most, len(now))
        cards.update({pos: (top, left, path) for pos, top, left, path in now})
        heads.update({top: text.split("\n") for top, text in driver.execute_script(
            "return [...document.querySelectorAll('#library .section')].map(h => [h.offsetTop, h.innerText])")})
        if driver.execute_script(SCROLL_ON):
            break
        time.sleep(0.05)
    order = [cards[i] for i in sorted(cards)]
    assert sorted(order) == order  # position order is reading order: top to bottom, left to right
    assert sorted(cards) == list(range(len(cards)))
    return [path for _, _, path in order], [heads[t] for t in sorted(heads)], most


def scroll_until(driver: webdriver.Chrome, css: str):  # noqa: ANN201
    """The element ``css`` of the virtualised library, scrolled (from the top) until it is made."""
    def made(timeout: float) -> bool:
        try:
            WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))
            return True
        except TimeoutException:
            return False

    if not made(1):
        driver.execute_script("window.scrollTo(0, 0)")
        while not made(0.5):
            assert not driver.execute_script(SCROLL_ON), css
    return driver.find_element(By.CSS_SELECTOR, css)


def browse_all(http: httpx.Client, by: str) -> dict:
    doc = http.get("/api/browse", params={"by": by, "limit": 500, "sections": "true"}).json()
    assert doc["next"] is None
    return doc


# -- the browse API ----------------------------------------------------------------------------------------------


def test_browse_orders_pages_and_sections(served: Served):
    by_date = browse_all(served.http, "date")
    total = by_date["total"]
    assert total == served.http.get("/api/status").json()["points"] == len(by_date["items"])
    stamps = [r.get("taken_ts", r["mtime"]) for r in by_date["items"]]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    dated = [r for r in by_date["items"] if "iPhone" in r.get("camera_model", "")]
    assert [r["taken_at"][:10] for r in dated] == list(DATED)
    assert sum(s["count"] for s in by_date["sections"]) == total
    assert [s["start"] for s in by_date["sections"]] == sorted(s["start"] for s in by_date["sections"])
    months = {s["key"]: s["label"] for s in by_date["sections"]}
    assert months["2023-08"] == "August 2023" and "2021-12" in months and "2020-06" in months
    assert all(r["section"] == r["taken_at"][:7] for r in dated)

    by_folder = browse_all(served.http, "folder")
    keys = [(r["folder"], r["path"]) for r in by_folder["items"]]
    assert keys == sorted(keys) and len(keys) == total
    assert [s["key"] for s in by_folder["sections"]] == sorted({r["folder"] for r in by_folder["items"]})

    pages, cursor = [], 0  # paged: the same rows, in the same order
    while cursor is not None:
        page = served.http.get("/api/browse", params={"by": "date", "cursor": cursor, "limit": 7}).json()
        assert "sections" not in page and len(page["items"]) <= 7
        pages += page["items"]
        cursor = page["next"]
    assert [r["path"] for r in pages] == [r["path"] for r in by_date["items"]]
    assert served.http.get("/api/browse", params={"cursor": 10_000}).json() | {"items": []} == {
        "by": "date", "cursor": 10_000, "items": [], "total": total, "videos": 0, "next": None}


@pytest.mark.parametrize("params", [{"by": "size"}, {"limit": 0}, {"limit": 501}, {"cursor": -1},
                                    {"cursor": "x"}, {"cursor": 10**12}, {"sections": "maybe"}, {"limit": "1e9"}])
def test_browse_refuses_bad_input_with_one_line(served: Served, params: dict):
    assert_error(served.http.get("/api/browse", params=params), 422, next(iter(params)))


# -- the views -----------------------------------------------------------------------------------------------------


def open_page(driver: webdriver.Chrome, url: str, width: int) -> None:
    at_width(driver, width)
    driver.get(url)
    wait(driver, lambda d: "photos" in d.find_element(By.ID, "status").text, "the status line never loaded")


@pytest.mark.parametrize("width", WIDTHS)
def test_library_by_date_and_by_folder(served: Served, browser: webdriver.Chrome, axe: str, tmp_path: Path,
                                       width: int):
    driver = browser
    open_page(driver, served.url + "/", width)
    expected = browse_all(served.http, "date")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#library .card"), "the library never showed")
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-view") == "library"
    assert driver.find_element(By.ID, "library-summary").text == (
        f"{expected['total']} photos in {len(expected['sections'])} months, newest first")
    paths, headings, most = library_walk(driver)
    assert paths == [r["path"] for r in expected["items"]]
    assert [h[0] for h in headings] == [s["label"] for s in expected["sections"]]
    assert [h[1] for h in headings] == [str(s["count"]) for s in expected["sections"]]
    if width < 800:  # two columns: the cards far from the viewport are not in the DOM
        assert most < expected["total"]
    driver.execute_script("window.scrollTo(0, 0)")
    first, row = scroll_until(driver, '#library .card[data-position="0"]'), expected["items"][0]
    assert first.text.split("\n") == [Path(row["path"]).name, time.strftime("%Y-%m-%d", time.gmtime(row["mtime"])),
                                      row["folder"]]  # no EXIF: the file's date
    iphone = next(i for i, r in enumerate(expected["items"]) if r.get("taken_at", "").startswith("2023-08-14"))
    iphone = scroll_until(driver, f'#library .card[data-position="{iphone}"]')
    assert iphone.text.split("\n")[1:] == ["2023-08-14 · Apple iPhone 14", str(served.lib / "2023" / DEEP)]
    driver.execute_script("window.scrollTo(0, 0)")
    # uniform cards; thumbnails fitted whole (contain) on a neutral background, not a chequerboard
    sizes = driver.execute_script("return [...document.querySelectorAll('#library .card')].map(c => "
                                  "[c.offsetWidth, c.offsetHeight])")
    assert len(set(map(tuple, sizes))) == 1
    style = driver.execute_script("const t = document.querySelector('#library .card .thumb'); const s = "
                                  "getComputedStyle(t); return [s.backgroundImage, "
                                  "getComputedStyle(t.querySelector('img')).objectFit, t.offsetWidth, t.offsetHeight]")
    assert style[0] == "none" and style[1] == "contain" and style[2] == style[3]
    # a file name that is markup shows as text
    hostile = [c for c in driver.find_elements(By.CSS_SELECTOR, "#library .card") if HOSTILE in c.text]
    assert len(hostile) == 1 and not driver.find_elements(By.CSS_SELECTOR, "#library img[src=x]")
    assert serious_violations(driver, axe) == []
    shot(driver, tmp_path, f"library-date-{width}")

    driver.find_element(By.ID, "by-folder").click()
    folders = browse_all(served.http, "folder")
    wait(driver, lambda d: "folders" in d.find_element(By.ID, "library-summary").text, "by folder never showed")
    assert driver.find_element(By.ID, "by-folder").get_attribute("aria-pressed") == "true"
    assert driver.execute_script("return location.hash") == "#library/folder"
    paths, headings, _ = library_walk(driver)
    assert paths == [r["path"] for r in folders["items"]]
    assert [h[0] for h in headings] == [s["label"] for s in folders["sections"]]
    driver.execute_script("window.scrollTo(0, 0)")
    assert serious_violations(driver, axe) == []
    shot(driver, tmp_path, f"library-folder-{width}")


def row_at(http: httpx.Client, by: str, position: int) -> dict:
    return http.get("/api/browse", params={"by": by, "cursor": position, "limit": 1}).json()["items"][0]


def click_card(driver: webdriver.Chrome, position: int, part: str = ".thumb", **keys: bool) -> None:
    """Click a library card's thumbnail (or ``.pick``), holding shift or ctrl when asked."""
    node = scroll_until(driver, f'#library .card[data-position="{position}"] {part}')
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", node)
    chain = ActionChains(driver)
    held = [k for k, on in (("shift", keys.get("shift")), ("ctrl", keys.get("ctrl"))) if on]
    for k in held:
        chain.key_down(Keys.SHIFT if k == "shift" else Keys.CONTROL)
    chain.click(node)
    for k in held:
        chain.key_up(Keys.SHIFT if k == "shift" else Keys.CONTROL)
    chain.perform()


def viewer_title(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "viewer-title").text


def viewer_info(driver: webdriver.Chrome) -> dict[str, str]:
    terms = driver.find_elements(By.CSS_SELECTOR, "#viewer-info dt")
    return {t.text: t.find_element(By.XPATH, "following-sibling::dd[1]").text for t in terms}


@pytest.mark.parametrize("width", WIDTHS)
def test_viewer_steps_with_arrows_and_closes_with_esc(served: Served, browser: webdriver.Chrome, axe: str,
                                                      tmp_path: Path, width: int):
    driver = browser
    open_page(driver, served.url + "/#library", width)
    total = browse_all(served.http, "date")["total"]
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#library .card[data-position="0"]'), "no library")
    click_card(driver, 0)
    wait(driver, lambda d: d.find_element(By.ID, "viewer").is_displayed(), "the viewer never opened")
    first, second = row_at(served.http, "date", 0), row_at(served.http, "date", 1)
    wait(driver, lambda d: viewer_title(d) == Path(first["path"]).name, "the viewer shows another photo")
    assert driver.switch_to.active_element.get_attribute("id") == "viewer-close"  # focus moved into the dialog
    assert viewer_info(driver)["Position"] == f"1 of {total}"
    assert driver.find_element(By.ID, "viewer-prev").get_attribute("disabled")
    driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    wait(driver, lambda d: viewer_title(d) == Path(second["path"]).name, "→ did not step to the next photo")
    assert viewer_info(driver)["Position"] == f"2 of {total}"
    driver.switch_to.active_element.send_keys(Keys.ARROW_LEFT)
    wait(driver, lambda d: viewer_title(d) == Path(first["path"]).name, "← did not step back")

    # the portrait photo: fitted whole inside the stage, with its facts in the panel
    items = browse_all(served.http, "date")["items"]
    portrait = next(i for i, r in enumerate(items) if r.get("width") == 300)
    for _ in range(portrait):
        driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    wait(driver, lambda d: viewer_title(d) == Path(items[portrait]["path"]).name, "never reached the portrait")
    info = viewer_info(driver)
    assert info["Camera"] == "Apple iPhone 14" and info["Size"].startswith("300 × 600")
    assert info["Taken"] == "2023-08-02 10:00:00" and info["Folder"] == str(served.lib / "2023" / DEEP)
    wait(driver, lambda d: d.execute_script(
        "const i = document.querySelector('#viewer-media img'); return i.complete && i.naturalWidth === 300"),
         "the full image never loaded")
    # fitted to the stage (scaled up or down), its aspect kept: the picture drawn inside the img's box
    fit = driver.execute_script(
        "const i = document.querySelector('#viewer-media img'), r = i.getBoundingClientRect(), "
        "s = document.querySelector('#viewer .stage').getBoundingClientRect(), "
        "k = Math.min(r.width / i.naturalWidth, r.height / i.naturalHeight); return [getComputedStyle(i).objectFit, "
        "r.left >= s.left - 1 && r.right <= s.right + 1 && r.top >= s.top - 1 && r.bottom <= s.bottom + 1, "
        "Math.max(k * i.naturalWidth / r.width, k * i.naturalHeight / r.height)]")
    assert fit[0] == "contain" and fit[1] and fit[2] > 0.99  # whole, inside the stage, touching two sides
    assert serious_violations(driver, axe) == []
    shot(driver, tmp_path, f"viewer-{width}")

    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait(driver, lambda d: not d.find_element(By.ID, "viewer").is_displayed(), "Esc did not close the viewer")
    focused = driver.switch_to.active_element  # focus is on the card of the photo last shown
    assert focused.get_attribute("class") == "thumb"
    assert driver.execute_script("return arguments[0].closest('.card').dataset.path", focused) == \
        items[portrait]["path"]

    # "/" focuses the search field; "find duplicates of this" on an original with copies
    driver.find_element(By.TAG_NAME, "body").send_keys("/")
    assert driver.switch_to.active_element.get_attribute("id") == "q"
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    original = sorted(served.families)[-1]  # (trip0 has a byte-identical backup copy too)
    click_card(driver, next(i for i, r in enumerate(items) if r["path"] == original))
    wait(driver, lambda d: viewer_title(d) == Path(original).name, "the original never showed")
    driver.find_element(By.ID, "viewer-dups").click()
    group = served.http.get("/api/duplicates", params={"path": original}).json()["groups"]
    assert len(group) == 1 and group[0]["keep"] == original
    wait(driver, lambda d: d.find_element(By.ID, "viewer-dup-status").text.startswith(
        f"Duplicates: kept in a group of {len(group[0]['files'])} (near); {len(group[0]['duplicates'])} duplicates"),
        "the duplicate status never came")
    driver.find_element(By.ID, "viewer-like").click()  # "more like this": a search by its stored vector
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-view") == "search"
         and original in shown(d, "#results .card")[:2], "more like this never searched")  # (or its PNG twin)
    assert driver.execute_script("return new URLSearchParams(location.search).getAll('like')") == [original]
    assert not driver.find_element(By.ID, "viewer").is_displayed()


@pytest.mark.parametrize("width", WIDTHS)
def test_search_results_cards(served: Served, browser: webdriver.Chrome, axe: str, tmp_path: Path, width: int):
    driver = browser
    open_page(driver, served.url + "/#search", width)
    expected = served.http.get("/api/search", params={"q": "a landscape photo", "limit": 10}).json()
    driver.find_element(By.ID, "q").send_keys("a landscape photo", Keys.ENTER)
    wait(driver, lambda d: shown(d, "#results .card") == [r["path"] for r in expected], "results never matched")
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-view") == "search"
    cards = driver.find_elements(By.CSS_SELECTOR, "#results .card")
    assert [c.find_element(By.CSS_SELECTOR, ".score").text for c in cards] == [f"{r['score']:.4f}" for r in expected]
    assert all(c.find_element(By.CSS_SELECTOR, ".when").text for c in cards)
    # the name on its own line, the folder under it (the whole of it in its tooltip)
    assert [c.find_element(By.CSS_SELECTOR, ".name").text for c in cards] == [Path(r["path"]).name for r in expected]
    assert [c.find_element(By.CSS_SELECTOR, ".folder").get_attribute("title") for c in cards] == [
        r["folder"] for r in expected]
    heights = {c.size["height"] for c in cards}
    assert max(heights) - min(heights) <= 1  # uniform cards
    assert serious_violations(driver, axe) == []
    shot(driver, tmp_path, f"search-{width}")


def selected(driver: webdriver.Chrome) -> list[str]:
    return shown(driver, ".card.selected")


@pytest.mark.parametrize("width", WIDTHS)
def test_multi_select_click_shift_ctrl_and_box(served: Served, browser: webdriver.Chrome, axe: str, tmp_path: Path,
                                               width: int):
    driver = browser
    open_page(driver, served.url + "/#library/date", width)
    items = browse_all(served.http, "date")["items"]
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#library .card[data-position="3"]'), "no library")
    click_card(driver, 0, ".pick")
    assert selected(driver) == [items[0]["path"]]
    assert driver.find_element(By.ID, "selection-count").text == "1 photo selected"
    click_card(driver, 3, ".pick", shift=True)  # a range
    assert selected(driver) == [r["path"] for r in items[:4]]
    click_card(driver, 5, ctrl=True)  # ctrl-click on a photo adds it rather than opening it
    assert selected(driver) == [r["path"] for r in items[:4]] + [items[5]["path"]]
    assert not driver.find_element(By.ID, "viewer").is_displayed()
    click_card(driver, 1)  # while selecting, a plain click toggles too
    assert len(selected(driver)) == 4 and items[1]["path"] not in selected(driver)
    bar = driver.find_element(By.ID, "selection-bar")
    assert bar.is_displayed() and driver.find_element(By.ID, "selection-count").text == "4 photos selected"
    assert driver.find_element(By.ID, "sel-move").is_enabled()  # the server has [duplicates] move_to
    assert serious_violations(driver, axe) == []
    shot(driver, tmp_path, f"select-{width}")
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait(driver, lambda d: not selected(d) and not d.find_element(By.ID, "selection-bar").is_displayed(),
         "Esc did not clear the selection")

    # a box dragged from the free space beside the toolbar down over the first row of cards
    driver.execute_script("window.scrollTo(0, 0)")
    start = driver.execute_script("const r = document.querySelector('#library-view .toolbar').getBoundingClientRect();"
                                  " return [Math.round(r.right - 4), Math.round(r.top + r.height / 2)]")
    end = driver.execute_script("const r = document.querySelector('#library .card[data-position=\"1\"] .thumb')"
                                ".getBoundingClientRect(); return [Math.round(r.left + r.width / 2), "
                                "Math.round(r.top + r.height / 2)]")
    expected = driver.execute_script(
        "const [x0, y0, x1, y1] = arguments; return [...document.querySelectorAll('#library .card')].filter(c => {"
        "const r = c.getBoundingClientRect(); return r.left < Math.max(x0, x1) && r.right > Math.min(x0, x1) && "
        "r.top < Math.max(y0, y1) && r.bottom > Math.min(y0, y1)}).map(c => Number(c.dataset.position))",
        *start, *end)
    assert 1 in expected and len(expected) >= 1
    drag = ActionBuilder(driver)  # viewport coordinates
    drag.pointer_action.move_to_location(*start).pointer_down()
    drag.pointer_action.move_to_location((start[0] + end[0]) // 2, (start[1] + end[1]) // 2)
    drag.pointer_action.move_to_location(*end).pointer_up()
    drag.perform()
    assert sorted(selected(driver)) == sorted(items[i]["path"] for i in expected)

    # more like these: one search with every selected photo as an example
    driver.find_element(By.ID, "sel-like").click()
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-view") == "search"
         and d.find_elements(By.CSS_SELECTOR, "#results .card"), "more like these never searched")
    likes = driver.execute_script("return new URLSearchParams(location.search).getAll('like')")
    assert sorted(likes) == sorted(items[i]["path"] for i in expected)
    want = served.http.get("/api/search", params=[("like", p) for p in likes] + [("limit", "10")]).json()
    wait(driver, lambda d: shown(d, "#results .card") == [r["path"] for r in want], "not the API's answer")
    assert not selected(driver)


def test_move_aside_a_selection_and_undo(served: Served, browser: webdriver.Chrome):
    driver = browser
    open_page(driver, served.url + "/#library/folder", 1280)
    items = browse_all(served.http, "folder")["items"]
    total = len(items)
    picks = [i for i, r in enumerate(items) if "/burst/" in r["path"]][:2]
    paths = [items[i]["path"] for i in picks]
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#library .card"), "no library")
    for i in picks:
        click_card(driver, i, ".pick", ctrl=False)
    assert sorted(selected(driver)) == sorted(paths)
    driver.find_element(By.ID, "sel-copy").click()
    wait(driver, lambda d: d.find_element(By.ID, "notice-text").text == "copied 2 paths", "copy paths said nothing")
    driver.find_element(By.ID, "sel-move").click()
    wait(driver, lambda d: d.find_element(By.ID, "notice-text").text.startswith("moved 2 files aside"), "no move")
    assert not any(Path(p).exists() for p in paths)
    assert all((served.aside / Path(p).relative_to(served.lib)).exists() for p in paths)
    wait(driver, lambda d: d.find_element(By.ID, "library-summary").text.startswith(f"{total - 2} photos"),
         "the library still shows the moved files")
    assert served.http.get("/api/browse", params={"by": "folder", "limit": 500}).json()["total"] == total - 2
    driver.find_element(By.ID, "notice-undo").click()  # undo: the files come back, and into the library
    wait(driver, lambda d: d.find_element(By.ID, "notice-text").text == "put back 2 files", "undo said nothing")
    assert all(Path(p).exists() for p in paths)
    wait(driver, lambda d: d.find_element(By.ID, "library-summary").text.startswith(f"{total} photos"),
         "the library never got the files back")
    assert_error(served.http.post("/api/duplicates/undo"), 409, "nothing to undo")


def test_duplicates_view_keeper_radio_disabled_state_and_undo(served: Served, browser: webdriver.Chrome, axe: str,
                                                              tmp_path: Path):
    driver = browser
    for width in WIDTHS:
        open_page(driver, served.url + "/#duplicates", width)
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#dups-groups .dup-group"), "no duplicate groups")
        group = next(g for g in driver.find_elements(By.CSS_SELECTOR, ".dup-group")
                     if g.get_attribute("data-keep") == sorted(served.families)[-1])
        files = group.find_elements(By.CSS_SELECTOR, ".dup-file")
        folders = [f.find_element(By.CSS_SELECTOR, ".folder").text.replace("\n", "") for f in files]
        assert folders == [str(Path(f.get_attribute("data-path")).parent) for f in files]  # each file's folder
        assert all(driver.execute_script("return arguments[0].querySelectorAll('.folder wbr').length", f) ==
                   str(Path(f.get_attribute("data-path")).parent).count("/") for f in files)
        radios = group.find_elements(By.CSS_SELECTOR, "input[type=radio]")
        assert radios[0].is_selected() and not any(r.is_selected() for r in radios[1:])
        assert group.find_element(By.CSS_SELECTOR, ".dup-move").is_enabled()
        assert serious_violations(driver, axe) == []
        shot(driver, tmp_path, f"duplicates-{width}")

    # choose another keeper: the mark moves, the move takes the others (the suggested keeper among them)
    suggested = group.get_attribute("data-keep")
    chosen = files[2].get_attribute("data-path")
    files[2].find_element(By.CSS_SELECTOR, "label").click()
    assert group.get_attribute("data-keep") == chosen
    assert [f.get_attribute("data-path") for f in group.find_elements(By.CSS_SELECTOR, ".dup-file.keeper")] == [chosen]
    assert "keep: your choice" in group.find_element(By.CSS_SELECTOR, ".why").text
    assert not driver.find_element(By.ID, "dups-undo").is_enabled()
    group.find_element(By.CSS_SELECTOR, ".dup-move").click()
    wait(driver, lambda d: "moved 5 files" in d.find_element(By.ID, "dups-summary").text, "the move never said so")
    assert Path(chosen).exists() and not Path(suggested).exists()
    assert driver.find_element(By.ID, "dups-undo").is_enabled()
    driver.find_element(By.ID, "dups-undo").click()
    wait(driver, lambda d: d.find_element(By.ID, "notice-text").text == "put back 5 files", "undo said nothing")
    assert Path(suggested).exists()
    wait(driver, lambda d: suggested in [g.get_attribute("data-keep") for g in
                                         d.find_elements(By.CSS_SELECTOR, ".dup-group")], "the group never came back")


def test_duplicates_view_without_move_to_says_why(served: Served, browser: webdriver.Chrome, axe: str,
                                                  tmp_path: Path):
    settings = served.index.settings
    plain = settings.model_copy(update={"duplicates": settings.duplicates.model_copy(update={"move_to": ""})})
    app = create_app(Index(plain, served.index.store, served.index.encoder))
    app.state.service.lock = served.lock
    driver = browser
    with serving(app) as url:
        open_page(driver, url + "/#duplicates", 1280)
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#dups-groups .dup-group"), "no duplicate groups")
        move = driver.find_element(By.CSS_SELECTOR, ".dup-move")
        dismiss = driver.find_element(By.CSS_SELECTOR, ".dup-dismiss")
        assert not move.is_enabled() and dismiss.is_enabled()
        looks = driver.execute_script("return [arguments[0], arguments[1]].map(b => { const s = getComputedStyle(b);"
                                      " return [s.backgroundColor, s.color, s.borderStyle, s.cursor] })", move, dismiss)
        assert looks[0] != looks[1] and looks[0][2] == "dashed" and looks[0][3] == "not-allowed"  # looks disabled
        reason = driver.find_element(By.ID, "dups-move-reason")
        assert reason.is_displayed() and "set [duplicates] move_to" in reason.text
        assert "moving is off" in driver.find_element(By.CSS_SELECTOR, ".dup-actions .reason").text
        assert serious_violations(driver, axe) == []
        shot(driver, tmp_path, "duplicates-disabled-1280")
        driver.get(url + "/#library")  # the selection's "move aside" is disabled with its reason too
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#library .card[data-position="0"]'), "no library")
        wait(driver, lambda d: "photos" in d.find_element(By.ID, "status").text, "no status")
        click_card(driver, 0, ".pick")
        assert not driver.find_element(By.ID, "sel-move").is_enabled()
        assert "move_to" in driver.find_element(By.ID, "sel-reason").text
        driver.find_element(By.ID, "sel-clear").click()


def test_page_works_under_a_strict_csp_and_in_dark_mode(served: Served, browser: webdriver.Chrome, tmp_path: Path):
    """No inline script or style: every view works under the server's CSP (script-src/style-src 'self', no
    hashes needed), nothing is refused; and the colours follow the system's dark mode."""
    csp = served.http.get("/").headers["content-security-policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "sha256" not in csp
    assert "media-src 'self'" in csp  # (the viewer plays video moments)
    driver = browser
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
        "window.__csp = []; document.addEventListener('securitypolicyviolation', "
        "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")})
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme",
                                                                          "value": "dark"}]})
    try:
        url = served.url
        open_page(driver, url + "/#library", 1280)
        assert driver.execute_script("return document.head.querySelector('style, script:not([src])')") is None
        # the extension point for concept feedback: a registered card action shows on every card while its
        # condition holds, and gets the card's row when clicked
        driver.execute_async_script(
            "const done = arguments[0]; import('/static/extensions.js').then(m => { m.cardActions.push({"
            "id: 'yes', label: '✓', title: (row, ctx) => `yes: ${ctx.concept}`, when: (row, ctx) => "
            "Boolean(ctx.concept), run: (row) => { window.__clicked = row.path; } }); m.context.concept = "
            "'beach'; m.refreshCards(); done(); })")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#library .card .card-action"), "no card action")
        cards = driver.find_elements(By.CSS_SELECTOR, "#library .card")
        assert all(c.find_element(By.CSS_SELECTOR, ".card-action").text == "✓" for c in cards)
        first = scroll_until(driver, '#library .card[data-position="0"]')
        first.find_element(By.CSS_SELECTOR, ".card-action").click()
        assert driver.execute_script("return window.__clicked") == first.get_attribute("data-path")
        assert first.find_element(By.CSS_SELECTOR, ".card-action").get_attribute("title") == "yes: beach"
        driver.execute_script("window.scrollTo(0, 0)")
        shot(driver, tmp_path, "library-card-actions-dark-1280")
        click_card(driver, 0)
        wait(driver, lambda d: d.find_element(By.ID, "viewer").is_displayed(), "no viewer under the CSP")
        driver.find_element(By.ID, "viewer-close").click()
        driver.get(url + "/#duplicates")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".dup-group"), "no duplicates under the CSP")
        assert driver.execute_script("return window.__csp") == []
        background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert sum(int(c) for c in background[4:-1].split(",")[:3]) < 3 * 60  # dark
        shot(driver, tmp_path, "duplicates-dark-1280")
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"action": "move", "paths": ["/a.jpg"], "selection": True, "keep": "/b.jpg"}, 422, "selection"),
    ({"action": "not-duplicates", "paths": ["/a.jpg", "/b.jpg"], "selection": True}, 422, "selection"),
    ({"action": "move", "paths": ["/not/indexed.jpg"], "selection": True}, 400, "not an indexed file"),
    ({"action": "move", "paths": ["/a.jpg"], "selection": [1]}, 422, "selection"),
])
def test_selection_moves_are_checked(served: Served, body: dict, status: int, needle: str):
    before = sorted(p.name for p in served.lib.rglob("*"))
    assert_error(served.http.post("/api/duplicates/resolve", json=body), status, needle)
    assert_error(served.http.post("/api/duplicates/undo", headers={"Origin": "http://evil.example"}), 403,
                 "cross-site")
    assert sorted(p.name for p in served.lib.rglob("*")) == before
