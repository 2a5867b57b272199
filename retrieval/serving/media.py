"""``GET /api/media``: an indexed file's bytes with HTTP Range support (a ``<video>`` element seeks with it).

One range per request (``bytes=FIRST-LAST``, ``bytes=FIRST-``, ``bytes=-SUFFIX``), as players send;
anything else in a Range header (several ranges, another unit, bad syntax) is ignored and the whole file
sent (RFC 9110 lets a server do that); a range that starts past the end is answered 416 with
``Content-Range: bytes */SIZE``. Each request reads at most the file's size from one open descriptor.
"""

from __future__ import annotations

import os
import re

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
MAX_DIGITS = 19  # more than any file size: a longer number is no range

VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
               ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".3gp": "video/3gpp", ".mts": "video/mp2t",
               ".m2ts": "video/mp2t"}


class Unsatisfiable(Exception):
    """A range that starts at or past the end of the file (answered 416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) bytes a Range header asks for, clamped to the file; None for the whole file."""
    if not header:
        return None
    match = _RANGE.match(header)
    if not match or not (match[1] or match[2]) or len(match[1]) > MAX_DIGITS or len(match[2]) > MAX_DIGITS:
        return None  # not one byte range: ignored
    if not match[1]:  # the last N bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size - 1
    first = int(match[1])
    if match[2] and int(match[2]) < first:
        return None  # invalid: ignored
    if first >= size:
        raise Unsatisfiable
    return first, min(int(match[2]) if match[2] else size - 1, size - 1)


def video_type(path: str) -> str | None:
    """The MIME type of a video by its name (None for another file)."""
    return VIDEO_TYPES.get(os.path.splitext(path)[1].lower())
