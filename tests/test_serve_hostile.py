"""Hostile cases of issue 19 on the serving side: files swapped for links (raced or not), a file that
shrinks while it streams, slow clients, and a cheap upload that used to cost hundreds of megabytes.

Every test talks to a real uvicorn server on 127.0.0.1 over a real ingested library and a real tiny model.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from retrieval.serving.protocol import Timeouts
from tests.test_serve_guard import server_log
from tests.test_server import Live, assert_error, live_library, serving

MARKER = b"CLIPDEX-SECRET-7f3a9c"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Live]:
    with live_library(tmp_path_factory.mktemp("hostile"), tiny_model_dir) as served:
        yield served


def secret_png(path: Path, colour: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """A real PNG outside the library, carrying ``MARKER`` in a text chunk: what must never be served."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("secret", MARKER.decode())
    Image.new("RGB", (64, 48), colour).save(path, "PNG", pnginfo=info)
    data = path.read_bytes()
    assert MARKER in data
    return data


def relink(link: Path, target: Path) -> None:
    """Make ``link`` a symlink to ``target`` atomically (``ln -sfn target tmp && mv -T tmp link``)."""
    tmp = link.with_name(link.name + ".swap")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


class Restore:
    """Put an indexed file back as it was (bytes and times) after a test replaced it."""

    def __init__(self, path: Path):
        self.path, self.data, self.st = path, path.read_bytes(), path.stat()

    def __enter__(self) -> Restore:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path.is_symlink() or self.path.exists():
            self.path.unlink()
        self.path.write_bytes(self.data)
        os.utime(self.path, ns=(self.st.st_atime_ns, self.st.st_mtime_ns))


def red_share(jpeg: bytes) -> float:
    """How red a thumbnail is on average (the secret is pure red, the library's pictures are not)."""
    r, g, b = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    return r / max(1, r + g + b)


# -- case 2: a link out of the ingested roots, no race ------------------------------------------------------


def test_a_link_out_of_the_ingested_roots_is_never_served(live: Live, tmp_path: Path):
    outside = tmp_path / "private"
    outside.mkdir()
    secret = outside / "secret.png"
    secret_png(secret)
    target = live.good[0]  # lib/a/one.png, an indexed file
    with Restore(target):
        target.unlink()
        os.symlink(secret, target)  # the indexed file replaced by a link to a private file
        for params in ({"path": str(target)}, {"path": str(target), "thumb": 64}):
            response = live.http.get("/api/image", params=params)
            assert MARKER not in response.content
            assert_error(response, 404, "outside the ingested folders", str(target))
        head = live.http.head("/api/image", params={"path": str(target)})
        assert head.status_code == 404
    # A link that stays inside the ingested root is served: it is the library's own picture.
    inside = live.good[3]  # lib/b/gray.png
    with Restore(target):
        target.unlink()
        os.symlink(inside, target)
        response = live.http.get("/api/image", params={"path": str(target)})
        assert response.status_code == 200 and response.content == inside.read_bytes()
    # A folder on the way swapped for a link out of the root: the same refusal.
    folder = live.root / "a" / "deep"
    three = folder / "three.webp"
    moved = live.root / "a" / "deep.saved"
    shutil.copyfile(three, outside / "three.webp")
    secret_png(outside / "three.webp")  # the private folder has a file of the same name
    os.rename(folder, moved)
    try:
        os.symlink(outside, folder)
        response = live.http.get("/api/image", params={"path": str(three)})
        assert MARKER not in response.content
        assert_error(response, 404, "outside the ingested folders")
    finally:
        folder.unlink()
        os.rename(moved, folder)
    assert live.http.get("/api/image", params={"path": str(three)}).status_code == 200


# -- case 1: a link swapped back and forth while it is fetched ---------------------------------------------


def test_a_racing_link_swap_never_serves_a_byte_outside_the_roots(live: Live, tmp_path: Path):
    """A thread flips an indexed file between a link to a library picture and a link to a private file
    (``ln -sfn … t && mv -T t file``) while the file and its thumbnails are fetched; bounded to 4 s."""
    shadow = tmp_path / "shadow"  # not an image at all, like /etc/shadow: only a race could serve it
    shadow.write_bytes(b"root:" + MARKER + b":19000:0:99999:7:::\n")
    picture = tmp_path / "private.png"  # a private picture (pure red), whose thumbnail must not be made
    secret_png(picture)
    inside = live.good[3]  # lib/b/gray.png: grey, never red
    target = live.good[2]  # lib/a/deep/three.webp
    stop = threading.Event()
    flips = [0]

    def swapper() -> None:
        while not stop.is_set():
            for secret in (shadow, picture):
                relink(target, inside)
                relink(target, secret)
                flips[0] += 2

    served = {"file": 0, "thumb": 0, "refused": 0}
    with Restore(target):
        relink(target, inside)
        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 4
            size = 16
            while time.monotonic() < deadline:
                response = live.http.get("/api/image", params={"path": str(target)})
                assert MARKER not in response.content, "the private file was served"
                served["file" if response.status_code == 200 else "refused"] += 1
                if response.status_code == 200:
                    assert response.content == inside.read_bytes()
                size = size + 1 if size < 200 else 16  # a new size each time: never a cached thumbnail
                response = live.http.get("/api/image", params={"path": str(target), "thumb": size})
                if response.status_code == 200:
                    served["thumb"] += 1
                    assert red_share(response.content) < 0.6, "a thumbnail of the private file was served"
                else:
                    assert response.status_code in (404, 415), response.text
                    served["refused"] += 1
        finally:
            stop.set()
            thread.join(5)
    assert flips[0] > 100 and served["refused"] > 0, (flips, served)  # the race really ran both ways


# -- case 7: a file that shrinks while it streams -----------------------------------------------------------


def test_a_file_that_shrinks_while_it_streams_closes_the_connection(live: Live):
    target = live.good[4]  # lib/b/alpha.png
    with Restore(target):
        original = target.read_bytes()
        target.write_bytes(original + b"\0" * (96 << 20))  # still a PNG to its header, now 96 MiB
        declared = target.stat().st_size
        started = time.monotonic()
        received = 0
        with httpx.Client(base_url=live.url, timeout=httpx.Timeout(30, read=15)) as http, \
                pytest.raises(httpx.RemoteProtocolError), \
                http.stream("GET", "/api/image", params={"path": str(target)}) as response:
            assert response.status_code == 200
            assert int(response.headers["content-length"]) == declared
            for chunk in response.iter_raw(64 << 10):
                received += len(chunk)
                if received >= 1 << 20 and target.stat().st_size == declared:
                    os.truncate(target, 2 << 20)  # shrinks under the server's open descriptor
        elapsed = time.monotonic() - started
    assert received < declared
    assert elapsed < 10, f"the connection stayed open {elapsed:.1f} s after the file shrank"
    assert live.http.get("/api/status").status_code == 200


# -- case 10: slow clients are held to time limits ------------------------------------------------------------

SHORT = Timeouts(idle_s=1.0, header_s=1.5, body_s=2.0, send_s=1.5)
"""Short limits for the tests (the defaults are 5, 10, 120 and 60 s)."""
GIVE_UP_S = 8.0
"""How long a test waits for the server to close before calling the connection open for good."""


@pytest.fixture(scope="module")
def impatient(live: Live) -> Iterator[str]:
    """The same library served again, with :data:`SHORT` time limits."""
    from retrieval.server import create_app

    app = create_app(live.index)
    app.state.service.lock = live.lock
    with serving(app, timeouts=SHORT) as url:
        yield url


def connect(url: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=GIVE_UP_S)
    return sock


def read_until_closed(sock: socket.socket, trickle: bytes = b"", every_s: float = 0.1) -> tuple[bytes, float]:
    """Everything the server sends until it closes, sending ``trickle`` one byte per ``every_s`` meanwhile;
    (answer, seconds). Fails after :data:`GIVE_UP_S` with the connection still open."""
    started, answer, sent = time.monotonic(), b"", 0
    sock.setblocking(False)
    while time.monotonic() - started < GIVE_UP_S:
        ready, _, _ = select.select([sock], [], [], every_s)
        if ready:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return answer, time.monotonic() - started
            if not chunk:
                return answer, time.monotonic() - started
            answer += chunk
        elif trickle:
            with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                sock.send(trickle[sent % len(trickle):sent % len(trickle) + 1])
                sent += 1
    raise AssertionError(f"the connection was still open after {GIVE_UP_S} s (got {answer[:120]!r})")


def test_an_idle_connection_is_closed(impatient: str):
    with connect(impatient) as sock:
        answer, seconds = read_until_closed(sock)
    assert answer == b"" and SHORT.idle_s - 0.2 <= seconds < SHORT.idle_s + 3
    with connect(impatient) as sock:  # and after a keep-alive request, the same
        sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer, seconds = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and seconds < SHORT.idle_s + 3


def test_headers_sent_one_byte_at_a_time_get_408(impatient: str):
    with connect(impatient) as sock:
        sock.sendall(b"GET /api/status HTTP/1.1\r\n")
        answer, seconds = read_until_closed(sock, trickle=b"X-Slow: ", every_s=0.1)  # never ends its headers
    assert answer.startswith(b"HTTP/1.1 408 ") and b"request headers took longer than 1.5 s" in answer
    assert seconds < SHORT.header_s + 3


def test_an_endless_chunked_body_gets_408(impatient: str):
    part = b'--x\r\nContent-Disposition: form-data; name="q"\r\n\r\n'
    head = (b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n" + b"%x\r\n%s\r\n" % (len(part), part))
    with connect(impatient) as sock, server_log() as records:
        sock.sendall(head)
        answer, seconds = read_until_closed(sock, trickle=b"1\r\nx\r\n", every_s=0.05)  # chunks that never end
        time.sleep(0.3)  # the route sees the disconnect after the answer
    assert answer.startswith(b"HTTP/1.1 408 ") and b"request body took longer than 2 s" in answer
    assert seconds < SHORT.body_s + 3
    assert not [r for r in records if "internal error" in r.getMessage()]  # a slow client is no bug
    with connect(impatient) as sock:  # a GET whose endless body the route never reads: answered, then closed
        sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        answer, seconds = read_until_closed(sock, trickle=b"1\r\nx\r\n", every_s=0.05)
    assert answer.startswith(b"HTTP/1.1 200 ") and seconds < SHORT.body_s + 3


def test_a_client_that_reads_nothing_of_a_large_answer_is_disconnected(live: Live, impatient: str):
    target = live.good[5]  # lib/b/palette.png
    with Restore(target):
        target.write_bytes(target.read_bytes() + b"\0" * (64 << 20))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.settimeout(GIVE_UP_S)
        sock.connect(("127.0.0.1", int(impatient.rsplit(":", 1)[1])))
        with sock:
            sock.sendall(f"GET /api/image?path={quote(str(target))} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            time.sleep(SHORT.send_s + 1.5)  # reads nothing meanwhile
            answer, _ = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and len(answer) < (64 << 20)


# -- case 3: a cheap upload must not cost the server hundreds of megabytes ----------------------------------------


def test_uploads_beyond_the_slots_get_503_with_retry_after(live: Live):
    """One upload whose body trickles holds the only slot: the next is refused at once, not queued."""
    from retrieval.server import create_app
    from retrieval.settings import ServeSettings

    app = create_app(live.index, serve=ServeSettings(max_uploads=1))
    app.state.service.lock = live.lock
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(png, "PNG")
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        with connect(url) as slow:
            slow.sendall(b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                         b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n")
            time.sleep(0.3)
            started = time.monotonic()
            busy = http.post("/api/search", files={"image": ("q.png", png.getvalue(), "image/png")})
            assert time.monotonic() - started < 5
            assert_error(busy, 503, "busy with 1 uploads")
            assert busy.headers["retry-after"] == "2"
            assert http.get("/api/search", params={"q": "a photo"}).status_code == 200  # searches are not held up
        deadline = time.monotonic() + 10  # the trickling client left: its slot comes back
        while (answer := http.post("/api/search", files={"image": ("q.png", png.getvalue(), "image/png")})
               ).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answer.status_code == 200, answer.text


def _kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def _png_of_zeros(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (side, side)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.slow
def test_large_pixel_uploads_keep_the_server_process_small(tmp_path: Path, tiny_model_dir: Path):
    """The real ``clipdex serve`` in a subprocess: 4 uploads at once of a 60 KB PNG of 7900×7900 zeros
    (refused: over the query cap, nothing decoded) and of 4800×4800 zeros (decoded in the workers): the
    server's own peak RSS (``VmHWM``, reset before) grows by far less than one decoded picture."""
    import subprocess
    import sys

    from tests.conftest import write_config
    from tests.images import write_library
    from tests.test_serve_guard import free_port

    write_library(tmp_path / "lib")
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    # What this test measures is the server process's memory, not the decode budget (tests/test_serve_guard.py
    # has that): on a loaded 2-core machine the 4 decodes, each in a worker started on demand, could outlast
    # the 10 s budget (or wait 10 s for one of the 2 slots) and answer 503/400 instead of 200. One worker per
    # upload and a budget no load reaches keep the 4 uploads decoding at once, as the docstring says.
    config.write_text(config.read_text() + "[serve]\ndecode_workers = 4\ndecode_timeout_s = 300\n")
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), HF_HUB_OFFLINE="1")
    (tmp_path / "tmp").mkdir()
    run = [sys.executable, "-m", "retrieval.cli"]
    subprocess.run([*run, "ingest", str(tmp_path / "lib"), "--config", str(config)], check=True, env=env,
                   capture_output=True, timeout=600)
    port = free_port()
    server = subprocess.Popen([*run, "serve", "--port", str(port), "--config", str(config), "--log-level", "warning"],
                              env=env, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "clipdex serve did not come up"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/api/status", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        for side, status in ((7900, 400), (4800, 200)):
            data = _png_of_zeros(side)
            idle, idle_shared = _kb(server.pid, "VmRSS"), _kb(server.pid, "RssFile") + _kb(server.pid, "RssShmem")
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            answers: list[httpx.Response | str] = []

            def upload(data: bytes = data, answers: list[httpx.Response | str] = answers) -> None:
                try:
                    answers.append(httpx.post(f"{url}/api/search", files={"image": ("z.png", data, "image/png")},
                                              timeout=300))
                except httpx.HTTPError as exc:  # said in the assertion below, not lost in a thread
                    answers.append(f"{type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=upload) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(330)
            assert [getattr(a, "status_code", a) for a in answers] == [status] * 4, [
                getattr(a, "text", a) for a in answers]
            if status == 400:
                assert "exceeds the 24 MP cap" in answers[0].json()["error"]  # type: ignore[union-attr]
            # The peak counts mapped library and file pages too. On a loaded machine the kernel may have
            # evicted some of the idle server's (its code, its models' files) before `idle` was read, and the
            # request faults them back in: no allocation, but the peak rises by them. Those pages are still
            # resident afterwards, so their growth is taken off; a decoded picture is anonymous memory.
            shared_back = max(0, _kb(server.pid, "RssFile") + _kb(server.pid, "RssShmem") - idle_shared)
            grown_mb = (_kb(server.pid, "VmHWM") - idle - shared_back) / 1024
            decoded_mb = side * side * 3 / (1 << 20)  # one RGB copy of the picture (178 MB for 7900²)
            assert grown_mb < min(64, decoded_mb / 2), f"{side}²: the server grew by {grown_mb:.0f} MB"
        assert not [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("clipdex-")]
    finally:
        server.terminate()
        server.wait(30)


def test_a_query_image_is_reduced_to_what_the_model_needs(tmp_path: Path):
    """A 40000×8 strip (0.3 MP: no pixel cap stops it) would become 224×1,120,000 after the model's resize;
    a large picture comes out a whole-factor reduction with its shorter side below twice the model's size."""
    from ingest.query_image import MAX_ASPECT, query_image

    strip = tmp_path / "strip.png"
    Image.new("RGB", (40000, 8), (200, 10, 10)).save(strip)
    small = query_image(str(strip), size=224, max_megapixels=64)
    assert small.size == (8 * MAX_ASPECT, 8)  # the centre kept, nothing for the model to blow up
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), (10, 200, 10)).save(big)
    with open(big, "rb") as fh:  # by descriptor, as the decoder workers read it
        reduced = query_image(fh.fileno(), size=224, max_megapixels=64)
    assert reduced.size == (3000 // 8, 2000 // 8) and 224 <= min(reduced.size) < 2 * 224
    assert reduced.getpixel((10, 10)) == (10, 200, 10)
