"""How a file on disk maps to a Qdrant point: its key, id and folder chain."""

from __future__ import annotations

import os
import posixpath
import uuid
from functools import lru_cache

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/clipdex/clipdex/file")


def path_key(path: str) -> str:
    """The file's absolute path as valid UTF-8 text (undecodable bytes become ``\\xNN``)."""
    if path.isascii():
        return path  # the common case, without a copy
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def point_id(key: str) -> str:
    """A deterministic point id: re-ingesting the same path always hits the same point."""
    return str(uuid.uuid5(_NAMESPACE, key))


def ancestors(key: str) -> list[str]:
    """Every folder above ``key``, from ``/`` down to its parent (for subtree filters)."""
    return list(_folders(posixpath.dirname(key)))


@lru_cache(maxsize=4096)
def _folders(folder: str) -> tuple[str, ...]:
    """``folder`` and every folder above it, top first (files of one folder share the answer)."""
    out = []
    while True:
        out.append(folder)
        parent = posixpath.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return tuple(out[::-1])


def is_below(key: str, root: str) -> bool:
    """True if ``key`` is ``root`` itself or lies anywhere under it."""
    root = root.rstrip("/") or "/"
    return key == root or key.startswith(root if root == "/" else root + "/")
