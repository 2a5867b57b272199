"""``clipdex search --paths`` (output that pipes) and ``--image URL`` (a query image fetched over http),
against a real store, a real tiny model and a real HTTP server on 127.0.0.1; and ``serve`` never fetching
a URL a client names."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from retrieval import load_settings
from retrieval.index import Index
from retrieval.server import create_app
from tests.conftest import write_config
from tests.images import pattern, write_library

QUERY = "a colourful patchwork of squares"


class Site:
    """A local web server whose routes the tests define; it records every request it is sent."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes | None, float]] = {}
        self.requests: list[str] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                site.requests.append(self.path)
                status, headers, body, delay = site.routes.get(self.path, (404, {}, b"not found", 0.0))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if body is not None and "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body is None:  # an endless body, sent slowly, without a declared length
                    try:
                        while True:
                            self.wfile.write(b"\0" * 4096)
                            time.sleep(delay)
                    except OSError:
                        return
                for start in range(0, len(body), 1024):
                    if delay:
                        time.sleep(delay)
                    try:
                        self.wfile.write(body[start:start + 1024])
                    except OSError:
                        return

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, path: str, body: bytes | None, status: int = 200, delay: float = 0.0, **headers: str) -> str:
        self.routes[path] = (status, headers, body, delay)
        return self.url + path


@pytest.fixture
def site() -> Iterator[Site]:
    web = Site()
    thread = threading.Thread(target=web.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield web
    finally:
        web.server.shutdown()
        web.server.server_close()


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path]:
    """An ingested library (config, root) with one file whose name holds a newline."""
    from retrieval.cli import main

    tmp = tmp_path_factory.mktemp("search-output")
    write_library(tmp / "lib")
    pattern(40).save(tmp / "lib" / "a" / "two\nlines.png")
    config = write_config(tmp / "clipdex.toml", tiny_model_dir, tmp / "store")
    config.write_text(config.read_text() + "[search]\nfetch_max_mb = 0.05\nfetch_timeout_s = 1.5\n")
    assert main(["ingest", str(tmp / "lib"), "--config", str(config)]) == 0
    return config, tmp / "lib"


def search(clipdex, config: Path, *args: str):  # type: ignore[no-untyped-def]
    return clipdex("search", *args, "--config", str(config), with_config=False)


# -- --paths ---------------------------------------------------------------------------------------------------


def test_paths_prints_exactly_the_json_rows_paths_in_order(clipdex, library):
    config, _ = library
    rows = search(clipdex, config, QUERY, "--limit", "5", "--json").json()
    result = search(clipdex, config, QUERY, "--limit", "5", "--paths")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [r["path"] for r in rows] and len(rows) == 5
    assert result.err == ""


def test_paths_leaves_out_a_path_with_a_newline_says_so_and_exits_1(clipdex, library):
    config, root = library
    odd = str(root / "a" / "two\nlines.png")
    rows = search(clipdex, config, "--like", odd, "--limit", "50", "--json").json()
    assert odd in [r["path"] for r in rows]  # it is indexed and found
    result = search(clipdex, config, "--like", odd, "--limit", "50", "--paths")
    assert result.code == 1
    printed = result.out.splitlines()
    assert printed == [r["path"] for r in rows if r["path"] != odd]  # every other path, one per line
    assert all(Path(p).is_file() for p in printed)
    left_out, error = result.err.splitlines()
    assert "two\\nlines.png" in left_out and "control character" in left_out
    assert error.startswith("clipdex: error: 1 matching path(s) left out")


def test_paths_with_no_results_prints_nothing(clipdex, library):
    config, root = library
    result = search(clipdex, config, QUERY, "--folder", str(root / "no-such-folder"), "--paths")
    assert (result.code, result.out) == (0, "")


def test_paths_and_json_together_is_a_usage_error(clipdex, library):
    config, _ = library
    result = search(clipdex, config, QUERY, "--paths", "--json")
    assert result.code == 2 and "--paths and --json" in result.err and result.out == ""


# -- --image URL ------------------------------------------------------------------------------------------------


def test_an_image_url_ranks_like_the_same_file(clipdex, library, site):
    config, root = library
    png = root / "a" / "one.png"
    url = site.add("/pics/one.png", png.read_bytes(), **{"Content-Type": "image/png"})
    by_file = search(clipdex, config, "--image", str(png), "--json").json()
    result = search(clipdex, config, "--image", url, "--json")
    assert result.code == 0, result.err
    assert result.json() == by_file and by_file[0]["path"] == str(png)
    assert site.requests == ["/pics/one.png"]


def test_a_missing_url_is_one_line_with_the_http_status(clipdex, library, site):
    config, _ = library
    result = search(clipdex, config, "--image", site.url + "/nothing.png")
    assert result.code == 1 and result.out == ""
    assert result.err.startswith("clipdex: error: cannot fetch") and "HTTP 404" in result.err
    assert result.err.count("\n") == 1


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_an_image_over_the_size_limit_is_refused_while_it_streams(clipdex, library, site, declared):
    config, _ = library  # fetch_max_mb = 0.05: 52 KiB
    # without a Content-Length, an endless body: the fetch must stop at the limit, not wait for the end
    url = site.add("/big.png", b"\0" * 200_000) if declared else site.add("/endless.png", None, delay=0.001)
    started = time.monotonic()
    result = search(clipdex, config, "--image", url)
    assert result.code == 1 and result.err.count("\n") == 1
    assert "limit" in result.err and "fetch_max_mb" in result.err
    assert time.monotonic() - started < 10


def test_a_server_too_slow_is_cut_off_at_the_time_limit(clipdex, library, site):
    config, root = library  # fetch_timeout_s = 1.5; this body would take about 30 s
    url = site.add("/slow.png", (root / "a" / "one.png").read_bytes() * 3, delay=1.0)
    started = time.monotonic()
    result = search(clipdex, config, "--image", url)
    assert result.code == 1 and result.err.count("\n") == 1
    assert "within 1.5 s" in result.err and "fetch_timeout_s" in result.err
    assert time.monotonic() - started < 8


def test_a_url_that_is_not_an_image_names_the_url(clipdex, library, site):
    config, _ = library
    url = site.add("/page.png", b"<!doctype html><html><body>hello</body></html>", **{"Content-Type": "text/html"})
    result = search(clipdex, config, "--image", url)
    assert result.code == 1 and result.err.count("\n") == 1
    assert f"cannot read query image {url}" in result.err and "clipdex-url-" not in result.err


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.png", "gopher://127.0.0.1/x"])
def test_other_schemes_are_refused(clipdex, library, url):
    config, _ = library
    result = search(clipdex, config, "--image", url)
    assert result.code == 1 and "only http and https" in result.err and result.err.count("\n") == 1


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999/x.png", "http:///x.png"])
def test_a_malformed_url_is_one_line(clipdex, library, url):
    config, _ = library
    result = search(clipdex, config, "--image", url)
    assert result.code == 1 and result.err.startswith(f"clipdex: error: cannot fetch {url}: ")
    assert result.err.count("\n") == 1 and "internal error" not in result.err


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/x.png", "file:///etc/passwd"])
def test_a_redirect_to_another_scheme_is_refused(clipdex, library, site, target):
    config, _ = library
    url = site.add("/moved.png", b"", status=302, Location=target)
    result = search(clipdex, config, "--image", url)
    assert result.code == 1 and result.err.count("\n") == 1 and target in result.err
    assert "only http and https" in result.err or "not allowed" in result.err


def test_the_fetched_file_is_removed(clipdex, library, site, tmp_path, monkeypatch):
    config, root = library
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    url = site.add("/one.png", (root / "a" / "one.png").read_bytes())
    assert search(clipdex, config, "--image", url).code == 0
    assert search(clipdex, config, "--image", site.url + "/missing.png").code == 1
    assert list(scratch.iterdir()) == []


# -- malformed HTTP answers (issue 26, case 18) ------------------------------------------------------------------


@contextmanager
def raw_site(answer: bytes) -> Iterator[str]:
    """A socket server on 127.0.0.1 that reads one request head and sends ``answer`` as it is, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                head = b""
                with suppress(OSError):
                    while b"\r\n\r\n" not in head and (data := conn.recv(4096)):
                        head += data
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/q.png"
    finally:
        done.set()
        thread.join(5)
        listener.close()


def _png(root: Path) -> bytes:
    return (root / "a" / "one.png").read_bytes()


MALFORMED = {
    "over 100 headers": lambda png: b"HTTP/1.1 200 OK\r\n" + b"X-Many: yes\r\n" * 150 + b"\r\n" + png,
    "a 200 KB header line": lambda png: b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n" + png,
    "a 200 KB status line": lambda png: b"HTTP/1.1 200 " + b"O" * 200_000 + b"\r\n\r\n" + png,
    "a bad status line": lambda png: b"HTTP/1.1 two-hundred OK\r\nContent-Length: 3\r\n\r\nabc",
    "a status out of range": lambda png: b"HTTP/1.1 99999 Odd\r\n\r\n" + png,
    "a bad chunk size": lambda png: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + png,
    "a chunk cut short": lambda png: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      + f"{len(png) * 2:x}".encode() + b"\r\n" + png),
    "an HTTP/0.9 body": lambda png: png,
    "control bytes in a 404's reason": lambda png: b"HTTP/1.1 404 \x1b]0;owned\x07\x1b[2J\r\n\r\n",
    "control bytes in a bad status line": lambda png: b"\x1b]0;owned\x07\x1b[2J\r\n\r\n" + png,
    "nothing at all": lambda png: b"",
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_http_answer_is_one_line(clipdex, library, case):
    """http.client's own exceptions (LineTooLong, BadStatusLine, IncompleteRead, "more than 100 headers")
    became ``internal error``; each is now one line naming the URL, the server's bytes cut short and escaped."""
    config, root = library
    with raw_site(MALFORMED[case](_png(root))) as url:
        started = time.monotonic()
        result = search(clipdex, config, "--image", url)
    assert result.code == 1 and result.out == "", (case, result)
    assert result.err.startswith(f"clipdex: error: cannot fetch {url}: "), (case, result.err)
    assert result.err.count("\n") == 1 and len(result.err) < 400, (case, result.err[:500])
    assert "internal error" not in result.err and "\x1b" not in result.err and "\x07" not in result.err
    assert time.monotonic() - started < 15


def test_a_well_formed_raw_answer_still_searches(clipdex, library):
    """The same socket server with a correct answer: the fetch works (the cases above fail for their bytes)."""
    config, root = library
    png = _png(root)
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(png) + png
    with raw_site(answer) as url:
        result = search(clipdex, config, "--image", url, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)[0]["path"] == str(root / "a" / "one.png")


# -- serve never fetches ------------------------------------------------------------------------------------------


def test_serve_never_fetches_a_url_a_client_names(library, site):
    from fastapi.testclient import TestClient

    config, root = library
    url = site.add("/one.png", (root / "a" / "one.png").read_bytes(), **{"Content-Type": "image/png"})
    with Index.open(load_settings(config)) as index, TestClient(create_app(index)) as client:
        answers = [
            client.get("/api/search", params={"image": url, "q": QUERY}),
            client.get("/api/search", params={"like": url}),
            client.get("/api/search", params={"q": url}),
            client.post("/api/search", data={"image": url, "q": QUERY}),
            client.post("/api/search", data={"like": url}),
            client.get("/api/image", params={"path": url}),
            client.get("/api/image", params={"path": url, "thumb": 64}),
        ]
    assert site.requests == []  # not one request reached the site
    for answer in answers:
        assert answer.status_code < 500, answer.text
    assert answers[1].status_code == 404 and answers[4].status_code == 404
    assert answers[3].status_code == 422 and answers[5].status_code == 404


def test_the_server_module_does_not_import_the_fetcher():
    import subprocess
    import sys

    code = ("import sys, retrieval.server, retrieval.cli.serve_cmd, retrieval.index; "
            "print(json.dumps('retrieval.search.fetch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert json.loads(out) is False
