"""The uvicorn settings ``clipdex serve`` runs with (the tests serve through the same function).

Request heads are limited by a small subclass of uvicorn's h11 protocol: a request line over
``MAX_REQUEST_LINE`` bytes is answered ``414``, a head over ``MAX_HEAD`` bytes ``431``, as soon as
that many bytes have arrived. The answer is followed by a half-close and the rest of what the client
sends is read and dropped for a moment, so the client reads the status instead of a connection reset.

Slow clients are limited in time (:class:`Timeouts`, from ``[serve]``), whatever they trickle: a
connection with no request under way is closed after ``idle_s``; a request's head must be complete
``header_s`` after its first byte and its body ``body_s`` after its head (else ``408``, or a plain close
once an answer has started); a client that takes no bytes of an answer for ``send_s`` is disconnected.
uvicorn itself has only the keep-alive timer, which any byte resets.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Timeouts:
    """Time limits on one connection, in seconds (see the module's docstring)."""

    idle_s: float = 5.0
    header_s: float = 10.0
    body_s: float = 120.0
    send_s: float = 60.0

    @classmethod
    def of(cls, serve: Any) -> Timeouts:
        """The limits of a ``[serve]`` settings section."""
        return cls(serve.idle_timeout_s, serve.header_timeout_s, serve.body_timeout_s, serve.send_timeout_s)


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering 414/431 to oversized request heads instead of resetting, and
    holding every connection to :attr:`timeouts`."""

    timeouts = Timeouts()
    _refused = False
    _linger: asyncio.TimerHandle | None = None
    _phase: str | None = None
    _timer: asyncio.TimerHandle | None = None
    _send_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._track()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # drain: the answer is already on its way
        if self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE:
            problem = head_problem(self.conn.trailing_data[0] + data)
            if problem is not None:
                self._refuse(*problem)
                return
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    # -- time limits ----------------------------------------------------------------------------------------
    def _track(self) -> None:
        """(Re)arm the timer of the phase the connection is in; a phase's timer runs from its start."""
        if self._refused or self.transport is None or self.transport.is_closing():
            self._arm(None)
            return
        state = self.conn.their_state
        if state is h11.IDLE and self.conn.our_state is h11.IDLE:
            if self.conn.trailing_data[0]:
                self._arm("head", self.timeouts.header_s, self._head_late)
            else:
                self._arm("idle", self.timeouts.idle_s, self._idle_too_long)
        elif state is h11.SEND_BODY:
            self._arm("body", self.timeouts.body_s, self._body_late)
        else:
            self._arm(None)  # the whole request is in: the app's turn (its decodes and waits have their own limits)

    def _arm(self, phase: str | None, seconds: float = 0.0, expire: Callable[[], None] | None = None) -> None:
        if phase is not None and phase == self._phase:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = phase
        if phase is not None and expire is not None:
            self._timer = self.loop.call_later(seconds, expire)

    def _idle_too_long(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _head_late(self) -> None:
        self._timer = None
        self._refuse(408, f"request headers took longer than {self.timeouts.header_s:g} s")

    def _body_late(self) -> None:
        self._timer = None
        cycle = self.cycle
        if cycle is not None and cycle.response_started:  # an answer is (partly) out: no status left to give
            self.logger.warning("request body took longer than %g s; connection closed", self.timeouts.body_s)
            self.transport.close()
            return
        if cycle is not None:  # the app reading the body sees a disconnect, and anything it sends is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        self._refuse(408, f"request body took longer than {self.timeouts.body_s:g} s")

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.timeouts.send_s, self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_stalled(self) -> None:
        self._send_timer = None
        self.logger.warning("client took no data for %g s; connection closed", self.timeouts.send_s)
        self.transport.abort()

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        self._arm(None)
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
        for timer in (self._linger, self._timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._send_timer = None
        super().connection_lost(exc)


def log_config() -> dict[str, Any]:
    """uvicorn's logging, plus the ``clipdex`` loggers (tracebacks of internal errors) on its stderr handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["clipdex"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def uvicorn_config(app: Any, *, log_level: str = "info", access_log: bool = True,
                   timeouts: Timeouts | None = None) -> uvicorn.Config:
    """A uvicorn configuration for the clipdex app (``timeouts``: default :class:`Timeouts`)."""
    timeouts = timeouts or Timeouts()
    protocol = type("LimitedH11Protocol", (LimitedH11Protocol,), {"timeouts": timeouts})
    return uvicorn.Config(app, log_level=log_level, access_log=access_log, server_header=False,
                          log_config=log_config(), http=protocol, timeout_keep_alive=max(1, round(timeouts.idle_s)),
                          h11_max_incomplete_event_size=MAX_HEAD + (4 << 10))
