"""Stream an open file descriptor as an HTTP response of exactly the size it had when it was opened.

A file that shrinks while it is sent can no longer fill the declared ``Content-Length``: the response
is then left incomplete, which makes uvicorn close the connection, so the client sees a cut transfer at
once instead of waiting for bytes that never come. A file that grows is sent only up to that size.
"""

from __future__ import annotations

import logging
import os
from email.utils import formatdate
from urllib.parse import quote

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from retrieval.serving.safe_open import OpenedFile

CHUNK = 256 << 10
HEAD_ONLY = "clipdex.head"
"""Scope key ``HeadAsGet`` sets on a HEAD request it passes on as a GET."""
log = logging.getLogger("clipdex.serve")


def content_disposition(filename: str) -> str:
    """``inline`` with the file's name (RFC 6266; a non-ASCII or undecodable name percent-encoded)."""
    quoted = quote(filename, errors="replace")
    if quoted == filename:
        return f'inline; filename="{filename}"'
    return f"inline; filename*=utf-8''{quoted}"


class FdResponse(Response):
    """A response that sends ``opened``'s bytes (and closes it); ``headers`` are added as given."""

    def __init__(self, opened: OpenedFile, media_type: str, headers: dict[str, str], filename: str, *,
                 byte_range: tuple[int, int] | None = None):
        """``byte_range``: (first, last) byte, inclusive, of a satisfiable Range request: a 206 of those bytes."""
        self.opened = opened
        self.start, self.size = 0, opened.size
        self.status_code = 200
        self.background = None
        extra: list[tuple[bytes, bytes]] = []
        if byte_range is not None:
            first, last = byte_range
            self.start, self.size, self.status_code = first, last - first + 1, 206
            extra.append((b"content-range", f"bytes {first}-{last}/{opened.size}".encode()))
        self.raw_headers = [(b"content-type", media_type.encode("latin-1")),
                        (b"content-length", str(self.size).encode()), *extra,
                        (b"last-modified", formatdate(opened.st.st_mtime, usegmt=True).encode()),
                        (b"content-disposition", content_disposition(filename).encode("latin-1")),
                        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if scope.get(HEAD_ONLY):  # HEAD: the headers are the answer
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            sent = 0
            while sent < self.size:
                chunk = await anyio.to_thread.run_sync(os.pread, self.opened.fd, min(CHUNK, self.size - sent),
                                                       self.start + sent)
                if not chunk:
                    log.warning("%s shrank to %d of its %d bytes while being sent; connection closed",
                                self.opened.real_path, sent, self.size)
                    return  # incomplete: the server closes the connection
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": sent < self.size})
            if self.size == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.opened.close()
