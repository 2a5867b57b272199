"""``GET /api/duplicates`` (paged groups) and ``POST /api/duplicates/resolve`` for ``clipdex serve``.

A thin shell over :mod:`retrieval.duplicates`. The groups of one search are kept for a while and
paged from memory: a page costs nothing, the search itself runs once per settings, and again when
the collection's size or its decisions change, a resolve happened, ``refresh=true`` asks, or
:data:`MAX_AGE_S` passed. Store calls take the server's lock one at a time, so searches go on meanwhile.
Resolving is a write: the API key covers it like every ``/api/`` route, and a request from another
site's page is refused, like ``POST /api/ingest``. ``POST /api/duplicates/undo`` puts back the files of the
last move this server made (only manifests it wrote itself, newest first; never a path the client names).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from retrieval import duplicates as dups
from retrieval.duplicates.decisions import decisions_file

MAX_AGE_S = 300.0
MAX_PAGE = 100
MAX_PATHS = 1000


class ResolveRequest(BaseModel):
    """``move``: move ``paths`` (the duplicates) into ``[duplicates] move_to``, ``keep`` staying;
    ``not-duplicates`` / ``keep-all``: remember that ``paths`` (and ``keep``) are not duplicates."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["move", "not-duplicates", "keep-all"]
    paths: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(min_length=1, max_length=MAX_PATHS)
    keep: Annotated[str, Field(min_length=1, max_length=4096)] | None = None


class _Cache:
    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.made = 0.0
        self.found: dups.Found | None = None
        self.busy = threading.Lock()  # one search at a time; others wait for its answer


def add_routes(app: FastAPI, service: Any, on_change: Callable[[], None] | None = None) -> None:
    """Register the duplicates routes on ``app`` (``service``: the server's ``Service``; ``on_change``:
    called after files were moved or put back)."""
    index = service.index
    cache = _Cache()
    manifests: list[str] = []  # the moves this server made, oldest first (undo takes the last)
    undoing = threading.Lock()

    def changed() -> None:
        with cache.busy:
            cache.found = None  # the next page searches again
        if on_change is not None:
            on_change()

    def same_site(request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, "cross-site request refused (another site's page may not move or dismiss files)")

    def state() -> tuple[int, float]:
        with service.lock:
            count = index.store.count()
        try:
            mtime = decisions_file(index.settings).stat().st_mtime_ns
        except OSError:
            mtime = 0
        return count, mtime

    def groups(options: dups.Options, refresh: bool) -> dups.Found:
        with cache.busy:
            key = (options, *state())
            fresh = cache.found is not None and cache.key == key and time.monotonic() - cache.made < MAX_AGE_S
            if refresh or not fresh:
                cache.found = dups.find_in(index, options, service.lock)
                cache.key, cache.made = key, time.monotonic()
            assert cache.found is not None
            return cache.found

    @app.get("/api/duplicates")
    def api_duplicates(offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
                       limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
                       folder: Annotated[str | None, Query(min_length=1, max_length=4096)] = None,
                       threshold: Annotated[float | None, Query(gt=0, le=1)] = None,
                       min_similarity: Annotated[float | None, Query(gt=0, le=1)] = None,
                       path: Annotated[str | None, Query(min_length=1, max_length=4096)] = None,
                       refresh: bool = False) -> dict[str, Any]:
        """Groups as ``clipdex duplicates --json`` prints them, ``limit`` from ``offset``, and ``total``;
        ``path``: only the group that holds that file (none: it has no duplicates); ``can_undo``: a move made
        here can be put back."""
        options = dups.options_of(index.settings, folder=folder, threshold=threshold, min_similarity=min_similarity)
        found = groups(options, refresh)
        chosen = found.groups if path is None else [
            g for g in found.groups if path in (g.keep.path, *(d.path for d in g.duplicates))]
        rows = [g.row() for g in chosen[offset:offset + limit]]
        return {"groups": rows, "checked": found.checked, "total": len(chosen), "offset": offset,
                "limit": limit, "can_move": bool(index.settings.duplicates.move_to), "can_undo": bool(manifests)}

    @app.post("/api/duplicates/resolve")
    def api_resolve(body: ResolveRequest, request: Request) -> dict[str, Any]:
        """Move a group's duplicates (or any indexed files: the page's "move aside" of a selection) aside,
        a manifest making it undoable, or dismiss the group for good."""
        same_site(request)
        if body.action == "move":
            move_to = index.settings.duplicates.move_to
            if not move_to:
                raise HTTPException(409, "this server has no [duplicates] move_to folder; set it to move files from "
                                         "the page, or use `clipdex duplicates --move-to DIR`")
            if body.keep is not None and body.keep in body.paths:
                raise HTTPException(422, "the file to keep is also among the paths to move")
            try:
                result = dups.move_files(index, body.paths, move_to, service.lock)
            finally:
                changed()
            if result.get("moved"):
                manifests.append(str(result["manifest"]))
        else:
            result = dups.dismiss(index, [*body.paths, *([body.keep] if body.keep else [])], service.lock)
            changed()
        return {"action": body.action} | result

    @app.post("/api/duplicates/undo")
    def api_undo(request: Request) -> dict[str, Any]:
        """Put back the files of the last move made through this server (its manifest; nothing overwritten)
        and ingest them again, as ``clipdex duplicates --undo MANIFEST`` does."""
        same_site(request)
        with undoing:
            if not manifests:
                raise HTTPException(409, "nothing to undo: this server has moved no files since it started")
            try:
                result = dups.undo_moves(index, manifests[-1], service.lock)
            finally:
                changed()
            manifests.pop()
        return result | {"can_undo": bool(manifests)}
