"""The optional API key of ``clipdex serve``: required on every ``/api/`` route when configured."""

from __future__ import annotations

import hmac
from urllib.parse import unquote

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from retrieval.serving.middleware import error_response, header

KEY_COOKIE = "clipdex_key"
"""The cookie the web page keeps the key in (set by the page itself, ``SameSite=Strict``)."""


def presented_keys(scope: Scope) -> list[bytes]:
    """The keys a request carries: an ``Authorization: Bearer`` header and the page's cookie."""
    keys = []
    authorization = header(scope, b"authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            keys.append(token.strip())
    cookies = header(scope, b"cookie")
    if cookies is not None:
        value = cookie_parser(cookies.decode("latin-1")).get(KEY_COOKIE)
        if value:
            keys.append(unquote(value).encode("utf-8", "surrogateescape"))
    return keys


class ApiKey:
    """401 for any ``/api/`` request without the key; keys are compared in constant time.

    App-wide, so routes added later (``POST /api/ingest``) are covered without doing anything.
    """

    def __init__(self, app: ASGIApp, key: str):
        self.app = app
        self.key = key.encode("utf-8")

    def _accepts(self, scope: Scope) -> bool:
        accepted = False
        for candidate in presented_keys(scope):  # no early exit: the time does not depend on which matched
            accepted |= hmac.compare_digest(candidate, self.key)
        return accepted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/") and not self._accepts(scope):
            message = ("this server needs an API key: send the header 'Authorization: Bearer KEY'"
                       if not presented_keys(scope) else "wrong API key")
            await error_response(401, message, {"WWW-Authenticate": 'Bearer realm="clipdex"'})(scope, receive, send)
            return
        await self.app(scope, receive, send)
