"""Pure ASGI middleware around the clipdex app: each one a single, app-wide rule.

They see every route, including routes added later (``/api/ingest``), and work while the request
streams in, before any route code runs.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retrieval.errors import library_error_line

log = logging.getLogger("clipdex.serve")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The ``{"error": one line}`` answer every clipdex error has."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class ErrorBoundary:
    """An unexpected exception becomes a generic 500 with a request id; the details go to the log only.

    The traceback and the request id are logged on the server (logger ``clipdex.serve``), the client
    gets the id to quote and nothing of the exception's text (paths, internals).
    """

    def __init__(self, app: ASGIApp, explain: Callable[[], str | None] = lambda: None):
        self.app = app
        self.explain = explain  # a known cause (the store was deleted): answered 503 with its line

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch_start)
        except BaseException as exc:
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise  # cancellation, exit; a Rust panic of the store's engine is answered like an error
            request_id = uuid.uuid4().hex[:16]
            log.exception("internal error, request id %s: %s %s", request_id, scope.get("method"),
                          scope.get("path"))
            if started:  # the response is cut short: the client sees a broken transfer
                return
            if cause := self.explain():
                await error_response(503, cause)(scope, receive, send)
            elif type(exc).__name__ == "PanicException":  # the store's files, not the client's request
                await error_response(503, library_error_line(exc) or "the store's engine stopped")(scope, receive, send)
            else:
                response = JSONResponse(
                    {"error": f"internal error (request id {request_id}; the server log has the details)",
                     "request_id": request_id}, status_code=500, headers={"X-Request-Id": request_id})
                await response(scope, receive, send)



def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (lower-case ``name``), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def field_message(msg: str) -> str:
    """A validation message in the client's terms (a text where a file belongs says so plainly)."""
    return "expected a file, got a text field" if "Expected UploadFile" in msg else msg


MAX_DETAILS = 20
"""Validation errors listed in a 422 (a body of 100,000 wrong items is not answered with 100,000 lines)."""


def validation_detail(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's validation errors without the rejected input (which may be an upload or megabytes of text),
    the first :data:`MAX_DETAILS` of them."""
    return [{"type": str(e.get("type", "")), "loc": [str(p) for p in e.get("loc", ())][:8],
             "msg": field_message(str(e.get("msg", "")))[:300]} for e in list(errors)[:MAX_DETAILS]]


class HeadAsGet:
    """``HEAD`` is answered like ``GET`` on every route, with the headers and without the body."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET", "clipdex.head": True}, receive, headers_only)


class BodyLimit:
    """Refuse a request body over ``max_bytes`` while it streams in, before anything stores it.

    A declared ``Content-Length`` over the limit is answered 413 at once; otherwise the body is counted
    as it arrives, and the message that crosses the limit raises a 413, so no more than the limit plus
    one received chunk ever reaches the form parser (and its temporary files).
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"request body is larger than {self.max_bytes / (1 << 20):.4g} MiB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await error_response(400, "invalid Content-Length header")(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await error_response(413, self._too_large())(scope, receive, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._too_large())  # FastAPI lets it through its body parsing
            return message

        await self.app(scope, receive if scope["method"] in ("GET", "HEAD") and declared is None else counted, send)


MAX_JSON_BYTES = 1 << 20
"""The most a request body that is not a multipart upload may hold (a resolve of 1,000 paths is ~100 kB)."""


class JsonBodyLimit(BodyLimit):
    """Refuse any request body that is not a multipart form (JSON, or anything FastAPI would parse as JSON)
    over ``max_bytes`` while it streams in, before it is parsed: a JSON parse costs many times the body's
    size in memory, so its bodies get a small cap of their own. Uploads keep :class:`BodyLimit`'s."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_JSON_BYTES):
        super().__init__(app, max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = (header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
        if scope["type"] != "http" or kind == b"multipart/form-data" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class ApiPrecondition:
    """Answer every ``/api/`` request 503 with ``check()``'s line while it returns one (e.g. the store is gone)."""

    def __init__(self, app: ASGIApp, check: Callable[[], str | None]):
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/") and (problem := self.check()):
            await error_response(503, problem)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def has_body(scope: Scope) -> bool:
    """True if a request declares a body: a non-zero ``Content-Length``, or any ``Transfer-Encoding``."""
    if header(scope, b"transfer-encoding") is not None:
        return True
    declared = header(scope, b"content-length")
    return declared is not None and declared.strip() not in (b"", b"0")


class UploadSlots:
    """At most ``slots`` requests with a body (uploads) at once; the next is answered 503 with ``Retry-After``
    at once, before a byte of its body is read or stored (never queued without bound)."""

    def __init__(self, app: ASGIApp, slots: int, retry_after_s: int = 2):
        self.app = app
        self.slots = slots
        self.retry_after_s = retry_after_s
        self.busy = 0  # only touched on the event loop's thread

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        if self.busy >= self.slots:
            message = f"the server is busy with {self.slots} uploads; try again in {self.retry_after_s} s"
            await error_response(503, message, {"Retry-After": str(self.retry_after_s)})(scope, receive, send)
            return
        self.busy += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.busy -= 1


INLINE_BLOCK = re.compile(r"<(script|style)\b([^>]*)>(.*?)</\1\s*>", re.IGNORECASE | re.DOTALL)


def inline_hashes(page: str) -> dict[str, list[str]]:
    """CSP source expressions (``'sha256-…'``) for each inline ``<script>`` and ``<style>`` block of ``page``.

    Hashed as the browser hashes them: the raw text between the tags, line ends normalised to LF, in UTF-8.
    A ``<script src=…>`` has no inline text to allow (``'self'`` covers a served file).
    """
    found: dict[str, list[str]] = {"script": [], "style": []}
    for tag, attributes, text in INLINE_BLOCK.findall(page):
        if tag.lower() == "script" and re.search(r"\bsrc\s*=", attributes, re.IGNORECASE):
            continue
        digest = hashlib.sha256(text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")).digest()
        found[tag.lower()].append(f"'sha256-{base64.b64encode(digest).decode('ascii')}'")
    return found


def content_security_policy(page: str) -> str:
    """The page's CSP: its own inline blocks (by hash) and same-origin files; nothing from elsewhere, no framing.

    Images may also be ``blob:`` (the preview of a chosen upload) and ``data:`` (the empty favicon); media
    (videos) are same-origin only."""
    hashes = inline_hashes(page)
    return "; ".join([
        "default-src 'none'",
        " ".join(["script-src 'self'", *hashes["script"]]),
        " ".join(["style-src 'self'", *hashes["style"]]),
        "img-src 'self' blob: data:",
        "media-src 'self'",  # a video moment plays from /api/media in the page's viewer
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ])


FETCH_SITES_ALLOWED = (b"same-origin", b"none")
"""``Sec-Fetch-Site`` values an ``/api/`` read is served for: the page itself, or a URL the user typed or
bookmarked. A client that sends no such header (curl, the CLI, scripts) is not a browser and is served too."""


class SecurityHeaders:
    """The browser-facing rules of every response, in one place.

    - every response: ``Content-Security-Policy`` (``frame-ancestors 'none'``; the page's inline blocks by hash),
      ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``,
      ``Cross-Origin-Resource-Policy: same-origin``, ``Cross-Origin-Opener-Policy: same-origin`` and
      ``Referrer-Policy: same-origin``;
    - an ``/api/`` request (search, status, images, thumbnails, duplicates) that a browser marks as coming
      from another site (``Sec-Fetch-Site`` other than ``same-origin``/``none``) is answered 403 before any
      route runs, so another site's ``<img>``, ``<script>``, form or ``fetch`` learns nothing about the library.
    """

    def __init__(self, app: ASGIApp, csp: str):
        self.app = app
        self.headers = [
            (b"content-security-policy", csp.encode("ascii")),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"referrer-policy", b"same-origin"),
        ]
        self.names = {name for name, _ in self.headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() not in self.names]
                message = {**message, "headers": kept + self.headers}
            await send(message)

        site = header(scope, b"sec-fetch-site")
        if scope["path"].startswith("/api/") and site is not None and site.strip().lower() not in FETCH_SITES_ALLOWED:
            message = "cross-site request refused: open the clipdex page itself to use its API"
            await error_response(403, message)(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)


def cross_site(request: Any) -> bool:
    """Whether a browser sent ``request`` from a page of another site (its ``Origin`` names another host than
    the one it asked): such a request may not change anything (move, dismiss, teach, sync)."""
    origin = request.headers.get("origin")
    return origin is not None and urlsplit(origin).netloc != request.headers.get("host")
