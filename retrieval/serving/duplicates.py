"""``GET /api/duplicates`` (paged groups) and ``POST /api/duplicates/resolve`` for ``clipdex serve``.

A thin shell over :mod:`retrieval.duplicates`. The groups of one search are kept and paged from memory:
a page costs nothing. A search runs in a thread of its own, one at a time, when the collection's size
or its decisions changed, a resolve happened, ``refresh=true`` asks, or :data:`MAX_AGE_S` passed.

- A request that needs the search while one with the same settings runs *joins* it (``refresh=true``
  too): one search, however many ask. Waiting holds no worker thread (the route awaits the search's
  future), so searches and page loads go on meanwhile.
- At most :data:`MAX_WAITING` requests wait; the next is answered 429 with ``Retry-After``, and one
  asking for other settings while a search runs is answered 503 with ``Retry-After``.
- Resolves run one at a time. ``move`` moves only files of one group the server found, never its
  keeper, and the mover checks every file against the disk again (:mod:`retrieval.duplicates.resolve`).
- Resolving is a write: the API key covers it like every ``/api/`` route, and a request from another
  site's page is refused, like ``POST /api/ingest``. Its JSON body is capped while it streams in
  (:class:`retrieval.serving.middleware.JsonBodyLimit`).
- ``move`` with ``selection: true`` moves files a user selected on the page (no group, no keeper), each
  checked like a duplicate (:func:`retrieval.duplicates.selection_moves`).
- ``POST /api/duplicates/undo`` puts back the files of the last move this server made (only manifests it
  wrote itself, newest first; never a path the client names).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from retrieval import duplicates as dups
from retrieval import hints
from retrieval.duplicates.decisions import decisions_file
from retrieval.serving.middleware import cross_site

MAX_AGE_S = 300.0
MAX_PAGE = 100
MAX_PATHS = 1000
MAX_WAITING = 16
"""Requests that may wait for one running search; more are answered 429."""
RETRY_AFTER_S = 5
RESOLVE_WAIT_S = 30.0
"""How long a resolve waits for the one before it; then 503 with Retry-After."""


PathText = Annotated[str, Field(min_length=1, max_length=4096)]


class GroupBody(BaseModel):
    """One group of a multi-group ``move``: the file that stays, and its duplicates to move."""

    model_config = ConfigDict(extra="forbid")
    keep: PathText
    paths: list[PathText] = Field(min_length=1, max_length=MAX_PATHS)


class ResolveRequest(BaseModel):
    """``move``: move ``paths`` (duplicates of one group) into ``[duplicates] move_to``, ``keep`` (a file of the
    same group) staying, or several such groups at once as ``groups`` (one manifest); ``not-duplicates`` /
    ``keep-all``: remember that ``paths`` and ``keep`` are not duplicates. Paths are as ``GET /api/duplicates``
    gave them (path keys). At most :data:`MAX_PATHS` paths in all."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["move", "not-duplicates", "keep-all"]
    paths: list[PathText] | None = Field(None, min_length=1, max_length=MAX_PATHS)
    keep: PathText | None = None
    groups: list[GroupBody] | None = Field(None, min_length=1, max_length=MAX_PATHS)
    move_to: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """``move`` only: the folder the client expects (``clipdex duplicates --move-to DIR``); it must be the
    server's own ``[duplicates] move_to``: a client never chooses where files go."""
    selection: bool = False
    """``move`` only: ``paths`` are files selected on the page, not a group (no ``keep``)."""

    @model_validator(mode="after")
    def _shape(self) -> ResolveRequest:
        if (self.paths is None) == (self.groups is None):
            raise ValueError("give either paths (with keep) or groups")
        if self.selection and (self.action != "move" or self.keep is not None or self.groups is not None):
            raise ValueError("selection goes with action move and paths only, without keep")
        if self.groups is not None and (self.action != "move" or self.keep is not None):
            raise ValueError("groups go with action move only, each with its own keep")
        if self.groups is not None and sum(len(g.paths) for g in self.groups) > MAX_PATHS:
            raise ValueError(f"at most {MAX_PATHS} paths in all")
        return self


class _Cache:
    """The last search's groups, and the search running (one at a time)."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.made = 0.0
        self.found: dups.Found | None = None
        self.stale = False  # a resolve changed what the groups say: the next page searches again
        self.lock = threading.Lock()  # guards the fields (held for no I/O)
        self.running: tuple[dups.Options, Future[dups.Found]] | None = None
        self.waiting = 0
        self.resolving = threading.Lock()


def _busy(status: int, message: str) -> HTTPException:
    return HTTPException(status, message, headers={"Retry-After": str(RETRY_AFTER_S)})


def _same_folder(a: str, b: str) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def add_routes(app: FastAPI, service: Any, on_change: Callable[[], None] | None = None) -> None:
    """Register the duplicates routes on ``app`` (``service``: the server's ``Service``; ``on_change``:
    called after files were moved or put back, e.g. to rebuild the library's orders)."""
    index = service.index
    cache = _Cache()
    manifests: list[str] = []  # the moves this server made, oldest first (undo takes the last)

    def changed() -> None:
        with cache.lock:
            cache.stale = True
        if on_change is not None:
            on_change()

    def state() -> tuple[int, float]:
        with service.lock:
            count = index.store.count()
        try:
            mtime = decisions_file(index.settings).stat().st_mtime_ns
        except OSError:
            mtime = 0
        return count, mtime

    def search(options: dups.Options, future: Future[dups.Found]) -> None:
        try:
            key = (options, *state())
            found = dups.find_in(index, options, service.lock)
        except BaseException as exc:  # handed to every request waiting for it
            with cache.lock:
                cache.running = None
            future.set_exception(exc)
            return
        with cache.lock:
            cache.found, cache.key, cache.made, cache.stale, cache.running = found, key, time.monotonic(), False, None
        future.set_result(found)

    def start_or_join(options: dups.Options) -> Future[dups.Found]:
        """The running search's future (joined), or a new search's; counted in ``waiting`` (see :func:`left`)."""
        with cache.lock:
            if cache.running is not None:
                if cache.running[0] != options:
                    raise _busy(503, "a duplicates search with other settings is running; try again when it is done")
                if cache.waiting >= MAX_WAITING:
                    raise _busy(429, f"{MAX_WAITING} requests already wait for the duplicates search; try again later")
                cache.waiting += 1
                return cache.running[1]
            future: Future[dups.Found] = Future()
            cache.running = (options, future)
            cache.waiting += 1
        threading.Thread(target=search, args=(options, future), name="clipdex-duplicates", daemon=True).start()
        return future

    def left() -> None:
        with cache.lock:
            cache.waiting -= 1

    async def groups(options: dups.Options, refresh: bool) -> dups.Found:
        if not refresh:
            current = await run_in_threadpool(state)
            with cache.lock:
                if (cache.found is not None and not cache.stale and cache.key == (options, *current)
                        and time.monotonic() - cache.made < MAX_AGE_S):
                    return cache.found
        future = start_or_join(options)
        try:
            return await asyncio.wrap_future(future)
        finally:
            left()

    @app.get("/api/duplicates")
    async def api_duplicates(offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
                             limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
                             folder: Annotated[str | None, Query(min_length=1, max_length=4096)] = None,
                             threshold: Annotated[float | None, Query(gt=0, le=1)] = None,
                             min_similarity: Annotated[float | None, Query(gt=0, le=1)] = None,
                             neighbours: Annotated[int | None, Query(ge=1, le=256)] = None,
                             path: Annotated[str | None, Query(min_length=1, max_length=4096)] = None,
                             refresh: bool = False) -> dict[str, Any]:
        """Groups as ``clipdex duplicates --json`` prints them, ``limit`` from ``offset``, and ``total``;
        ``path``: only the group holding that file (none: it has no duplicates); ``can_undo``: a move made
        through this server can be put back (``POST /api/duplicates/undo``); ``candidates``, ``verified``,
        ``unreadable`` (the first 20; ``unreadable_count``: all) and ``seconds`` as that command prints them."""
        options = dups.options_of(index.settings, folder=folder, threshold=threshold, min_similarity=min_similarity,
                                  neighbours=neighbours)
        found = await groups(options, refresh)
        chosen = found.groups if path is None else [
            g for g in found.groups if path in (g.keep.path, *(d.path for d in g.duplicates))]
        rows = [g.row() for g in chosen[offset:offset + limit]]
        whole = found.as_dict()
        return {"groups": rows, "checked": found.checked, "total": len(chosen), "offset": offset,
                "limit": limit, "can_move": bool(index.settings.duplicates.move_to), "can_undo": bool(manifests),
                "candidates": whole["candidates"], "verified": whole["verified"], "unreadable": whole["unreadable"],
                "unreadable_count": len(found.unreadable), "seconds": whole["seconds"]}

    def known_group(keep: str, paths: list[str]) -> dups.Group:
        """The group the server found that holds ``keep`` and every one of ``paths`` (409 if none does)."""
        with cache.lock:
            found = cache.found
        if found is None:  # nothing searched since the server started: search now (joining one running)
            future = start_or_join(dups.options_of(index.settings))
            try:
                found = future.result()
            finally:
                left()
        wanted = {keep, *paths}
        for group in found.groups:
            if wanted <= {group.keep.path, *(d.path for d in group.duplicates)}:
                return group
        raise HTTPException(409, "these files are not one duplicate group the server found (or it changed); "
                                 "search again (refresh) and resolve one of the groups it shows")

    def move(body: ResolveRequest) -> dict[str, Any]:
        move_to = index.settings.duplicates.move_to
        if not move_to:
            raise HTTPException(409, "this server has no [duplicates] move_to folder; set it to move files from "
                                     f"the page, or use {hints.command('duplicates --move-to DIR')}")
        if body.move_to is not None and not _same_folder(body.move_to, move_to):
            raise HTTPException(409, f"this server moves duplicates into its [duplicates] move_to folder only, not "
                                     f"{body.move_to}; use that folder, or stop the server to move them elsewhere")
        if body.selection:  # files selected on the page: no group, no keeper; each checked like a duplicate
            result = dups.move_files(index, dups.selection_moves(index, body.paths or [], service.lock),
                                     move_to, service.lock)
            with cache.lock:
                cache.stale = True
            return result
        asked = [(g.keep, g.paths) for g in body.groups] if body.groups else [(body.keep, body.paths or [])]
        plans, found = [], []
        for keep, paths in asked:
            if keep is None:
                raise HTTPException(422, "keep: a move needs the file that stays (keep)")
            if keep in paths:
                raise HTTPException(422, "the file to keep is also among the paths to move")
            group = known_group(keep, list(paths))
            members = {c.path: c for c in [group.keep, *group.duplicates]}
            kept = members[keep]
            plans.append(dups.resolve.GroupMove(kept.path, kept.hash, tuple(
                (members[p].path, members[p].root, members[p].hash) for p in dict.fromkeys(paths))))
            found.append(group)
        result = dups.move_files(index, plans, move_to, service.lock)
        moved = {row["from"] for row in result["moved"]}
        with cache.lock:
            for group in found:
                group.duplicates = [d for d in group.duplicates if d.path not in moved]
                if cache.found is not None and not group.duplicates:
                    cache.found.groups = [g for g in cache.found.groups if g is not group]
            cache.stale = True
        return result

    @contextmanager
    def resolving(request: Request) -> Iterator[None]:
        """One resolve or undo at a time, and only from this server's own page (403 cross-site, 503 busy)."""
        if cross_site(request):
            raise HTTPException(403, "cross-site request refused (another site's page may not move or dismiss files)")
        if not cache.resolving.acquire(timeout=RESOLVE_WAIT_S):
            raise _busy(503, "another resolve is still running; try again in a moment")
        try:
            yield
        finally:
            cache.resolving.release()

    @app.post("/api/duplicates/resolve")
    def api_resolve(body: ResolveRequest, request: Request) -> dict[str, Any]:
        """Move a group's duplicates aside (a manifest makes it undoable), or dismiss the group for good."""
        with resolving(request):
            if body.action == "move":
                try:
                    result = move(body)
                finally:
                    changed()
                if result.get("manifest"):
                    manifests.append(str(result["manifest"]))
            else:
                result = dups.dismiss(index, [*(body.paths or []), *([body.keep] if body.keep else [])],
                                      service.lock, keys=True)
                with cache.lock:
                    cache.stale = True
        return {"action": body.action} | result

    @app.post("/api/duplicates/undo")
    def api_undo(request: Request) -> dict[str, Any]:
        """Put back the files of the last move made through this server (its manifest; nothing overwritten)
        and ingest them again, as ``clipdex duplicates --undo MANIFEST`` does."""
        with resolving(request):
            if not manifests:
                raise HTTPException(409, "nothing to undo: this server has moved no files since it started")
            try:
                result = dups.undo_moves(index, manifests[-1], service.lock)
            finally:
                changed()
            manifests.pop()
        return result | {"can_undo": bool(manifests)}
