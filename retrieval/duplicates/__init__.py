"""Near-duplicates: find them (:mod:`.find`), review them, resolve them without destroying anything.

The library functions the CLI (``clipdex duplicates``) and the HTTP API (``/api/duplicates``) are thin
shells over. Nothing here deletes a file: duplicates are moved aside with a manifest (:mod:`.resolve`)
and "not duplicates" decisions are remembered in the collection (:mod:`.decisions`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

from ingest.records import path_key, point_id
from retrieval.duplicates import resolve
from retrieval.duplicates.decisions import Decisions, decisions_file
from retrieval.duplicates.find import DEFAULT_NEIGHBOURS, DEFAULT_THRESHOLD, Found, Options, find, folder_key
from retrieval.errors import ClipdexError
from retrieval.index import Index
from retrieval.settings import Settings
from retrieval.store import VectorStore

__all__ = ["DEFAULT_NEIGHBOURS", "DEFAULT_THRESHOLD", "Found", "Options", "dismiss", "find_in", "move_files",
           "options_of", "undo_moves"]


def _store(index: Index, lock: AbstractContextManager[Any] | None) -> VectorStore:
    if lock is None:
        return index.store
    from retrieval.store.shared import LockedStore

    return cast(VectorStore, LockedStore(index.store, cast(Any, lock)))


def find_in(index: Index, options: Options, lock: AbstractContextManager[Any] | None = None) -> Found:
    """The duplicate groups of ``index``'s collection (``lock``: held around each store call)."""
    return find(index.store, Decisions(decisions_file(index.settings)), options, lock)


def _indexed(index: Index, paths: Sequence[str], lock: AbstractContextManager[Any] | None) -> dict[str, dict]:
    """The payload of each path, which must be a file in the collection."""
    keys = [path_key(os.path.abspath(os.path.expanduser(p))) for p in paths]
    with lock or nullcontext():
        found = index.store.points([point_id(k) for k in keys]) if index.store.meta() is not None else {}
    payloads: dict[str, dict] = {}
    for given, key in zip(paths, keys, strict=True):
        hit = found.get(point_id(key))
        if hit is None or hit[1].get("path") != key:
            raise ClipdexError(f"not an indexed file: {given}")
        payloads[key] = hit[1]
    return payloads


def dismiss(index: Index, paths: Sequence[str], lock: AbstractContextManager[Any] | None = None) -> dict[str, Any]:
    """Remember that the files ``paths`` (two or more indexed files) are not duplicates of each other."""
    if len(set(paths)) < 2:
        raise ClipdexError("--not-duplicates needs two or more indexed files")
    payloads = _indexed(index, paths, lock)
    hashes = [str(p.get("hash") or "") for p in payloads.values()]
    if not all(hashes):
        raise ClipdexError("a file has no content hash in the collection; ingest it again first")
    added = Decisions(decisions_file(index.settings)).add(hashes)
    return {"not_duplicates": sorted(payloads), "new_pairs": added}


def move_files(index: Index, paths: Sequence[str], move_to: str,
               lock: AbstractContextManager[Any] | None = None) -> dict[str, Any]:
    """Move the indexed files ``paths`` into ``move_to`` (relative paths kept), write the manifest, and
    drop their points (the files are proven gone from their folders)."""
    from retrieval.changes import drop_gone

    with lock or nullcontext():
        roots = list(index.store.root_counts())
    dest = resolve.check_destination(move_to, roots)
    payloads = _indexed(index, paths, lock)
    moves = resolve.plan([(key, str(p.get("root") or "")) for key, p in payloads.items()], dest)
    manifest, done = resolve.move(moves, dest)
    gone: dict[str, list[str]] = defaultdict(list)
    for m in done:
        if not os.path.lexists(m.source):
            gone[m.root or "/"].append(m.source)
    store = _store(index, lock)
    dropped = sum(drop_gone(store, root, files, 1.0)["deleted"] for root, files in gone.items())
    return {"manifest": str(manifest), "moved": [m.row() for m in done], "points_dropped": dropped}


def undo_moves(index: Index, manifest: str, lock: AbstractContextManager[Any] | None = None) -> dict[str, Any]:
    """Put back every file a manifest lists (nothing is overwritten) and ingest them again by path."""
    from retrieval.changes import apply_changes

    moves = resolve.read_manifest(manifest)
    restored, already = resolve.undo(moves)
    by_root: dict[str, list[str]] = defaultdict(list)
    for m in restored + already:
        by_root[m.root].append(m.source)
    indexed = 0
    for root, files in by_root.items():
        if root and os.path.isdir(root):
            summary = apply_changes(Index(index.settings, _store(index, lock), index.encoder), root, files)
            indexed += int(summary.get("indexed", 0)) + int(summary.get("moved", 0))
        else:
            indexed += Index(index.settings, _store(index, lock), index.encoder).ingest(files).indexed
    return {"manifest": manifest, "restored": [m.row() for m in restored],
            "already_back": [m.row() for m in already], "indexed": indexed}


def options_of(settings: Settings, *, folder: str | None = None, threshold: float | None = None,
               neighbours: int | None = None, min_similarity: float | None = None) -> Options:
    """The search's options: the ``[duplicates]`` settings, each overridden by a value given (not None)."""
    d = settings.duplicates
    return Options(folder=check_folder(folder), threshold=d.threshold if threshold is None else threshold,
                   neighbours=d.neighbours if neighbours is None else neighbours,
                   min_similarity=d.min_similarity if min_similarity is None else min_similarity,
                   max_megapixels=settings.ingest.max_megapixels)


def check_folder(folder: str | None) -> str | None:
    """``--folder`` as a path key; it must exist (a typo would silently find nothing)."""
    if folder is None:
        return None
    if not os.path.isdir(os.path.expanduser(folder)):
        raise ClipdexError(f"--folder {folder}: no such folder")
    return folder_key(folder)
