"""Video moments in search results: one hit per video by default, ``path#t=SECONDS`` references, ``mm:ss``.

A video is stored as one point per moment (ingest.video), so a plain nearest-neighbour search could fill
the page with moments of one video. :func:`fetch_collapsed` keeps each video's best ``per_video`` moments
(photos are never collapsed): it asks the store for ``limit`` hits, and only when moments were dropped asks
again for more (4x, then 16x, at most ``MAX_FETCH``), so a library without videos pays nothing.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from retrieval.store import Hit, SearchFilter, VectorStore

MAX_MOMENTS = 20
"""``--moments N``: at most this many moments of one video."""
MAX_FETCH = 40_000
"""The most hits one search asks the store for while collapsing moments."""
_FRAGMENT = re.compile(r"^(?P<path>.+)#t=(?P<t>[0-9]+(?:\.[0-9]*)?)$")


SHOWN_AT = 1 / 3
"""Where in a video the moment that stands for it lies (past a black or faded start): the frame of its library
card and of its entry in the Duplicates view."""


def covering(starts: Sequence[float], t: float) -> int:
    """The index of the moment covering ``t`` seconds, given the moments' sorted starts: the last one that starts
    at or before ``t`` (the first for an earlier ``t``)."""
    return max(0, bisect.bisect_right(starts, t) - 1)


def shown(starts: Sequence[float], duration: float) -> int:
    """The index of the moment that stands for a whole video (:data:`SHOWN_AT` of its ``duration`` in)."""
    return covering(starts, duration * SHOWN_AT)


def is_moment(payload: dict[str, Any]) -> bool:
    return payload.get("media") == "video"


def collapse(hits: list[Hit], per_video: int) -> list[Hit]:
    """``hits`` (best first) with at most ``per_video`` moments of each video."""
    seen: dict[str, int] = {}
    kept = []
    for hit in hits:
        if is_moment(hit.payload):
            path = str(hit.payload.get("path", ""))
            if seen.get(path, 0) >= per_video:
                continue
            seen[path] = seen.get(path, 0) + 1
        kept.append(hit)
    return kept


def fetch_collapsed(fetch: Callable[[int], list[Hit]], limit: int, per_video: int) -> list[Hit]:
    """The best ``limit`` hits after :func:`collapse`; ``fetch(k)`` returns the store's top ``k``."""
    k = limit
    while True:
        hits = fetch(k)
        kept = collapse(hits, per_video)
        if len(kept) >= limit or len(hits) < k or k >= MAX_FETCH:
            return kept[:limit]
        k = min(MAX_FETCH, k * 4)


def split_fragment(ref: str) -> tuple[str, float | None]:
    """``path#t=SECONDS`` as (path, seconds); any other reference as (ref, None)."""
    match = _FRAGMENT.match(ref)
    if not match:
        return ref, None
    seconds = float(match["t"])
    return (match["path"], seconds) if math.isfinite(seconds) else (ref, None)


def moment_at(store: VectorStore, key: str, seconds: float | None, max_moments: int = 100_000) -> Hit | None:
    """The stored moment of video ``key`` that holds ``seconds`` (the nearest one; the first without a time)."""
    meta = store.meta()
    if meta is None:
        return None
    probe = np.zeros(meta.dim, np.float32)
    probe[0] = 1.0  # any unit vector: only the filter matters
    hits = store.query(probe, max_moments, SearchFilter(path=key, media="video"))
    if not hits:
        return None
    t = 0.0 if seconds is None else seconds

    def distance(hit: Hit) -> float:
        start, end = float(hit.payload.get("start_s", 0.0)), float(hit.payload.get("end_s", 0.0))
        return 0.0 if start <= t < end else min(abs(t - start), abs(t - end))

    return min(hits, key=lambda h: (distance(h), float(h.payload.get("start_s", 0.0))))


def fragment(row: dict[str, Any]) -> str:
    """A result's reference: ``path`` for a photo, ``path#t=SECONDS`` for a moment (media-fragment form)."""
    path = str(row.get("path", ""))
    if row.get("media") == "video" and row.get("time_s") is not None:
        return f"{path}#t={_seconds(float(row['time_s']))}"
    return path


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def mmss(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on)."""
    total = max(0, int(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
