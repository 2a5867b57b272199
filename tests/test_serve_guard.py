"""``clipdex serve`` on a shared network: limits while the body streams, no 500 from client input,
generic internal errors, decode budgets, HEAD, the API key, a store deleted under the server.

Every test talks to a real uvicorn server on 127.0.0.1 (the configuration ``clipdex serve`` uses).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from retrieval.server import create_app
from tests.test_server import Live, assert_error, live_library, serving


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
