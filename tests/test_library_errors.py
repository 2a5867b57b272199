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


def test_a_rust_panic_of_the_store_engine_is_one_line(tmp_path, capfd: pytest.CaptureFixture[str]):  # noqa: ANN001
    """A real panic: qdrant-edge loading a sealed segment whose id mappings are all ones (``capacity overflow``).
    clipdex's own open checks the file first (tests/test_damaged_segments.py); the engine called directly
    panics, its backtrace is held back, and the panic reads as one line about the store's files."""
    import uuid

    import numpy as np
    import qdrant_edge as qe

    from retrieval.store.base import CollectionMeta, IndexConfig
    from retrieval.store.edge import EdgeStore
    from retrieval.store.segments import engine_stderr

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(1000, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = EdgeStore(tmp_path / "s", config=IndexConfig(segment_points=1000, index_threshold=1000))
    try:
        store.create(CollectionMeta("m", "", 8))
        store.upsert([str(uuid.UUID(int=i + 1)) for i in range(1000)], vectors,
                     [{"path": f"/p/{i}"} for i in range(1000)])
    finally:
        store.close()
    (mappings,) = (tmp_path / "s" / "shard" / "segments").glob("*/id_tracker.mappings")
    mappings.write_bytes(b"\xff" * mappings.stat().st_size)
    capfd.readouterr()
    with pytest.raises(BaseException) as caught, engine_stderr():
        qe.EdgeShard.load(str(tmp_path / "s" / "shard"))
    assert type(caught.value).__name__ == "PanicException"
    assert "panicked" not in capfd.readouterr().err  # held back
    line = library_error_line(caught.value)
    assert line is not None and "damaged store files" in line and "\n" not in line
