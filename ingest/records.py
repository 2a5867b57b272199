"""How a file on disk maps to a Qdrant point: its key, id and folder chain."""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from functools import lru_cache

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/clipdex/clipdex/file")


_ESCAPE_LIKE = re.compile(r"\\x[0-9a-fA-F]{2}")


def path_key(path: str) -> str:
    """The file's absolute path as valid UTF-8 text, one key per file (see :func:`key_bytes` for the way back).

    Each ``/``-separated name that is valid UTF-8 and holds no text like an escape (a backslash, ``x``
    and two hex digits) is kept as it is: every ordinary path is its own key. Any other name is escaped:
    each backslash doubled, each byte that is not UTF-8 written ``\\xNN``. A name with an escape-like
    text in its key is thus always an escaped one, so a file named ``caf\\xe9.jpg`` and one whose name
    holds the byte 0xE9 get different keys.
    """
    if path.isascii() and "\\" not in path:
        return path  # the common case, without a copy
    return "/".join(_name_key(name) for name in path.split("/"))


def _name_key(name: str) -> str:
    try:
        name.encode("utf-8")
        if not _ESCAPE_LIKE.search(name):
            return name
        raw = name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, as os.fsdecode's surrogate escapes (or lone surrogates)
        try:
            raw = os.fsencode(name)
        except UnicodeEncodeError:
            raw = name.encode("utf-8", "surrogatepass")
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def key_bytes(key: str) -> bytes:
    """The exact file-system path (bytes) of a stored key: the inverse of :func:`path_key`."""
    if key.isascii() and "\\" not in key:
        return key.encode()
    return b"/".join(_name_bytes(name) for name in key.split("/"))


def _name_bytes(name: str) -> bytes:
    if not _ESCAPE_LIKE.search(name):
        return name.encode("utf-8", "surrogateescape")
    out, i = bytearray(), 0
    while i < len(name):
        if name.startswith("\\\\", i):
            out += b"\\"
            i += 2
        elif _ESCAPE_LIKE.match(name, i):
            out.append(int(name[i + 2:i + 4], 16))
            i += 4
        else:
            out += name[i].encode("utf-8", "surrogateescape")
            i += 1
    return bytes(out)


def fs_path(key: str) -> str:
    """A stored key as the ``str`` path ``open()`` takes (``os.fsdecode`` of :func:`key_bytes`)."""
    return os.fsdecode(key_bytes(key))


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
