"""A small on-disk cache of query text -> vector, so a repeated one-shot ``clipdex search`` skips the text tower.

Only a one-shot search process turns it on (:func:`enable`; a server keeps its in-memory LRU,
retrieval.model.encoder). One file per text under ``$CLIPDEX_CACHE/text-vectors/<model>/`` (default
``~/.cache/clipdex/text-vectors/``), ``<model>`` keyed by the export's content key, the text tower's precision
and the ONNX Runtime version (:func:`model_key`): another model, precision or runtime never reads another's
vectors. A file holds the text itself (so two texts never share a vector) and the float32 vector; it is written
through a temporary file and ``os.replace``; one that does not read back whole and sound is a miss (and
overwritten). At most :data:`MAX_FILES` files per model: past that the oldest half goes. ``CLIPDEX_TEXT_CACHE=0``
turns it off. No torch, no onnxruntime here.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np

from retrieval.model.onnx_files import cache_root

CACHE_VERSION = 1
MAX_FILES = 4096
"""Vectors kept per model (about 2 KB each at 512 dimensions)."""
ENV = "CLIPDEX_TEXT_CACHE"
_enabled = False


def enable(on: bool = True) -> None:
    """Turn the cache on for this process (a one-shot search); ``CLIPDEX_TEXT_CACHE=0`` still wins."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled and os.environ.get(ENV, "1") != "0"


def ort_version() -> str:
    """ONNX Runtime's version read from its package files, without importing it (0.1-0.2 s); "" if unknown."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return ""
    for location in (spec.submodule_search_locations or []) if spec else []:
        try:
            text = (Path(location) / "capi" / "build_and_package_info.py").read_text(encoding="utf-8")
        except OSError:
            continue
        if found := re.search(r"""__version__\s*=\s*['"]([^'"]+)['"]""", text):
            return found.group(1)
    return ""


def model_key(export_key: str, precision: str, runtime: str) -> str:
    import xxhash

    return xxhash.xxh3_64("\0".join([str(CACHE_VERSION), export_key, precision, runtime]).encode()).hexdigest()


def folder_for(export_key: str, precision: str) -> Path | None:
    """The folder of one model's cached text vectors, or None where the runtime's version is unknown."""
    runtime = ort_version()
    if not runtime:
        return None
    return cache_root().parent / "text-vectors" / model_key(export_key, precision, runtime)


def _file(folder: Path, text: str) -> Path:
    import xxhash

    return folder / f"{xxhash.xxh3_128_hexdigest(text.encode('utf-8', 'surrogatepass'))}.vec"


def get(folder: Path, text: str, dim: int) -> np.ndarray | None:
    """The cached unit vector of ``text``, or None (not cached, or a file that is not whole and sound)."""
    try:
        data = _file(folder, text).read_bytes()
    except OSError:
        return None
    raw = text.encode("utf-8", "surrogatepass")
    if len(data) < 4 or struct.unpack("<I", data[:4])[0] != len(raw) or data[4 : 4 + len(raw)] != raw:
        return None
    if len(data) != 4 + len(raw) + 4 * dim:
        return None
    vector = np.frombuffer(data[4 + len(raw) :], dtype="<f4")
    if vector.shape != (dim,) or not np.isfinite(vector).all() or abs(float(vector @ vector) - 1.0) > 1e-3:
        return None
    return vector.astype(np.float32)


def put(folder: Path, text: str, vector: np.ndarray) -> None:
    """Keep ``vector`` for ``text`` (best effort: a read-only or full disk only loses the cache)."""
    raw = text.encode("utf-8", "surrogatepass")
    path = _file(folder, text)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(struct.pack("<I", len(raw)) + raw + np.asarray(vector, dtype="<f4").tobytes())
        os.replace(tmp, path)
        if int.from_bytes(os.urandom(1), "little") < 4:  # now and then (1 in 64): keep the folder bounded
            _prune(folder)
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _prune(folder: Path) -> None:
    files = [(entry.stat().st_mtime, entry.path) for entry in os.scandir(folder) if entry.name.endswith(".vec")]
    if len(files) <= MAX_FILES:
        return
    for _, path in sorted(files)[: len(files) // 2]:
        Path(path).unlink(missing_ok=True)
