"""Videos on the page, in a real headless Chromium over one real served store: the library shows one card per
video (its frame, a duration badge), the viewer shows a video's moments as a strip of times that play from their
start, search results keep one card per hit, and the Duplicates view shows a group of video copies with a frame
of each. Each view is screenshotted at 1280 and 420 px and checked with axe-core.

Set ``CLIPDEX_WEB_SHOTS=DIR`` to keep the screenshots.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from retrieval.cli import main
from retrieval.index import Index
from retrieval.server import create_app
from retrieval.settings import load_settings
from tests.axe import axe_source, serious_violations
from tests.chromium import browser_session
from tests.conftest import write_config
from tests.images import pattern
from tests.photos import render
from tests.test_server import serving
from tests.test_video_dups import transcode
from tests.test_web_views import WIDTHS, open_page, scroll_until, shot, shown, viewer_info, wait
from tests.videos import write_video

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

HOSTILE = "<img src=x onerror=alert(1)>.mp4"  # a legal file name: it must show as text
SIZE = (192, 144)
LOADED = "return [...arguments[0].querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)"


@dataclass
class Served:
    url: str
    http: httpx.Client
    lib: Path
    videos: dict[str, Path]
    photos: list[Path]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    """Three photos; a video of three scenes and two re-encodes of it (a duplicate group); a video of five
    scenes; a one-scene video whose name is markup; served with [duplicates] move_to."""
    tmp = tmp_path_factory.mktemp("video-page")
    lib = tmp / "lib"
    (lib / "copies").mkdir(parents=True)
    photos = [lib / f"photo-{i}.png" for i in range(3)]
    for i, path in enumerate(photos):
        pattern(40 + i, (160, 120)).save(path)
    orig = write_video(lib / "holiday.mp4", [(render(1, size=SIZE), 2.0), (render(2, size=SIZE), 2.0),
                                             (render(3, size=SIZE), 2.0)], size=SIZE, options={"crf": "20"},
                       creation_time="2022-07-14T09:30:00Z")
    videos = {
        "holiday": orig,
        "small": transcode(orig, lib / "copies" / "holiday-small.webm", (96, 72), {"crf": "36", "b": "0"}),
        "low": transcode(orig, lib / "copies" / "holiday-low.mkv", SIZE, {"crf": "34"}),
        "talk": write_video(lib / "talk.mp4", [(render(10 + i, size=SIZE), 1.5) for i in range(5)], size=SIZE),
        "hostile": write_video(lib / HOSTILE, [(render(20, size=SIZE), 2.0)], size=SIZE),
    }
    config = write_config(tmp / "clipdex.toml", tiny_model_dir, tmp / "store")
    with config.open("a") as fh:
        fh.write(f'[duplicates]\nmove_to = "{tmp / "aside"}"\n')
    assert main(["ingest", str(lib), "--config", str(config)]) == 0
    with Index.open(load_settings(config)) as index, serving(create_app(index)) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        yield Served(url, http, lib, videos, photos)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    with browser_session(tmp_path_factory, "chromium-video-page") as driver:
        yield driver


@pytest.fixture(scope="module")
def axe() -> str:
    return axe_source()


def test_browse_and_moments_api(served: Served) -> None:
    doc = served.http.get("/api/browse", params={"by": "folder", "limit": 500, "sections": "true"}).json()
    paths = [r["path"] for r in doc["items"]]
    assert len(paths) == len(set(paths)) == doc["total"] == 3 + 5 and doc["videos"] == 5  # one entry per video
    status = served.http.get("/api/status").json()
    assert status["moments"] > 5  # the store holds more moments than the library shows cards
    videos = {Path(r["path"]).name: r for r in doc["items"] if r["media"] == "video"}
    talk = videos["talk.mp4"]
    assert "start_s" not in talk and talk["moments"] == 5 and talk["duration_s"] == pytest.approx(7.5, abs=0.2)
    assert 1.5 <= talk["time_s"] < 3.0  # the moment showing a third of it (past a black or faded start)
    moments = served.http.get("/api/moments", params={"path": talk["path"]}).json()
    assert [round(m["start_s"], 1) for m in moments["moments"]] == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert all(m["start_s"] <= m["time_s"] < m["end_s"] for m in moments["moments"])
    for bad in (str(served.photos[0]), str(served.lib / "none.mp4"), "x" * 5000):
        answer = served.http.get("/api/moments", params={"path": bad})
        assert answer.status_code in (404, 422) and "error" in answer.json()


@pytest.mark.parametrize("width", WIDTHS)
def test_library_shows_one_card_per_video(served: Served, browser: webdriver.Chrome, axe: str, tmp_path: Path,
                                          width: int) -> None:
    driver = browser
    open_page(driver, served.url + "/#library/folder", width)
    wait(driver, lambda d: "videos" in d.find_element(By.ID, "library-summary").text, "no summary")
    assert driver.find_element(By.ID, "library-summary").text == "3 photos and 5 videos in 2 folders"
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#library .card")) == 8, "not one card per video")
    cards = shown(driver, "#library .card")
    assert sorted(cards) == sorted(map(str, [*served.photos, *served.videos.values()]))
    talk = driver.find_element(By.CSS_SELECTOR, f'#library .card[data-path="{served.videos["talk"]}"]')
    assert talk.find_element(By.CSS_SELECTOR, ".badge").text == "▶ 0:07"
    src = talk.find_element(By.CSS_SELECTOR, "img").get_attribute("src")
    assert "/api/image?" in src and "&t=" in src
    hostile = [c for c in driver.find_elements(By.CSS_SELECTOR, "#library .card") if HOSTILE in c.text]
    assert len(hostile) == 1 and not driver.find_elements(By.CSS_SELECTOR, "#library img[src=x]")
    wait(driver, lambda d: d.execute_script(LOADED, d.find_element(By.ID, "library")), "the frames never loaded")
    assert serious_violations(driver, axe) == []
    shot(driver, tmp_path, f"video-library-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_viewer_strip_jumps_to_a_moment(served: Served, browser: webdriver.Chrome, axe: str, tmp_path: Path,
                                        width: int) -> None:
    driver = browser
    open_page(driver, served.url + "/#library/folder", width)
    card = scroll_until(driver, f'#library .card[data-path="{served.videos["talk"]}"] .thumb')
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", card)
    card.click()
    wait(driver, lambda d: d.find_element(By.ID, "viewer").is_displayed(), "the viewer never opened")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#viewer-moments .moment")) == 5, "no strip")
    strip = driver.find_elements(By.CSS_SELECTOR, "#viewer-moments .moment")
    assert [b.text for b in strip] == ["0:00", "0:01", "0:03", "0:04", "0:06"]
    assert [b.get_attribute("aria-label") for b in strip][:2] == ["play from 0:00", "play from 0:01"]
    assert viewer_info(driver)["Duration"] == "0:07 · 5 moments" and "Moment" not in viewer_info(driver)
    wait(driver, lambda d: d.execute_script("return document.querySelector('#viewer-media video').readyState >= 1"),
         "the video never loaded")
    wait(driver, lambda d: strip[0].get_attribute("aria-current") == "true", "the start is not marked")
    driver.execute_script("document.querySelector('#viewer-media video').muted = true")
    strip[3].click()  # 4.5 s: the video jumps there and plays
    wait(driver, lambda d: 4.5 <= d.execute_script("return document.querySelector('#viewer-media video').currentTime")
         < 7.6, "the video never jumped to the moment")
    wait(driver, lambda d: strip[3].get_attribute("aria-current") == "true", "the moment playing is not marked")
    assert [b.get_attribute("aria-current") for b in strip].count("true") == 1
    wait(driver, lambda d: d.execute_script("return [...document.querySelectorAll('#viewer-moments img')].every("
                                            "i => i.complete && i.naturalWidth > 0)"), "the strip's frames")
    driver.execute_script("const v = document.querySelector('#viewer-media video'); v.pause(); v.currentTime = 4.6")
    assert serious_violations(driver, axe) == []
    shot(driver, tmp_path, f"video-viewer-{width}")
    driver.find_element(By.ID, "viewer-close").click()


def test_search_results_keep_one_card_per_hit(served: Served, browser: webdriver.Chrome, tmp_path: Path) -> None:
    driver = browser
    open_page(driver, served.url + "/#search", 1280)
    expected = served.http.get("/api/search", params={"q": "a photo", "limit": 20}).json()
    moments = [r for r in expected if r["media"] == "video"]
    assert len(moments) == len({r["path"] for r in moments}) == 5  # one moment per video, by default
    driver.find_element(By.ID, "q").send_keys("a photo", Keys.ENTER)
    wait(driver, lambda d: shown(d, "#results .card") == [r["path"] for r in expected], "results never matched")
    for row in moments:
        card = driver.find_element(By.CSS_SELECTOR, f'#results .card[data-path="{row["path"]}"]')
        minutes, seconds = divmod(int(row["start_s"]), 60)
        assert card.find_element(By.CSS_SELECTOR, ".badge").text == f"▶ {minutes}:{seconds:02d}"
    shot(driver, tmp_path, "video-search-1280")


def test_duplicates_view_shows_the_video_group(served: Served, browser: webdriver.Chrome, axe: str,
                                               tmp_path: Path) -> None:
    driver = browser
    holiday = str(served.videos["holiday"])
    for width in WIDTHS:
        open_page(driver, served.url + "/#duplicates", width)
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#dups-groups .dup-group"), "no duplicate groups")
        groups = driver.find_elements(By.CSS_SELECTOR, "#dups-groups .dup-group")
        (group,) = [g for g in groups if g.get_attribute("data-keep") == holiday]
        files = group.find_elements(By.CSS_SELECTOR, ".dup-file")
        assert [f.get_attribute("data-path") for f in files] == [holiday, str(served.videos["low"]),
                                                                 str(served.videos["small"])]
        assert all(f.find_element(By.CSS_SELECTOR, ".duration").text == "▶ 0:06" for f in files)
        facts = [f.find_element(By.CSS_SELECTOR, ".video-facts").text for f in files]
        assert facts[0].startswith("h264 · 0:06 · ") and facts[2].startswith("vp9 · ")
        srcs = [f.find_element(By.CSS_SELECTOR, "img").get_attribute("src") for f in files]
        assert all("&t=" in s for s in srcs) and len({s.split("&t=")[1] for s in srcs}) == 1  # the same time
        wait(driver, lambda d, g=group: d.execute_script(LOADED, g), "frames never loaded")
        assert "highest bitrate at the same resolution" in group.find_element(By.CSS_SELECTOR, ".why").text
        assert serious_violations(driver, axe) == []
        shot(driver, tmp_path, f"video-duplicates-{width}")

    files[1].find_element(By.CSS_SELECTOR, ".thumb").click()  # the viewer plays a copy, with its strip
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#viewer-moments .moment")) == 3, "no strip")
    driver.find_element(By.ID, "viewer-close").click()
    group.find_element(By.CSS_SELECTOR, ".dup-move").click()
    wait(driver, lambda d: "moved 2 files" in d.find_element(By.ID, "dups-summary").text, "the move never said so")
    assert served.videos["holiday"].exists() and not served.videos["small"].exists()
    driver.find_element(By.ID, "dups-undo").click()
    wait(driver, lambda d: d.find_element(By.ID, "notice-text").text == "put back 2 files", "undo said nothing")
    assert served.videos["small"].exists() and served.videos["low"].exists()
    wait(driver, lambda d: holiday in [g.get_attribute("data-keep") for g in
                                       d.find_elements(By.CSS_SELECTOR, ".dup-group")], "the group never came back")
