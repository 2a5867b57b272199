"""The uvicorn settings ``clipdex serve`` runs with (the tests serve through the same function).

Request heads are limited by a small subclass of uvicorn's h11 protocol: a request line over
``MAX_REQUEST_LINE`` bytes is answered ``414``, a head over ``MAX_HEAD`` bytes ``431``, as soon as
that many bytes have arrived. The answer is followed by a half-close and the rest of what the client
sends is read and dropped for a moment, so the client reads the status instead of a connection reset.
"""

from __future__ import annotations

import asyncio
import copy
import json
from http import HTTPStatus
from typing import Any

import h11
import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_REQUEST_LINE = 8 << 10
MAX_HEAD = 16 << 10
LINGER_S = 2.0
"""How long a refused connection keeps draining what the client still sends before it is closed."""


def head_problem(buffered: bytes) -> tuple[int, str] | None:
    """(status, message) if the request head that starts ``buffered`` is over a limit, else None."""
    end = buffered.find(b"\r\n\r\n")
    head = len(buffered) if end < 0 else end
    if buffered.find(b"\r\n", 0, MAX_REQUEST_LINE + 2) < 0 and len(buffered) > MAX_REQUEST_LINE:
        return 414, f"request line longer than {MAX_REQUEST_LINE} bytes"
    if head > MAX_HEAD:
        return 431, f"request headers longer than {MAX_HEAD} bytes in all"
    return None


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering 414/431 to oversized request heads instead of resetting."""

    _refused = False
    _linger: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # drain: the answer is already on its way
        if self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE:
            problem = head_problem(self.conn.trailing_data[0] + data)
            if problem is not None:
                self._refuse(*problem)
                return
        super().data_received(data)

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        self._unset_keepalive_if_required()
        body = json.dumps({"error": message}).encode()
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self.logger.warning("refused a request: %s", message)
        self.transport.write(head + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger = asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)

    def eof_received(self) -> None:
        if self._refused:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)


def log_config() -> dict[str, Any]:
    """uvicorn's logging, plus the ``clipdex`` loggers (tracebacks of internal errors) on its stderr handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["clipdex"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def uvicorn_config(app: Any, *, log_level: str = "info", access_log: bool = True) -> uvicorn.Config:
    """A uvicorn configuration for the clipdex app."""
    return uvicorn.Config(app, log_level=log_level, access_log=access_log, server_header=False,
                          log_config=log_config(), http=LimitedH11Protocol,
                          h11_max_incomplete_event_size=MAX_HEAD + (4 << 10))
