"""``clipdex serve``: the HTTP API against a real uvicorn server, a real tiny model and a real store.

Every answer is compared with what the CLI printed (``--json``) or what the library returns for the
same query, never with hard-coded results.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import retrieval.cli.serve_cmd  # noqa: F401  (registers `serve` until retrieval/cli/__init__.py imports it)
from ingest.exif import parse_date
from retrieval import load_settings
from retrieval.cli import main
from retrieval.cli.serve_cmd import listen
from retrieval.index import Index
from retrieval.search.request import MAX_NEGATIVES, MAX_TEXT_CHARS
from retrieval.server import create_app
from retrieval.serving.protocol import uvicorn_config
from tests.conftest import write_config
from tests.hostile import bomb_png
from tests.images import LIBRARY_EXIF, write_library

QUERY = "a colourful patchwork of squares"


def run_cli(*args: str | os.PathLike[str]) -> tuple[int, str, str]:
    """The real CLI entry point in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@contextmanager
def serving(app: Any, **config: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread on a free loopback port; yield its base URL.

    ``config``: more keywords of :func:`retrieval.serving.protocol.uvicorn_config` (e.g. ``timeouts``)."""
    import uvicorn

    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(app, log_level="warning", access_log=False, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@dataclass
class Live:
    """A served, ingested library and what the CLI said about it before the server opened the store."""

    url: str
    index: Index
    lock: threading.Lock
    root: Path
    good: list[Path]
    broken: list[Path]
    cli_rows: list[dict[str, Any]]
    cli_status: dict[str, Any]
    http: httpx.Client

    def search(self, **kwargs: Any) -> list[tuple[str, float]]:
        """(path, score) pairs of the library's own search (under the server's lock)."""
        with self.lock:
            hits = self.index.search(**kwargs)
        return [(h.payload["path"], round(h.score, 6)) for h in hits]


@contextmanager
def live_library(tmp: Path, model_dir: Path) -> Iterator[Live]:
    """Ingest a real library with the CLI, then serve it from one shared Index."""
    library = write_library(tmp / "lib")
    config = write_config(tmp / "clipdex.toml", model_dir, tmp / "store")
    code, _, err = run_cli("ingest", tmp / "lib", "--config", config, "--json")
    assert code == 0, err
    code, out, err = run_cli("search", QUERY, "--limit", "4", "--config", config, "--json")
    assert code == 0, err
    cli_rows = json.loads(out)
    code, out, err = run_cli("status", "--config", config, "--json")
    assert code == 0, err
    cli_status = json.loads(out)
    with Index.open(load_settings(config)) as index:
        app = create_app(index)
        with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            yield Live(url, index, app.state.service.lock, tmp / "lib", library["good"], library["broken"],
                       cli_rows, cli_status, http)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Live]:
    with live_library(tmp_path_factory.mktemp("serve"), tiny_model_dir) as served:
        yield served


def assert_error(response: httpx.Response, status: int | tuple[int, ...], *needles: str) -> str:
    """A JSON ``{"error": one line}`` answer with the expected status, mentioning ``needles``."""
    assert response.status_code in ((status,) if isinstance(status, int) else status), response.text
    message = response.json()["error"]
    assert message and "\n" not in message
    for needle in needles:
        assert needle in message
    return message


# -- status and search ---------------------------------------------------------------------------------


def test_status_is_the_cli_status(live: Live):
    body = live.http.get("/api/status").json()
    assert {k: body[k] for k in live.cli_status} == live.cli_status
    assert body["points"] == len(live.good)
    assert body["label"] == live.index.settings.model.label
    assert body["pretrained"] == live.index.status()["pretrained"]


def test_text_search_rows_equal_the_cli_and_the_library(live: Live):
    rows = live.http.get("/api/search", params={"q": QUERY, "limit": 4}).json()
    assert rows == live.cli_rows  # same rows, same shape as `clipdex search --json`
    assert [(r["path"], r["score"]) for r in rows] == live.search(text=QUERY, limit=4)
    assert all("ancestors" not in r and {"path", "score", "hash", "size"} <= r.keys() for r in rows)


def test_default_limit_comes_from_the_settings(live: Live):
    rows = live.http.get("/api/search", params={"q": QUERY}).json()
    assert len(rows) == min(live.index.settings.search.limit, len(live.good))
    assert [(r["path"], r["score"]) for r in rows] == live.search(text=QUERY)


@pytest.mark.parametrize("params, kwargs", [
    ({"negative": ["a grey photo", "a dark picture"]}, {"negative": ["a grey photo", "a dark picture"]}),
    ({"negative": "a grey photo", "negative_weight": 1.5, "text_weight": 0.7},
     {"negative": ["a grey photo"], "negative_weight": 1.5, "text_weight": 0.7}),
    ({"folder": "{root}/a"}, {"folder": "{root}/a"}),
    ({"min_score": 0.0}, {"min_score": 0.0}),
    ({"after": "2001", "before": "2030-06"}, {"after": parse_date("2001"), "before": parse_date("2030-06")}),
    ({"camera": "Canon"}, {"camera": "Canon"}),
])
def test_filters_and_weights_pass_through(live: Live, params: dict[str, Any], kwargs: dict[str, Any]):
    params = {k: v.format(root=live.root) if isinstance(v, str) else v for k, v in params.items()}
    kwargs = {k: v.format(root=live.root) if isinstance(v, str) else v for k, v in kwargs.items()}
    rows = live.http.get("/api/search", params={"q": QUERY, "limit": 20, **params}).json()
    assert [(r["path"], r["score"]) for r in rows] == live.search(text=QUERY, limit=20, **kwargs)


def _utc(text: str) -> float:
    return datetime.strptime(text, "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize("params, start, end, cameras", [
    ({"after": "2021", "before": "2023"}, "2021:01:01 00:00:00", "2023:01:01 00:00:00", None),
    ({"after": "2022-10-10T16:45"}, "2022:10:10 16:45:00", None, None),  # on or after: the exact second counts
    ({"before": "2020-02-02"}, None, "2020:02:02 00:00:00", None),
    ({"camera": "Canon"}, None, None, {"Canon"}),  # a make
    ({"camera": "iPhone 14"}, None, None, {"iPhone 14"}),  # a model
    ({"camera": "Apple", "after": "2023"}, "2023:01:01 00:00:00", None, {"Apple"}),
])
def test_date_and_camera_filters_include_some_and_exclude_others(live: Live, params: dict[str, str],
                                                                  start: str | None, end: str | None,
                                                                  cameras: set[str] | None):
    """The library's files carry real EXIF (tests/images.py LIBRARY_EXIF): each filter must split them."""
    def wanted(taken: str, make: str, model: str) -> bool:
        return ((start is None or _utc(taken) >= _utc(start)) and (end is None or _utc(taken) < _utc(end))
                and (cameras is None or bool({make, model} & cameras)))

    expected = {str(live.root / name) for name, exif in LIBRARY_EXIF.items() if wanted(*exif)}
    assert 0 < len(expected) < len(live.good)
    rows = live.http.get("/api/search", params={"q": QUERY, "limit": 20, **params}).json()
    assert {r["path"] for r in rows} == expected
    assert all(r["taken_at"] and {"camera_make", "camera_model"} <= r.keys() for r in rows)
    kwargs = {k: parse_date(v) if k in ("after", "before") else v for k, v in params.items()}
    assert [(r["path"], r["score"]) for r in rows] == live.search(text=QUERY, limit=20, **kwargs)


def test_negative_prompt_and_folder_change_the_answer(live: Live):
    plain = live.http.get("/api/search", params={"q": QUERY, "limit": 20}).json()
    steered = live.http.get("/api/search", params={"q": QUERY, "limit": 20, "negative": "a grey photo"}).json()
    assert [r["score"] for r in plain] != [r["score"] for r in steered]
    below = live.http.get("/api/search", params={"q": QUERY, "limit": 20, "folder": str(live.root / "a")}).json()
    expected = sorted(str(p) for p in live.good if (live.root / "a") in p.parents)
    assert sorted(r["path"] for r in below) == expected


def test_uploaded_example_image_finds_itself_first(live: Live):
    target = live.good[1]  # a/two.jpg
    with target.open("rb") as fh:
        response = live.http.post("/api/search", files={"image": ("query.jpg", fh, "image/jpeg")},
                                  data={"limit": "3"})
    rows = response.json()
    assert response.status_code == 200, rows
    assert rows[0]["path"] == str(target) and rows[0]["score"] >= 0.99
    assert [(r["path"], r["score"]) for r in rows] == live.search(image=target, limit=3)


def test_upload_with_text_and_negatives_equals_the_library(live: Live):
    target = live.good[0]
    data = {"q": QUERY, "negative": ["a grey photo", "a dark picture"], "limit": "5", "image_weight": "2"}
    response = live.http.post("/api/search", files={"image": ("x.png", target.read_bytes(), "image/png")},
                              data=data)
    assert response.status_code == 200, response.text
    expected = live.search(text=QUERY, image=target, negative=["a grey photo", "a dark picture"], limit=5,
                           image_weight=2.0)
    assert [(r["path"], r["score"]) for r in response.json()] == expected


def test_post_without_an_image_is_a_text_search(live: Live):
    rows = live.http.post("/api/search", data={"q": QUERY, "limit": "4"}).json()
    assert rows == live.cli_rows


@pytest.mark.parametrize("name, content, reason", [
    ("notes.png", b"this is not an image, just text\n", "not an image (looks like text)"),
    ("page.jpg", b"<!doctype html><html><body>hi</body></html>", "not an image (looks like HTML)"),
    ("bomb.png", bomb_png(), "image too large"),
    ("empty.png", b"", "empty file"),
])
def test_bad_uploads_are_400_with_the_decoders_reason(live: Live, name: str, content: bytes, reason: str):
    response = live.http.post("/api/search", files={"image": (name, content, "image/png")}, data={"limit": "3"})
    message = assert_error(response, 400, reason, name)
    assert "clipdex-upload-" not in message  # the temporary file's name never leaks


def test_oversized_upload_is_413(live: Live):
    from fastapi.testclient import TestClient

    small = create_app(live.index, max_upload_bytes=1000)  # same Index object: no second opener
    small.state.service.lock = live.lock
    with TestClient(small) as client:
        response = client.post("/api/search", files={"image": ("big.png", b"\x89PNG" + b"\0" * 5000)})
    assert_error(response, 413, "larger than")


# -- images ----------------------------------------------------------------------------------------------


def test_image_serves_indexed_files_with_their_type(live: Live):
    for path in live.good:
        response = live.http.get("/api/image", params={"path": str(path)})
        assert response.status_code == 200, response.text
        assert response.content == path.read_bytes()
        with Image.open(path) as im:
            assert response.headers["content-type"] == Image.MIME[im.format]
        assert response.headers["x-content-type-options"] == "nosniff"


def test_thumbnail_is_a_small_jpeg(live: Live):
    path = live.good[-1]  # b/rotated.jpg: EXIF orientation applied, like ingest does
    response = live.http.get("/api/image", params={"path": str(path), "thumb": 32})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    assert thumb.format == "JPEG" and max(thumb.size) == 32
    with Image.open(path) as original:
        width, height = original.size
    assert (thumb.width < thumb.height) == (height < width)  # upright: the stored picture is sideways


def test_image_refuses_everything_not_indexed(live: Live, tmp_path: Path):
    one = live.good[0]  # lib/a/one.png
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    tricks = [
        "/etc/passwd",
        str(outside),  # a real image, but not in the collection
        str(live.broken[2]),  # inside the library, but it failed to ingest
        f"{live.root}/a/../a/{one.name}",
        f"{live.root}/b/../../{live.root.name}/a/{one.name}",
        f"{live.root}//a/{one.name}",
        f"{live.root}/a/./{one.name}",
        os.path.relpath(one),
        f"a/{one.name}",
        f"../../../../../../../../{str(one).lstrip('/')}",
        f"file://{one}",
        f"{one}\x00.png",
        str(live.root / "a"),
        "",
    ]
    for path in tricks:
        response = live.http.get("/api/image", params={"path": path, "thumb": 64})
        assert_error(response, 404, "not an indexed file")
        response = live.http.get("/api/image", params={"path": path})
        assert_error(response, 404, "not an indexed file")
    raw = live.http.get("/api/image?path=..%2F..%2F..%2Fetc%2Fpasswd")
    assert_error(raw, 404)
    assert live.http.get("/api/image", params={"path": str(one)}).status_code == 200  # while the real path is served


def test_image_of_a_file_deleted_since_ingest_is_404(live: Live):
    path = live.good[3]  # b/gray.png
    saved = path.read_bytes()
    path.unlink()
    try:
        assert_error(live.http.get("/api/image", params={"path": str(path)}), 404, "gone from disk")
    finally:
        path.write_bytes(saved)


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, status, needle", [
    ({"q": QUERY, "limit": 0}, 422, "limit"),
    ({"q": QUERY, "limit": -1}, 422, "limit"),
    ({"q": QUERY, "limit": "x"}, 422, "limit"),
    ({"q": QUERY, "limit": 10001}, 422, "limit"),
    ({"q": QUERY, "min_score": 2}, 422, "min_score"),
    ({"q": QUERY, "text_weight": -1}, 422, "text_weight"),
    ({"q": QUERY, "after": "yesterday"}, 422, "invalid date 'yesterday'"),
    ({"q": QUERY, "after": "2022", "before": "2021"}, 422, "after must be earlier than before"),
    ({"q": QUERY, "text_weight": "inf"}, 422, "text_weight: Input should be a finite number"),
    ({"q": QUERY, "negative_weight": "-inf"}, 422, "negative_weight"),
    ({"q": QUERY, "min_score": "nan"}, 422, "min_score: Input should be a finite number"),
    ({"q": QUERY, "negative": ["x"] * (MAX_NEGATIVES + 1)}, 422,
     f"negative: Value should have at most {MAX_NEGATIVES} items"),
    ({"q": QUERY, "negative": "n" * (MAX_TEXT_CHARS + 1)}, 422, f"at most {MAX_TEXT_CHARS} characters"),
    ({"q": "q" * (MAX_TEXT_CHARS + 1)}, 422, f"q: String should have at most {MAX_TEXT_CHARS} characters"),
    ({}, 400, "needs a text"),
    ({"q": "   "}, 400, "needs a text"),
])
def test_bad_search_inputs_are_4xx_with_one_line(live: Live, params: dict[str, Any], status: int, needle: str):
    assert_error(live.http.get("/api/search", params=params), status, needle)


def test_bad_form_fields_and_unknown_routes(live: Live):
    assert_error(live.http.post("/api/search", data={"q": QUERY, "limit": "0"}), 422, "limit")
    assert_error(live.http.post("/api/search", data={"q": QUERY, "text_weight": "inf"}), 422, "text_weight", "finite")
    assert_error(live.http.post("/api/search", data={"q": QUERY, "negative": ["x"] * (MAX_NEGATIVES + 1)}), 422,
                 "negative", str(MAX_NEGATIVES))
    assert_error(live.http.get("/api/image"), 422, "path")
    assert_error(live.http.get("/api/image", params={"path": str(live.good[0]), "thumb": 1}), 422, "thumb")
    assert_error(live.http.get("/api/nothing"), 404)
    assert_error(live.http.delete("/api/search"), 405)


def test_page_is_served(live: Live):
    response = live.http.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert '<form id="search"' in response.text
    # its scripts and style sheet are served beside it (no inline script or style: a strict CSP holds)
    assert '<script type="module" src="/static/app.js">' in response.text and "<style" not in response.text
    assets = {name: live.http.get(f"/static/{name}") for name in
              ("app.js", "app.css", "browse.js", "cards.js", "dups.js", "viewer.js", "util.js", "extensions.js")}
    assert all(r.status_code == 200 for r in assets.values())
    assert assets["app.js"].headers["content-type"].startswith("text/javascript")
    assert assets["app.css"].headers["content-type"].startswith("text/css")
    assert "/api/search" in assets["app.js"].text
    for text in [response.text, *(r.text for r in assets.values())]:
        assert "http://" not in text and "https://" not in text  # self-contained: no CDN
    for name in ("index.html", "../server.py", "nope.js", "%2e%2e%2fserver.py"):
        assert live.http.get(f"/static/{name}").status_code == 404
    assert live.http.get("/openapi.json").json()["paths"].keys() >= {"/api/status", "/api/search", "/api/image"}


def test_other_host_headers_are_refused_when_asked(live: Live):
    from fastapi.testclient import TestClient

    guarded = create_app(live.index, allowed_hosts=["127.0.0.1", "localhost"])
    guarded.state.service.lock = live.lock
    with TestClient(guarded, base_url="http://localhost") as client:
        assert client.get("/api/status").status_code == 200
        assert client.get("/api/status", headers={"host": "evil.example"}).status_code == 400


# -- an empty store, and the command itself ---------------------------------------------------------------


def test_missing_store_still_serves(tmp_path: Path, tiny_model_dir: Path):
    from fastapi.testclient import TestClient

    config = write_config(tmp_path / "empty.toml", tiny_model_dir, tmp_path / "nothing-here")
    with Index.open(load_settings(config)) as index, TestClient(create_app(index)) as client:
        status = client.get("/api/status").json()
        assert status["points"] == 0 and status["collection"] == "test"
        assert_error(client.get("/api/search", params={"q": QUERY}), 400, "run `clipdex ingest DIR")
        assert_error(client.get("/api/image", params={"path": "/etc/passwd"}), 404)
    assert not (tmp_path / "nothing-here").exists()  # serving never creates a store


def test_serve_rejects_a_bad_port_and_a_busy_one(tmp_path: Path, tiny_model_dir: Path):
    code, _, err = run_cli("serve", "--port", "70000")
    assert code == 2 and "70000" in err and "--port" in err
    code, _, err = run_cli("serve", "--port", "x")
    assert code == 2 and "--port" in err
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    busy = listen("127.0.0.1", 0)
    try:
        code, _, err = run_cli("serve", "--port", str(busy.getsockname()[1]), "--config", config)
    finally:
        busy.close()
    assert code == 1 and err.startswith("clipdex: error: cannot listen on 127.0.0.1:") and err.count("\n") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_clipdex_serve_command_serves_and_stops_cleanly(tmp_path: Path, tiny_model_dir: Path):
    """The real command in this process (main thread, real signals): probe it, then SIGTERM it."""
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    seen: dict[str, Any] = {}

    def probe() -> None:
        deadline = time.monotonic() + 45
        try:
            while True:
                try:
                    seen["status"] = httpx.get(f"{url}/api/status", timeout=5).json()
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        return
                    time.sleep(0.1)
            seen["page"] = httpx.get(f"{url}/").status_code
            seen["search"] = httpx.get(f"{url}/api/search", params={"q": QUERY}).json()
            seen["evil"] = httpx.get(f"{url}/api/status", headers={"host": "evil.example"}).status_code
        finally:  # uvicorn handles SIGTERM in the main thread; SIGINT if it never came up
            os.kill(os.getpid(), signal.SIGTERM if "status" in seen else signal.SIGINT)

    before = signal.getsignal(signal.SIGTERM)
    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    code, _, err = run_cli("serve", "--port", port, "--config", config, "--log-level", "warning")
    prober.join(10)
    assert code == 0, err
    assert seen["status"]["points"] == 0 and seen["status"]["collection"] == "test"
    assert seen["page"] == 200 and seen["evil"] == 400
    assert f"run `clipdex ingest DIR --config {config}` first" in seen["search"]["error"]  # the server's settings
    assert f"at {url}/" in err and "server stopped" in err
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
