"""``clipdex serve`` on a shared network: limits while the body streams, no 500 from client input,
generic internal errors, decode budgets, HEAD, the API key, a store deleted under the server.

Every test talks to a real uvicorn server on 127.0.0.1 (the configuration ``clipdex serve`` uses).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from retrieval.cli.serve_cmd import listen
from retrieval.server import create_app
from retrieval.settings import ServeSettings
from tests.conftest import write_config
from tests.images import write_library
from tests.test_server import QUERY, Live, assert_error, live_library, run_cli, serving
from tests.test_server import _free_port as free_port


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Live]:
    with live_library(tmp_path_factory.mktemp("guard"), tiny_model_dir) as served:
        yield served


@contextmanager
def server_log() -> Iterator[list[logging.LogRecord]]:
    """What the server logs on ``clipdex.serve`` (enter it after uvicorn has configured logging)."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("clipdex.serve")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def sibling_app(live: Live, **options: object):  # noqa: ANN201
    """Another app over the same open Index (one opener per store) and the same lock."""
    app = create_app(live.index, **options)
    app.state.service.lock = live.lock
    return app


# -- internal errors ---------------------------------------------------------------------------------------


def test_internal_error_answers_a_request_id_and_logs_the_details(live: Live):
    app = sibling_app(live)

    @app.get("/api/fails")
    def fails() -> None:  # a real bug in a route: the exception's text must stay on the server
        raise RuntimeError("secret detail: /home/someone/private.key")

    with serving(app) as url, server_log() as records:
        response = httpx.get(f"{url}/api/fails", timeout=30)
        assert live.http.get("/api/status").status_code == 200  # the server lives on
    message = assert_error(response, 500, "internal error")
    request_id = response.json()["request_id"]
    assert request_id in message and response.headers["x-request-id"] == request_id
    assert "secret" not in response.text and "RuntimeError" not in response.text
    logged = [r for r in records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info and "secret detail" in str(logged[0].exc_info[1])
    assert "/api/fails" in logged[0].getMessage()


# -- no client input gives a 500 -----------------------------------------------------------------------------

PNG = Path(__file__).resolve().parent.parent / "samples" / "fashion-mnist" / "ankle_boot" / "00000.png"


def assert_client_error(response: httpx.Response) -> None:
    """A 4xx with one JSON line, or a 2xx: never a 5xx."""
    assert response.status_code < 500, f"{response.request.method} {response.request.url}: {response.text}"
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        message = response.json()["error"]
        assert message and "\n" not in message


@pytest.mark.parametrize("data, files, needle", [
    ({"image": "notafile", "q": QUERY}, None, "image"),
    ({}, {"q": ("q.png", PNG.read_bytes(), "image/png")}, "q"),
    ({"q": QUERY}, {"negative": ("n.png", PNG.read_bytes(), "image/png")}, "negative"),
    ({"q": QUERY}, {"limit": ("l.png", PNG.read_bytes(), "image/png")}, "limit"),
    ({"q": QUERY}, {"text_weight": ("w.bin", b"\x00\xff", "application/octet-stream")}, "text_weight"),
])
def test_wrong_kind_of_form_field_is_422(live: Live, data: dict[str, str], files: dict | None, needle: str):
    response = live.http.post("/api/search", data=data, files=files or {"unused": ("u.txt", b"", "text/plain")})
    message = assert_error(response, 422, needle)
    assert "UploadFile" not in message and "Traceback" not in response.text and "class '" not in message


def _multipart(fields: list[tuple[str, str | bytes]]) -> tuple[dict[str, list[str]], list[tuple[str, tuple]]]:
    data: dict[str, list[str]] = {}
    for name, value in fields:
        if isinstance(value, str):
            data.setdefault(name, []).append(value)
    files = [(name, (f"{name}.bin", value, "application/octet-stream")) for name, value in fields
             if isinstance(value, bytes)]
    return data, files or [("unused", ("u.txt", b"", "text/plain"))]


FORM_FIELDS = ("image", "q", "negative", "limit", "folder", "min_score", "after", "before", "camera",
               "text_weight", "image_weight", "negative_weight")


def test_any_form_field_as_text_or_file_is_never_a_500(live: Live):
    """Hypothesis over the multipart form: every field may be missing, repeated, text or a file."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    text = st.one_of(st.text(max_size=12), st.sampled_from(["0", "-1", "1e309", "nan", "inf", "2021-07", "5"]))
    blob = st.one_of(st.binary(max_size=48), st.just(PNG.read_bytes()))
    fields = st.lists(st.tuples(st.sampled_from(FORM_FIELDS), st.one_of(text, blob)), max_size=5)

    @settings(max_examples=60, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(fields=fields)
    def post(fields: list[tuple[str, str | bytes]]) -> None:
        data, files = _multipart(fields)
        assert_client_error(live.http.post("/api/search", data=data, files=files))

    post()


def test_openapi_schema_driven_requests_never_get_a_500(live: Live):
    """Schemathesis: valid and invalid requests for every operation of the served OpenAPI schema."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/status", "/api/search", "/api/image"}
    for operation in operations:
        for mode in schemathesis.GenerationMode:
            @settings(max_examples=15, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: schemathesis.Case) -> None:
                response = case.call(base_url=live.url, timeout=30)
                assert response.status_code < 500, f"{case.method} {case.path}: {response.text}"

            try:
                call()
            except Unsatisfiable:  # no invalid request exists for an operation without parameters
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label


# -- HEAD ------------------------------------------------------------------------------------------------------


def test_head_answers_like_get_without_a_body(live: Live):
    image = str(live.good[0])
    for path, params in (("/", {}), ("/api/status", {}), ("/api/image", {"path": image}),
                         ("/api/image", {"path": image, "thumb": 32})):
        got, head = live.http.get(path, params=params), live.http.head(path, params=params)
        assert got.status_code == head.status_code == 200, (path, head.status_code)
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == str(len(got.content))
    assert live.http.head("/api/image", params={"path": "/etc/passwd"}).status_code == 404


# -- request bodies are limited while they stream ---------------------------------------------------------------

LIMIT = 2 << 20  # max_upload_bytes of the app under test
CHUNK = 64 << 10


def stored_bytes(folder: str) -> int:
    """Bytes in files under ``folder``: those listed there plus open, already-unlinked ones (O_TMPFILE)."""
    sizes: dict[int, int] = {}
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(folder):
                st = os.stat(f"/proc/self/fd/{fd}")
                sizes[st.st_ino] = st.st_size
    for entry in os.scandir(folder):
        with suppress(OSError):
            sizes[entry.inode()] = entry.stat().st_size
    return sum(sizes.values())


@contextmanager
def peak_storage(folder: Path) -> Iterator[list[int]]:
    """Sample ``stored_bytes(folder)`` every few milliseconds; the peak is in the yielded list."""
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], stored_bytes(str(folder)))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join(10)


def multipart_stream(total: int, boundary: str) -> Iterator[bytes]:
    """A multipart body with one ``image`` part of ``total`` bytes, produced chunk by chunk."""
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="huge.png"\r\n'
           "Content-Type: image/png\r\n\r\n").encode() + b"\x89PNG\r\n\x1a\n"
    for _ in range(total // CHUNK):
        yield b"\0" * CHUNK
    yield f"\r\n--{boundary}--\r\n".encode()


def test_oversized_streamed_upload_is_stopped_at_the_limit(live: Live, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where uploads and the form parser spool
    with tempfile.TemporaryFile() as probe:  # the measure sees open, unlinked files (what the parser spools to)
        probe.write(b"\0" * CHUNK)
        probe.flush()
        assert stored_bytes(str(tmp_path)) == CHUNK
    boundary = "clipdexboundary"
    with serving(sibling_app(live, max_upload_bytes=LIMIT)) as url:
        with peak_storage(tmp_path) as peak:
            response = httpx.post(f"{url}/api/search", content=multipart_stream(16 * LIMIT, boundary),
                                  headers={"content-type": f"multipart/form-data; boundary={boundary}"}, timeout=60)
        assert_error(response, 413, "larger than")
        # The form fields' allowance, plus one chunk as the server reads it (up to 256 KiB, with some buffered).
        assert peak[0] <= LIMIT + (64 << 10) + (512 << 10), f"{peak[0]} bytes stored for a {LIMIT}-byte limit"
        # A declared Content-Length over the limit is refused before a byte of the body is read.
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as sock:
            sock.sendall(b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1073741824\r\n"
                         b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
        assert live.http.get("/api/status").status_code == 200
    assert stored_bytes(str(tmp_path)) == 0  # and nothing is left behind


# -- a store deleted under the server ---------------------------------------------------------------------------


def test_store_deleted_under_a_running_server_is_503_everywhere(tmp_path: Path, tiny_model_dir: Path):
    """The real command in this process (main thread, real signals): delete its store, probe, SIGTERM it."""
    library = write_library(tmp_path / "lib")
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    assert run_cli("ingest", tmp_path / "lib", "--config", config)[0] == 0
    url = f"http://127.0.0.1:{free_port()}"
    image = str(library["good"][0])
    seen: dict[str, Any] = {}

    def probe() -> None:
        deadline = time.monotonic() + 60
        try:
            while "points" not in seen:
                with suppress(httpx.TransportError):
                    seen["points"] = httpx.get(f"{url}/api/status", timeout=5).json()["points"]
                assert time.monotonic() < deadline
                time.sleep(0.05)
            shutil.rmtree(tmp_path / "store")
            seen["answers"] = [
                httpx.get(f"{url}/api/status"), httpx.get(f"{url}/api/search", params={"q": QUERY}),
                httpx.get(f"{url}/api/image", params={"path": image}),
                httpx.get(f"{url}/api/image", params={"path": image, "thumb": 64}),
                httpx.post(f"{url}/api/search", files={"image": ("x.png", PNG.read_bytes(), "image/png")})]
            seen["page"] = httpx.get(f"{url}/").status_code
        finally:  # uvicorn handles SIGTERM in the main thread; SIGINT if it never came up
            os.kill(os.getpid(), signal.SIGTERM if "points" in seen else signal.SIGINT)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    code, _, err = run_cli("serve", "--port", url.rsplit(":", 1)[1], "--config", config, "--log-level", "warning")
    prober.join(10)
    assert seen["points"] == len(library["good"])
    for response in seen["answers"]:
        assert_error(response, 503, "was deleted while the server was running", str(tmp_path / "store"))
    assert seen["page"] == 200  # the page still loads (and shows the status line's error)
    assert code == 0 and "was deleted while the server was running" in err and "server stopped" in err, err
    assert not (tmp_path / "store").exists()  # stopping did not bring back a half store


# -- the API key -----------------------------------------------------------------------------------------------

KEY = "s3cret key/é;="


def test_api_key_is_required_on_every_api_route(live: Live):
    app = sibling_app(live, api_key=KEY)

    @app.post("/api/later")  # a route added after create_app (like `watch`'s /api/ingest) is covered too
    def later() -> dict[str, bool]:
        return {"ran": True}

    image = str(live.good[0])
    requests = [("GET", "/api/status", {}), ("GET", "/api/search", {"params": {"q": QUERY}}),
                ("POST", "/api/search", {"data": {"q": QUERY}}), ("GET", "/api/image", {"params": {"path": image}}),
                ("GET", "/api/image", {"params": {"path": image, "thumb": 32}}), ("POST", "/api/later", {}),
                ("HEAD", "/api/status", {})]
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        for method, path, kwargs in requests:
            response = http.request(method, path, **kwargs)
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
            if method != "HEAD":
                assert_error(response, 401, "needs an API key", "Authorization: Bearer")
            for wrong in ({"authorization": "Bearer not-the-key"}, {"authorization": f"Basic {KEY}"},
                          {"authorization": f"Bearer {KEY}x"}, {"cookie": "clipdex_key=nope"}):
                wrong = {name: value.encode() for name, value in wrong.items()}
                assert http.request(method, path, headers=wrong, **kwargs).status_code == 401, (path, wrong)
            good = http.request(method, path, headers={"authorization": f"Bearer {KEY}".encode()}, **kwargs)
            assert good.status_code == 200, (method, path, good.text)
            cookie = http.request(method, path, headers={"cookie": f"clipdex_key={quote(KEY)}"}, **kwargs)
            assert cookie.status_code == 200 and cookie.content == good.content, (method, path)
        assert http.post("/api/later", headers={"authorization": f"Bearer {KEY}".encode()}).json() == {"ran": True}
        assert_error(http.post("/api/ingest"), 401, "needs an API key")  # watch's route, covered as it is
        assert_error(http.post("/api/ingest", headers={"authorization": f"Bearer {KEY}".encode()}), 409)
        assert http.get("/").status_code == 200  # the page itself holds no data: it asks for the key
        assert http.get("/api/status").json()["error"] and "points" not in http.get("/api/status").text


def test_serve_refuses_a_public_address_without_a_key(config: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CLIPDEX_API_KEY", raising=False)
    busy = listen("127.0.0.1", 0)  # 0.0.0.0 on this port cannot be bound: getting that far never serves
    port = str(busy.getsockname()[1])
    try:
        code, _, err = run_cli("serve", "--host", "0.0.0.0", "--port", port, "--config", config)
        assert code == 1 and err.count("\n") == 1
        assert err.startswith("clipdex: error: refusing to serve on 0.0.0.0 without an API key") and "--insecure" in err
        code, _, err = run_cli("serve", "--host", "0.0.0.0", "--port", port, "--config", config, "--insecure")
        assert code == 1 and err.startswith(f"clipdex: error: cannot listen on 0.0.0.0:{port}"), err
        monkeypatch.setenv("CLIPDEX_API_KEY", KEY)
        code, _, err = run_cli("serve", "--host", "0.0.0.0", "--port", port, "--config", config)
        assert code == 1 and err.startswith(f"clipdex: error: cannot listen on 0.0.0.0:{port}"), err
    finally:
        busy.close()


# -- decode budget and thumbnail cache ----------------------------------------------------------------------------


def test_decode_budget_holds_in_server_threads(live: Live, tmp_path: Path):
    """A 56-MP PNG (under the pixel cap, 0.2 MB on disk) takes far longer than a 20 ms budget to decode."""
    big = tmp_path / "big.png"
    Image.new("L", (7500, 7500)).save(big)
    app = sibling_app(live, serve=ServeSettings(decode_timeout_s=0.02, query_max_megapixels=64))
    target, saved = live.good[3], live.good[3].read_bytes()
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        started = time.monotonic()
        response = http.post("/api/search", files={"image": ("big.png", big.read_bytes(), "image/png")})
        assert_error(response, 400, "cannot read query image big.png: decode took longer than 0.02 s")
        try:
            shutil.copyfile(big, target)  # an indexed file that changed on disk since ingest
            response = http.get("/api/image", params={"path": str(target), "thumb": 64})
            assert_error(response, 415, "decode took longer than 0.02 s")
        finally:
            target.write_bytes(saved)
        assert time.monotonic() - started < 30
        killed = app.state.service.decoders.killed
        assert len(killed) == 2 and not any(Path(f"/proc/{pid}").exists() for pid in killed)  # stopped, reaped
        small = http.get("/api/image", params={"path": str(live.good[0]), "thumb": 64})
        assert small.status_code == 200 and small.content.startswith(b"\xff\xd8")  # a fresh worker took over


def test_thumbnails_are_cached_by_path_size_and_mtime(live: Live, tmp_path: Path):
    path = live.good[0]
    saved, times = path.read_bytes(), os.stat(path)
    with serving(sibling_app(live)) as url, httpx.Client(base_url=url, timeout=60) as http:
        def thumb(size: int = 32) -> httpx.Response:
            response = http.get("/api/image", params={"path": str(path), "thumb": size})
            assert response.status_code == 200, response.text
            return response

        first, again = thumb(), thumb()
        assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
        assert again.content == first.content
        assert thumb(48).headers["x-cache"] == "MISS" and thumb(48).headers["x-cache"] == "HIT"
        try:
            os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns + 10**9))  # touched: made again
            assert thumb().headers["x-cache"] == "MISS"
            Image.new("RGB", (40, 20), (250, 10, 10)).save(path, "PNG")  # replaced: a different picture
            changed = thumb()
            assert changed.headers["x-cache"] == "MISS" and changed.content != first.content
        finally:
            path.write_bytes(saved)
            os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
    one = len(first.content)
    with serving(sibling_app(live, serve=ServeSettings(thumb_cache_mb=1.5 * one / (1 << 20)))) as url:
        caches = [httpx.get(f"{url}/api/image", params={"path": str(p), "thumb": 32}).headers["x-cache"]
                  for p in (path, path, live.good[1], path)]
    assert caches == ["MISS", "HIT", "MISS", "MISS"]  # bounded: room for one, the older one was dropped


# -- oversized request heads -------------------------------------------------------------------------------------


def raw_exchange(url: str, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection and read the whole answer (raises on a connection reset)."""
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.startswith(b"HTTP/1.1 4") and answer.endswith(b"}"):
                break
    return answer


@pytest.mark.parametrize("request_bytes, status, needle", [
    (b"GET /api/status?" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414, b"request line"),
    (b"GET /api/status?" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414, b"request line"),
    (b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431, b"headers"),
    (b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(5000))
     + b"\r\n", 431, b"headers"),
])
def test_oversized_request_heads_get_414_or_431(live: Live, request_bytes: bytes, status: int, needle: bytes):
    answer = raw_exchange(live.url, request_bytes)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert needle in answer and b'{"error": ' in answer
    normal = raw_exchange(live.url, b"GET /api/status?" + b"a" * 4000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Connection: close\r\n\r\n")
    assert normal.startswith(b"HTTP/1.1 200 ")  # a long-ish URL within the limits is served
