"""The browser-facing headers of ``clipdex serve`` (issue 26, case 12), against a real server and a real Chromium.

Another site must not frame the page (a click inside a frame moved a file) nor learn which paths are indexed
(a cross-site ``<img src=…/api/image?path=…>`` loaded for indexed paths and gave their size). The page must still
work under its own Content-Security-Policy.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from retrieval.server import WEB_DIR
from retrieval.serving.middleware import content_security_policy, inline_hashes
from tests.chromium import TIMEOUT, browser_session
from tests.test_server import QUERY, Live, live_library

SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "cross-origin-resource-policy": "same-origin",
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Live]:
    with live_library(tmp_path_factory.mktemp("headers"), tiny_model_dir) as served:
        yield served


def assert_protected(response, what: str) -> None:  # noqa: ANN001
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, f"{what}: {name} is {response.headers.get(name)!r}"
    csp = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp, f"{what}: CSP {csp!r}"
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp


def test_every_answer_carries_the_security_headers(live: Live):
    indexed = str(live.good[0])
    answers = {
        "the page": live.http.get("/"),
        "status": live.http.get("/api/status"),
        "an image": live.http.get("/api/image", params={"path": indexed}),
        "a thumbnail": live.http.get("/api/image", params={"path": indexed, "thumb": 64}),
        "a 404": live.http.get("/api/image", params={"path": str(live.root / "nope.png")}),
        "a 422": live.http.get("/api/search", params={"limit": "many"}),
        "an unknown route": live.http.get("/nothing-here"),
        "HEAD of the page": live.http.head("/"),
    }
    assert answers["the page"].status_code == 200 and answers["an image"].status_code == 200
    for what, response in answers.items():
        assert_protected(response, what)
    # The page has no inline blocks (its scripts and style sheet are served from /static/): its CSP allows
    # same-origin files only, no hash, nothing inline; the static files carry the headers too.
    page = answers["the page"].text
    csp = answers["the page"].headers["content-security-policy"]
    assert inline_hashes(page) == {"script": [], "style": []}
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "sha256" not in csp
    assert csp == content_security_policy((WEB_DIR / "index.html").read_text(encoding="utf-8"))
    for asset in ("app.js", "app.css"):
        assert_protected(live.http.get(f"/static/{asset}"), asset)


@pytest.mark.parametrize("site", ["cross-site", "same-site", "CROSS-SITE"])
def test_api_reads_marked_cross_site_are_refused(live: Live, site: str):
    indexed = str(live.good[0])
    requests = [
        ("GET", "/api/image", {"path": indexed}),
        ("GET", "/api/image", {"path": indexed, "thumb": 64}),
        ("GET", "/api/image", {"path": str(live.root / "not-indexed.png")}),
        ("GET", "/api/search", {"text": QUERY}),
        ("GET", "/api/status", {}),
        ("GET", "/api/duplicates", {}),
        ("POST", "/api/search", {"text": QUERY}),
        ("HEAD", "/api/image", {"path": indexed}),
    ]
    for method, route, params in requests:
        response = live.http.request(method, route, params=params, headers={"Sec-Fetch-Site": site})
        assert response.status_code == 403, (method, route, response.status_code)
        if method != "HEAD":
            message = response.json()["error"]
            assert "cross-site request refused" in message and "\n" not in message
        assert_protected(response, f"{method} {route}")
    # The same reads from the page itself, from a typed URL, or from a non-browser client are served.
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}):
        assert live.http.get("/api/image", params={"path": indexed}, headers=headers).status_code == 200
        assert live.http.get("/api/search", params={"text": QUERY}, headers=headers).status_code == 200
    # The page itself may be opened from a link on another site (it is framed by nobody, see below).
    assert live.http.get("/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


# -- real Chromium -----------------------------------------------------------------------------------------------


webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    with browser_session(tmp_path_factory, "chromium-headers") as driver:
        yield driver


@contextmanager
def hostile_site(html: str) -> Iterator[str]:
    """Another site: ``html`` served on its own port under the name ``localhost`` (the server is ``127.0.0.1``)."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def csp_violations(driver) -> list[str]:  # noqa: ANN001
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


def test_another_site_can_neither_frame_the_page_nor_probe_indexed_paths(live: Live, browser):  # noqa: ANN001
    indexed, missing = str(live.good[0]), str(live.root / "not-indexed.png")
    html = f"""<!doctype html><body>
<iframe id="frame" src="{live.url}/" width="800" height="600" onload="this.dataset.loaded = 1"></iframe>
<img id="indexed" src="{live.url}/api/image?path={quote(indexed)}">
<img id="thumb" src="{live.url}/api/image?thumb=64&amp;path={quote(indexed)}">
<img id="missing" src="{live.url}/api/image?path={quote(missing)}">
</body>"""
    with hostile_site(html) as url:
        browser.get(url)
        WebDriverWait(browser, TIMEOUT).until(
            lambda d: d.execute_script("return [...document.images].every(i => i.complete)"
                                       " && document.getElementById('frame').dataset.loaded"), "never settled")
        browser.switch_to.frame(browser.find_element(By.ID, "frame"))
        try:
            framed = browser.execute_script("return [location.href, !!document.getElementById('q')]")
        finally:
            browser.switch_to.default_content()
        assert framed[1] is False, f"the page rendered inside another site's frame: {framed}"
        sizes = browser.execute_script("return [...document.images].map(i => [i.id, i.naturalWidth])")
        # Indexed or not, the other site sees the same failure: no size, no difference.
        assert sizes == [["indexed", 0], ["thumb", 0], ["missing", 0]], sizes


def test_the_page_works_under_its_content_security_policy(live: Live, browser, tmp_path: Path):  # noqa: ANN001
    browser.get(live.url + "/")
    browser.get_log("browser")  # what earlier pages logged
    browser.refresh()
    wait = WebDriverWait(browser, TIMEOUT)
    wait.until(lambda d: "photos" in d.find_element(By.ID, "status").text, "the page's script did not run")
    # Its stylesheet applied: the header is laid out as a flex row, as the inline <style> says.
    assert browser.execute_script("return getComputedStyle(document.querySelector('header')).display") == "flex"
    browser.find_element(By.ID, "q").send_keys(QUERY, Keys.ENTER)
    expected = live.search(text=QUERY, limit=10)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card")) == len(expected), "no results")
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"),
        "thumbnails did not load under the CSP")
    # An uploaded example's preview is a blob: URL: allowed too.
    browser.find_element(By.ID, "image").send_keys(str(live.good[1]))
    wait.until(lambda d: d.execute_script(
        "const p = document.getElementById('preview'); return p.src.startsWith('blob:') && p.complete"
        " && p.naturalWidth > 0"), "the upload preview did not show")
    shot = tmp_path / "page-under-csp.png"
    assert browser.save_screenshot(str(shot))
    violations = csp_violations(browser)
    assert violations == [], violations
    if os.environ.get("CLIPDEX_HEADERS_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["CLIPDEX_HEADERS_SCREENSHOT"])
