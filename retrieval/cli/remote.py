"""The CLI beside a running ``clipdex serve``: find the server that holds a store, and ask it.

When the embedded store's lock names a live ``clipdex serve`` (see :mod:`retrieval.store.lock`), a read
command (``search``, ``status``, ``duplicates``) sends the same request to that server instead of failing on
the lock, and prints what it would print alone from the server's JSON. This module imports only the standard
library (a socket, json): a search answered by a server loads neither numpy nor onnxruntime nor torch.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from retrieval.errors import ClipdexError
from retrieval.settings import Settings
from retrieval.store.lock import LOCK_FILE, SERVE_OWNER, read_holder

TIMEOUT_S = 600.0
"""How long one request may take (a duplicates search over a large collection takes minutes)."""


@dataclass(frozen=True)
class Server:
    """A live ``clipdex serve`` holding the store: its base URL (no trailing slash), pid and API key."""

    url: str
    pid: int
    api_key: str

    def request(self, method: str, path: str, params: dict[str, Any] | None = None, *, body: bytes | None = None,
                content_type: str | None = None, timeout: float = TIMEOUT_S) -> Any:
        """The decoded JSON answer of ``method path?params``; an error answer is a :class:`ClipdexError`
        carrying the server's one-line message."""
        query = urlencode(_pairs(params or {}), doseq=True)
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            status, reason, data = exchange(self.url, method, path + (f"?{query}" if query else ""), headers,
                                            body or b"", timeout)
        except (OSError, ValueError) as exc:
            raise ClipdexError(f"{self.owner()} holds the store but did not answer: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        if status >= 400:
            raise ClipdexError(_error_line(status, reason, data, self.url))
        try:
            return json.loads(data or b"null")
        except ValueError:
            raise ClipdexError(f"{self.owner()} answered something that is not JSON") from None

    def owner(self) -> str:
        """``clipdex serve at URL (pid N)``: how messages name the server."""
        return f"{SERVE_OWNER} at {self.url} (pid {self.pid})"

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params)

    def post_json(self, path: str, doc: Any, params: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, params, body=json.dumps(doc).encode(), content_type="application/json")

    def post_form(self, path: str, fields: dict[str, Any], file_field: str, file_path: str) -> Any:
        """A multipart form: ``fields`` (lists repeat) and one file read from ``file_path``."""
        boundary = uuid.uuid4().hex
        parts: list[bytes] = []
        for name, value in _pairs(fields):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                         + str(value).encode("utf-8", "surrogateescape") + b"\r\n")
        try:
            with open(file_path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ClipdexError(f"cannot read query image {file_path}: {exc.strerror or exc}") from None
        filename = os.path.basename(file_path).replace('"', "_").encode("utf-8", "replace").decode("latin-1")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode("latin-1") + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body=body, content_type=f"multipart/form-data; boundary={boundary}")


def exchange(base: str, method: str, target: str, headers: dict[str, str], body: bytes,
             timeout: float) -> tuple[int, str, bytes]:
    """One HTTP/1.1 request to the server at ``base`` (``http://host:port``), the connection closed after it:
    (status, reason, body). Plain sockets, never a proxy: http.client, email and ssl are not worth their load
    time for one local request."""
    parts = urlsplit(base)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// URL: {base}")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        chunks = []
        while data := sock.recv(1 << 16):
            chunks.append(data)
    head, sep, payload = b"".join(chunks).partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("the connection closed before a complete answer")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    _, code, *reason = status_line.split(" ", 2)
    found = {name.strip().lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
    if "chunked" in found.get("transfer-encoding", "").lower():
        payload = _dechunk(payload)
    elif "content-length" in found:
        payload = payload[:int(found["content-length"])]
    return int(code), reason[0] if reason else "", payload


def _dechunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2


def _pairs(params: dict[str, Any]) -> list[tuple[str, Any]]:
    """Query/form pairs: None left out, lists repeated, booleans as ``true``/``false``."""
    pairs: list[tuple[str, Any]] = []
    for name, value in params.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                pairs.append((name, str(item).lower() if isinstance(item, bool) else item))
    return pairs


def _error_line(status: int, reason: str, data: bytes, url: str) -> str:
    try:
        message = json.loads(data or b"{}").get("error")
    except (ValueError, AttributeError):
        message = None
    if status == 401:
        return (f"clipdex serve at {url} needs its API key: set [serve] api_key in the settings you pass, or "
                "CLIPDEX_API_KEY" + (f" ({message})" if message else ""))
    return str(message) if message else f"clipdex serve at {url} answered {status} {reason}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def server_for(settings: Settings) -> Server | None:
    """The live ``clipdex serve`` that holds the embedded collection ``settings`` names, or None.

    None for a Qdrant server URL, a collection no server holds, or a stale record (a dead pid): the
    command then opens the store itself, taking a stale lock over as always.
    """
    if settings.store.url:
        return None
    holder = read_holder(settings.store_path / settings.store.collection / LOCK_FILE)
    owner = str(holder.get("owner") or "")
    pid = holder.get("pid")
    prefix = f"{SERVE_OWNER} at "
    if not owner.startswith(prefix) or not isinstance(pid, int) or pid <= 0 or not _alive(pid):
        return None
    url = owner[len(prefix):].rstrip("/")
    if not url.startswith("http://"):
        return None
    url = url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")  # a wildcard bind
    return Server(url, pid, settings.serve.api_key)
