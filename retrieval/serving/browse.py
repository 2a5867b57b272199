"""``GET /api/browse``: the library without a query, by date (newest first, in months) or by folder, paged; a
video is one entry however many moments it has, and ``GET /api/moments`` lists them (the viewer's strip).

The page's library views are virtualised: they need the whole shape of the library (how many photos in each
month or folder) up front and any page of it on demand. One scroll of the store's light payload fields
(``path``, ``folder``, ``taken_ts``, ``mtime``; a moment's ``media``, ``start_s``, ``duration_s``) builds both
orders; they are kept in memory (two lists of point ids) and built again when the collection's point count
changes, a page move or undo happened, or :data:`MAX_AGE_S` passed. A page's full payloads are then read by id,
one store call under the server's lock. The cursor is the position in that order: a collection that changes
between two pages may shift its rows.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import posixpath
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Query
from starlette.exceptions import HTTPException

from retrieval.search.moments import shown
from retrieval.search.run import hit_row
from retrieval.store.base import Hit, SearchFilter
from retrieval.store.shared import LockedStore

MAX_AGE_S = 60.0
MAX_PAGE = 500
MAX_CURSOR = 100_000_000
MAX_MOMENTS = 5000
"""``GET /api/moments`` lists at most this many moments of one video (``[video] max_moments`` is 2,000)."""
LIGHT_FIELDS = ("path", "folder", "taken_ts", "mtime", "media", "start_s", "duration_s")


@dataclass
class Order:
    """One order of the library: point ids, and its sections (a month or a folder) as [key, label, start, count]."""

    ids: list[str] = field(default_factory=list)
    sections: list[dict[str, Any]] = field(default_factory=list)
    videos: int = 0  # of the entries, whole videos (one each, however many moments)


def _month(ts: float | None) -> tuple[str, str]:
    """(key, label) of the month of a UTC timestamp: ("2023-06", "June 2023"); ("", "No date") without one."""
    if ts is None:
        return "", "No date"
    try:
        return _month_of_day(int(ts // 86400))
    except (OverflowError, OSError, ValueError):
        return "", "No date"


@functools.lru_cache(maxsize=65536)
def _month_of_day(day: int) -> tuple[str, str]:
    """(key, label) of the month of a day since 1970 (cached: a library has far fewer days than photos)."""
    when = datetime.fromtimestamp(day * 86400, UTC)
    return when.strftime("%Y-%m"), when.strftime("%B %Y")


def _sections(keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, (key, label) in enumerate(keys):
        if out and out[-1]["key"] == key:
            out[-1]["count"] += 1
        else:
            out.append({"key": key, "label": label, "start": i, "count": 1})
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value == value else None


def one_per_video(points: list[tuple[str, dict[str, Any]]]) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """The library's entries: every photo, and of each video one moment, the one showing a third of its
    duration (past a black or faded start: its card's frame, :func:`retrieval.search.moments.shown`); and how
    many videos there are."""
    entries: list[tuple[str, dict[str, Any]]] = []
    videos: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for pid, p in points:
        if p.get("media") == "video":
            videos.setdefault(str(p.get("path") or ""), []).append((pid, p))
        else:
            entries.append((pid, p))
    for moments in videos.values():
        moments.sort(key=lambda m: (_number(m[1].get("start_s")) or 0.0, m[0]))
        starts = [_number(m[1].get("start_s")) or 0.0 for m in moments]
        entries.append(moments[shown(starts, _number(moments[0][1].get("duration_s")) or 0.0)])
    return entries, len(videos)


def build_orders(points: list[tuple[str, dict[str, Any]]]) -> dict[str, Order]:
    """The date order (EXIF time, else the file's time; newest first) and the folder order (folder, name), one
    entry per photo and one per video (:func:`one_per_video`)."""
    points, videos = one_per_video(points)
    dated = []
    for pid, p in points:
        ts = _number(p.get("taken_ts"))
        ts = ts if ts is not None else _number(p.get("mtime"))
        dated.append((ts, str(p.get("path") or ""), pid))
    dated.sort(key=lambda r: (r[0] is None, -(r[0] or 0.0), r[1]))
    by_date = Order([pid for _, _, pid in dated], _sections([_month(ts) for ts, _, _ in dated]), videos)
    foldered = sorted(((str(p.get("folder") or posixpath.dirname(str(p.get("path") or ""))),
                        str(p.get("path") or ""), pid) for pid, p in points))
    by_folder = Order([pid for _, _, pid in foldered], _sections([(f, f) for f, _, _ in foldered]), videos)
    return {"date": by_date, "folder": by_folder}


class BrowseCache:
    """The two orders of the collection, built once per state (see the module docstring)."""

    def __init__(self, service: Any):
        self.service = service
        self.busy = threading.Lock()
        self.key: int | None = None
        self.made = 0.0
        self.orders: dict[str, Order] | None = None

    def invalidate(self) -> None:
        with self.busy:
            self.orders = None

    def warm(self) -> None:
        """Build the orders ahead of the first request (at start-up); a failure is left to that request."""
        with contextlib.suppress(Exception):
            self.get()

    def get(self) -> dict[str, Order]:
        store = self.service.index.store
        with self.busy:
            with self.service.lock:
                count = store.count() if store.meta() is not None else 0
            if self.orders is None or self.key != count or time.monotonic() - self.made > MAX_AGE_S:
                points: list[tuple[str, dict[str, Any]]] = []
                if count:  # the lock is held for each step of the scroll, not the whole: searches go on meanwhile
                    points = list(LockedStore(store, self.service.lock).payloads(LIGHT_FIELDS))
                self.orders = build_orders(points)
                self.key, self.made = count, time.monotonic()
            return self.orders


def add_routes(app: FastAPI, service: Any) -> BrowseCache:
    """Register ``GET /api/browse`` on ``app``; the cache is returned so that writes can invalidate it."""
    cache = BrowseCache(service)

    @app.get("/api/browse")
    def api_browse(by: Literal["date", "folder"] = "date",
                   cursor: Annotated[int, Query(ge=0, le=MAX_CURSOR)] = 0,
                   limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                   sections: bool = False) -> dict[str, Any]:
        """``limit`` photos from position ``cursor`` of the library ``by`` date (newest first) or folder:
        rows as ``GET /api/search`` returns them (without ``score``), each with its ``section`` (a month
        ``2023-06`` or a folder); ``next`` is the cursor of the next page (null at the end); ``total`` the
        photos in all; ``sections`` (with ``sections=true``): every month or folder as key, label, start, count."""
        order = cache.get()[by]
        ids = order.ids[cursor:cursor + limit]
        with service.lock:
            found = service.index.store.points(ids) if ids else {}
        rows = []
        starts = [s["start"] for s in order.sections]
        for offset, pid in enumerate(ids, start=cursor):
            if pid not in found:  # removed since the order was built: skipped, the positions stay
                continue
            row = hit_row(Hit(pid, 0.0, found[pid][1]))
            row.pop("score", None)
            if row.get("media") == "video":  # the whole video: its frame (time_s), no moment's range
                row.pop("start_s", None)
                row.pop("end_s", None)
                row["moments"] = found[pid][1].get("video_points")
            row["position"] = offset
            row["section"] = order.sections[bisect.bisect_right(starts, offset) - 1]["key"]
            rows.append(row)
        end = cursor + len(ids)
        doc: dict[str, Any] = {"by": by, "cursor": cursor, "items": rows, "total": len(order.ids),
                               "videos": order.videos, "next": end if end < len(order.ids) else None}
        if sections:
            doc["sections"] = order.sections
        return doc

    @app.get("/api/moments")
    def api_moments(path: Annotated[str, Query(min_length=1, max_length=4096)]) -> dict[str, Any]:
        """The moments of the indexed video ``path`` in time order (``start_s``, ``end_s``, ``time_s``: its
        frame), at most :data:`MAX_MOMENTS`; ``duration_s``; a path that is no indexed video is a 404."""
        store = service.index.store
        with service.lock:
            meta = store.meta()
            hits = [] if meta is None else store.query(_probe(meta.dim), MAX_MOMENTS,
                                                       SearchFilter(path=path, media="video"))
        payloads = [h.payload for h in hits if h.payload.get("path") == path]
        if not payloads:
            raise HTTPException(404, f"not an indexed video: {path}")
        newest = max(payloads, key=lambda p: _number(p.get("mtime")) or 0.0).get("hash")  # one version of it
        moments = sorted(({k: p.get(k) for k in ("start_s", "end_s", "time_s")} for p in payloads
                          if p.get("hash") == newest), key=lambda m: (_number(m["start_s"]) or 0.0))
        return {"path": path, "duration_s": payloads[0].get("duration_s"), "moments": moments}

    return cache


def _probe(dim: int) -> np.ndarray:
    """Any unit vector: a query where only the filter matters."""
    probe = np.zeros(dim, np.float32)
    probe[0] = 1.0
    return probe
