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

import httpx
import pytest

from retrieval.server import create_app
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
            @settings(max_examples=25, deadline=None, database=None, derandomize=True,
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
    boundary = "clipdexboundary"
    with serving(sibling_app(live, max_upload_bytes=LIMIT)) as url, peak_storage(tmp_path) as peak:
        response = httpx.post(f"{url}/api/search", content=multipart_stream(32 * LIMIT, boundary),
                              headers={"content-type": f"multipart/form-data; boundary={boundary}"}, timeout=60)
        assert_error(response, 413, "larger than")
        # A declared Content-Length over the limit is refused before a byte of the body is read.
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as sock:
            sock.sendall(b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1073741824\r\n"
                         b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
        assert live.http.get("/api/status").status_code == 200
    assert 0 < peak[0] <= LIMIT + (64 << 10) + 4 * CHUNK, f"{peak[0]} bytes stored for a {LIMIT}-byte limit"
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
