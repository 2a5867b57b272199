"""``GET /api/duplicates`` (paged groups) and ``POST /api/duplicates/resolve`` for ``clipdex serve``.

A thin shell over :mod:`retrieval.duplicates`. The groups of one search are kept for a while and
paged from memory: a page costs nothing, the search itself runs once per settings, and again when
the collection's size or its decisions change, a resolve happened, ``refresh=true`` asks, or
:data:`MAX_AGE_S` passed. Store calls take the server's lock one at a time, so searches go on meanwhile.
Resolving is a write: the API key covers it like every ``/api/`` route, and a request from another
site's page is refused, like ``POST /api/ingest``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from retrieval import duplicates as dups
from retrieval import hints
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
    move_to: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """``move`` only: the folder the client expects (``clipdex duplicates --move-to DIR``); it must be the
    server's own ``[duplicates] move_to``: a client never chooses where files go."""


class _Cache:
    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.made = 0.0
        self.found: dups.Found | None = None
        self.busy = threading.Lock()  # one search at a time; others wait for its answer


def _same_folder(a: str, b: str) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def add_routes(app: FastAPI, service: Any) -> None:
    """Register the duplicates routes on ``app`` (``service``: the server's ``Service``)."""
    index = service.index
    cache = _Cache()

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
                       neighbours: Annotated[int | None, Query(ge=1, le=256)] = None,
                       refresh: bool = False) -> dict[str, Any]:
        """Groups as ``clipdex duplicates --json`` prints them, ``limit`` from ``offset``, and ``total``;
        ``candidates``, ``verified``, ``unreadable`` (the first 20; ``unreadable_count``: all) and ``seconds``
        as that command prints them."""
        options = dups.options_of(index.settings, folder=folder, threshold=threshold, min_similarity=min_similarity,
                                  neighbours=neighbours)
        found = groups(options, refresh)
        rows = [g.row() for g in found.groups[offset:offset + limit]]
        whole = found.as_dict()
        return {"groups": rows, "checked": found.checked, "total": len(found.groups), "offset": offset,
                "limit": limit, "can_move": bool(index.settings.duplicates.move_to),
                "candidates": whole["candidates"], "verified": whole["verified"], "unreadable": whole["unreadable"],
                "unreadable_count": len(found.unreadable), "seconds": whole["seconds"]}

    @app.post("/api/duplicates/resolve")
    def api_resolve(body: ResolveRequest, request: Request) -> dict[str, Any]:
        """Move a group's duplicates aside (a manifest makes it undoable), or dismiss the group for good."""
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, "cross-site request refused (another site's page may not move or dismiss files)")
        if body.action == "move":
            move_to = index.settings.duplicates.move_to
            if not move_to:
                raise HTTPException(409, "this server has no [duplicates] move_to folder; set it to move files from "
                                         f"the page, or use {hints.command('duplicates --move-to DIR')}")
            if body.move_to is not None and not _same_folder(body.move_to, move_to):
                raise HTTPException(409, f"this server moves duplicates into its [duplicates] move_to folder only, "
                                         f"not {body.move_to}; use that folder, or stop the server to move them "
                                         "elsewhere")
            if body.keep is not None and body.keep in body.paths:
                raise HTTPException(422, "the file to keep is also among the paths to move")
            result = dups.move_files(index, body.paths, move_to, service.lock)
        else:
            result = dups.dismiss(index, [*body.paths, *([body.keep] if body.keep else [])], service.lock)
        with cache.busy:
            cache.found = None  # the next page searches again
        return {"action": body.action} | result
