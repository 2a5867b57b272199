"""``clipdex search --image URL``: fetch an http(s) image into a temporary file, within a size and a time limit.

For the CLI only: the user names the URL on their own machine. ``clipdex serve`` never calls this (a server
that fetched URLs its clients name could be turned against the network it sits in).
"""

from __future__ import annotations

import http.client
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import SplitResult, urlsplit

from retrieval.errors import ClipdexError

SCHEMES = ("http", "https")
_CHUNK = 64 << 10


def is_url(value: str) -> bool:
    """True if ``value`` looks like a URL (``scheme://…``) rather than a file path."""
    scheme, sep, _ = value.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s) URLs (urllib would also follow one to ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if urlsplit(newurl).scheme.lower() not in SCHEMES:
            raise ClipdexError(f"{req.full_url} redirects to {newurl}: only http and https URLs are fetched")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    # No FileHandler/FTPHandler/DataHandler: only http(s) can ever be opened.
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), _HttpOnlyRedirects(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def checked(url: str) -> SplitResult:
    """``url`` split, if it is a well-formed http(s) URL with a host; else a one-line :class:`ClipdexError`."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a bad port raises here)
    except ValueError as exc:
        raise ClipdexError(f"cannot fetch {url}: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ClipdexError(f"cannot fetch {url}: only http and https URLs are fetched, not {parts.scheme}:")
    if not parts.hostname:
        raise ClipdexError(f"cannot fetch {url}: no host in the URL")
    return parts


def _mb(n: float) -> str:
    return f"{n / (1 << 20):g} MiB"


def download(url: str, dest: str, *, max_bytes: int, timeout_s: float) -> int:
    """Write the body of ``url`` to ``dest``; the bytes written. One-line :class:`ClipdexError` on any failure.

    The body is streamed and abandoned as soon as it passes ``max_bytes`` (a declared ``Content-Length``
    over the limit is refused before reading); ``timeout_s`` bounds the whole fetch, connection and a server
    that sends its headers or body a byte at a time included (the fetch runs in a daemon thread that is
    abandoned at the deadline; its socket goes when the process ends).
    """
    checked(url)
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["size"] = _download(url, dest, max_bytes=max_bytes, timeout_s=timeout_s)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="clipdex-fetch", daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)
    if worker.is_alive():
        raise ClipdexError(_too_slow(url, timeout_s))
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return int(outcome["size"])  # type: ignore[call-overload]


def _too_slow(url: str, timeout_s: float) -> str:
    return f"cannot fetch {url}: no complete answer within {timeout_s:g} s ([search] fetch_timeout_s)"


def _download(url: str, dest: str, *, max_bytes: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url, headers={"User-Agent": "clipdex", "Accept": "image/*"})
    try:
        with _opener().open(request, timeout=timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ClipdexError(f"{url} is {_mb(int(declared))}, over the {_mb(max_bytes)} limit "
                                   "([search] fetch_max_mb)")
            size = 0
            with open(dest, "wb") as out:
                while chunk := response.read1(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ClipdexError(f"{url} is larger than the {_mb(max_bytes)} limit ([search] fetch_max_mb)")
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    out.write(chunk)
            return size
    except ClipdexError:
        raise
    except http.client.HTTPException as exc:  # a malformed answer: status line, headers, chunks, a short body
        raise ClipdexError(f"cannot fetch {url}: not a valid HTTP answer ({_http_problem(exc)})") from None
    except urllib.error.HTTPError as exc:
        raise ClipdexError(f"cannot fetch {url}: HTTP {exc.code} {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
            raise ClipdexError(_too_slow(url, timeout_s)) from None
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise ClipdexError(f"cannot fetch {url}: {reason}") from None
    except ValueError as exc:  # a malformed URL (no host, bad port)
        raise ClipdexError(f"cannot fetch {url}: {exc}") from None


def _http_problem(exc: http.client.HTTPException) -> str:
    """What was wrong with a server's answer, in a few words (the server's own bytes cut short)."""
    if isinstance(exc, http.client.IncompleteRead):
        return f"a malformed or cut-short body, after {len(exc.partial)} bytes of a part"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, http.client.BadStatusLine):  # its text is the line the server sent: maybe a whole body
        line = str(exc).strip()
        if line in ("", "''", '""'):
            return "no status line"
        return f"bad status line {line[:60]!r}{'…' if len(line) > 60 else ''}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


@contextmanager
def fetched(url: str, *, max_bytes: int, timeout_s: float) -> Iterator[str]:
    """The image at ``url`` as a temporary file, deleted afterwards."""
    suffix = os.path.splitext(checked(url).path)[1][:10]
    fd, tmp = tempfile.mkstemp(prefix="clipdex-url-", suffix=suffix)
    os.close(fd)
    try:
        download(url, tmp, max_bytes=max_bytes, timeout_s=timeout_s)
        yield tmp
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
