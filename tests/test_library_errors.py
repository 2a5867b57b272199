"""Exceptions that libraries raise about the user's data or surroundings reach the user as one line
(issue 26: "exceptions from libraries that reach the user"), never as ``internal error`` or a traceback.

Each exception here is raised by the real library on real bad input; :func:`library_error_line` is what the
CLI's last-resort handler asks before it says ``internal error``.
"""

from __future__ import annotations

import http.client
import io
import zlib
from collections.abc import Callable

import pytest

from retrieval.errors import library_error_line


def _onnx_garbage() -> None:
    import onnxruntime as ort

    ort.InferenceSession(b"this is not an onnx model", providers=["CPUExecutionProvider"])


def _safetensors_garbage() -> None:
    from safetensors.numpy import load

    load(b"\xff" * 64)


def _http_too_many_headers() -> None:
    http.client.parse_headers(io.BytesIO(b"X: y\r\n" * 200 + b"\r\n"))


def _zlib_garbage() -> None:
    zlib.decompress(b"not compressed at all")


def _out_of_memory() -> None:
    raise MemoryError()


CASES: dict[str, tuple[Callable[[], None], str]] = {
    "onnxruntime": (_onnx_garbage, "ONNX Runtime failed"),
    "safetensors": (_safetensors_garbage, "cannot read model weights"),
    "http.client": (_http_too_many_headers, "malformed HTTP answer"),
    "zlib": (_zlib_garbage, "damaged compressed data"),
    "memory": (_out_of_memory, "out of memory"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_library_error_is_one_line_in_the_users_terms(case: str):
    raise_it, words = CASES[case]
    with pytest.raises(BaseException) as caught:
        raise_it()
    line = library_error_line(caught.value)
    assert line is not None and words in line and "\n" not in line, (case, line)


def test_our_own_bugs_stay_internal_errors():
    for exc in (KeyError("x"), TypeError("y"), AttributeError("z"), ValueError("w")):
        assert library_error_line(exc) is None
