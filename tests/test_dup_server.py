"""``/api/duplicates`` and ``/api/duplicates/resolve`` over a real served library, and the page's
Duplicates view in a real headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from retrieval.cli import main
from retrieval.index import Index
from retrieval.server import create_app
from retrieval.settings import load_settings
from tests.chromium import browser_session
from tests.conftest import write_config
from tests.test_duplicates import files_of, make_library
from tests.test_server import assert_error, serving

KEY = "s3cret-key"


@dataclass
class Served:
    url: str
    http: httpx.Client  # without a key
    keyed: httpx.Client  # with it
    lib: Path
    aside: Path
    families: dict[str, list[str]]
    shots: list[tuple[str, str]]
    cli: dict[str, Any]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("dupserve")
    made = make_library(tmp, families=3)
    config = write_config(tmp / "clipdex.toml", tiny_model_dir, tmp / "store")
    with config.open("a") as fh:
        fh.write(f'[duplicates]\nthreshold = 0.2\nmove_to = "{tmp / "aside"}"\n')
    assert main(["ingest", str(made["lib"]), "--config", str(config)]) == 0
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["duplicates", "--json", "--config", str(config)]) == 0
    cli = json.loads(out.getvalue())
    with Index.open(load_settings(config)) as index:
        app = create_app(index, api_key=KEY)
        with serving(app) as url, httpx.Client(base_url=url, timeout=60) as http, \
                httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as keyed:
            yield Served(url, http, keyed, made["lib"], tmp / "aside", made["families"], made["shots"], cli)


def test_groups_are_the_cli_groups_paged(served: Served):
    assert_error(served.http.get("/api/duplicates"), 401, "API key")
    assert_error(served.http.post("/api/duplicates/resolve", json={"action": "keep-all", "paths": ["/x"]}), 401)
    whole = served.keyed.get("/api/duplicates", params={"limit": 100}).json()
    assert whole["groups"] == served.cli["groups"] and whole["checked"] == served.cli["checked"]
    assert whole["total"] == len(served.cli["groups"]) >= 4 and whole["can_move"] is True
    pages = [served.keyed.get("/api/duplicates", params={"offset": i, "limit": 1}).json()
             for i in range(whole["total"])]
    assert [p["groups"][0] for p in pages] == whole["groups"]
    assert served.keyed.get("/api/duplicates", params={"offset": 999}).json()["groups"] == []
    first = whole["groups"][0]["files"][0]
    assert set(first) >= {"path", "width", "height", "size", "taken_at"}


@pytest.mark.parametrize(("method", "url", "kwargs", "status", "needle"), [
    ("get", "/api/duplicates", {"params": {"limit": 1000}}, 422, "limit"),
    ("get", "/api/duplicates", {"params": {"threshold": 2}}, 422, "threshold"),
    ("get", "/api/duplicates", {"params": {"threshold": 0}}, 422, "threshold"),
    ("get", "/api/duplicates", {"params": {"folder": "/no/such/folder"}}, 400, "no such folder"),
    ("post", "/api/duplicates/resolve", {"json": {"action": "delete", "paths": ["/a"]}}, 422, "action"),
    ("post", "/api/duplicates/resolve", {"json": {"action": "move", "paths": []}}, 422, "paths"),
    ("post", "/api/duplicates/resolve", {"json": {"action": "move", "paths": ["/not/indexed.jpg"]}}, 422,
     "keep"),
    ("post", "/api/duplicates/resolve", {"json": {"action": "move", "keep": "/a.jpg", "paths": ["/not/indexed.jpg"]}},
     409, "not one duplicate group"),
    ("post", "/api/duplicates/resolve", {"json": {"action": "not-duplicates", "paths": ["/not/indexed.jpg", "/b"]}},
     400, "not an indexed file"),
    ("post", "/api/duplicates/resolve", {"json": {"action": "not-duplicates", "paths": ["/a"] * 1001}}, 422, "paths"),
    ("post", "/api/duplicates/resolve", {"content": b"{not json", "headers": {"content-type": "application/json"}},
     422, ""),
])
def test_bad_requests_are_4xx_with_one_line(served: Served, method: str, url: str, kwargs: dict, status: int,
                                            needle: str):
    before = files_of(served.lib)
    assert_error(getattr(served.keyed, method)(url, **kwargs), status, needle)
    assert files_of(served.lib) == before


def test_cross_site_resolve_is_refused(served: Served):
    keep, dups = sorted(served.families.items())[0]
    response = served.keyed.post("/api/duplicates/resolve", headers={"Origin": "http://evil.example"},
                                 json={"action": "move", "keep": keep, "paths": dups})
    assert_error(response, 403, "cross-site")
    assert all(Path(p).exists() for p in dups)


def test_page_reviews_dismisses_and_moves(served: Served, tmp_path_factory: pytest.TempPathFactory):
    from selenium.webdriver.common.by import By

    from tests.test_web_page import wait

    with browser_session(tmp_path_factory, "chromium-dups") as driver:
        driver.get(served.url + "/api/status")  # the cookie's origin, before the page loads
        driver.add_cookie({"name": "clipdex_key", "value": KEY, "path": "/"})
        driver.get(served.url + "/#duplicates")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#dups-groups .dup-group"),
             "no duplicate groups shown")
        groups = driver.find_elements(By.CSS_SELECTOR, "#dups-groups .dup-group")
        total = len(groups)
        near = [g for g in groups if g.get_attribute("data-keep") in served.families]
        assert len(near) >= 2
        group = near[0]
        keeper = group.find_element(By.CSS_SELECTOR, ".dup-file.keeper")
        assert keeper.get_attribute("data-path") == group.get_attribute("data-keep")  # the keeper is marked
        assert "keep" in keeper.text and "384×288" in keeper.text and "2020-06-01" in keeper.text
        figures = group.find_elements(By.CSS_SELECTOR, ".dup-file")
        assert len(figures) == 6
        tops = {f.location["y"] for f in figures}
        assert len(tops) == 1  # side by side
        wait(driver, lambda d: d.execute_script(
            "return [...document.querySelectorAll('#dups-groups img')].slice(0, 6)"
            ".every(img => img.complete && img.naturalWidth > 0)"), "thumbnails never loaded")
        dismissed = group.get_attribute("data-keep")
        group.find_element(By.CSS_SELECTOR, ".dup-dismiss").click()
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dups-groups .dup-group")) == total - 1,
             "the dismissed group stayed")
        mover = next(g for g in driver.find_elements(By.CSS_SELECTOR, "#dups-groups .dup-group")
                     if g.get_attribute("data-keep") in served.families)
        moved_keep = mover.get_attribute("data-keep")
        mover.find_element(By.CSS_SELECTOR, ".dup-move").click()
        wait(driver, lambda d: "moved 5 files" in d.find_element(By.ID, "dups-summary").text, "the move never said so")
        assert Path(moved_keep).exists()
        assert all(not Path(p).exists() for p in served.families[moved_keep])
        assert all((served.aside / Path(p).relative_to(served.lib)).exists() for p in served.families[moved_keep])
        driver.find_element(By.ID, "dups-refresh").click()  # searched again: neither group comes back
        wait(driver, lambda d: "groups" in d.find_element(By.ID, "dups-summary").text or
             "no duplicates" in d.find_element(By.ID, "dups-summary").text, "the search never finished")
        keeps = {g.get_attribute("data-keep") for g in driver.find_elements(By.CSS_SELECTOR, "#dups-groups .dup-group")}
        assert dismissed not in keeps and moved_keep not in keeps
    again = served.keyed.get("/api/duplicates", params={"refresh": "true", "limit": 100}).json()
    assert {g["keep"] for g in again["groups"]} & {dismissed, moved_keep} == set()
