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

from ingest.records import fs_path, path_key, point_id
from retrieval.duplicates import resolve
from retrieval.duplicates.decisions import Decisions, decisions_file
from retrieval.duplicates.find import DEFAULT_NEIGHBOURS, DEFAULT_THRESHOLD, Found, Group, Options, find, folder_key
from retrieval.errors import ClipdexError
from retrieval.index import Index
from retrieval.settings import Settings
from retrieval.store import VectorStore

__all__ = ["DEFAULT_NEIGHBOURS", "DEFAULT_THRESHOLD", "Found", "Group", "Options", "dismiss", "find_in", "forget",
           "group_moves", "move_files", "selection_moves", "options_of", "undo_moves"]


def _store(index: Index, lock: AbstractContextManager[Any] | None) -> VectorStore:
    if lock is None:
        return index.store
    from retrieval.store.shared import LockedStore

    return cast(VectorStore, LockedStore(index.store, cast(Any, lock)))


def find_in(index: Index, options: Options, lock: AbstractContextManager[Any] | None = None) -> Found:
    """The duplicate groups of ``index``'s collection (``lock``: held around each store call)."""
    return find(index.store, Decisions(decisions_file(index.settings)), options, lock)


def _indexed(index: Index, paths: Sequence[str], lock: AbstractContextManager[Any] | None, *,
             keys: bool = False) -> dict[str, dict]:
    """The payload of each path, which must be a file in the collection. ``keys``: the paths are stored path
    keys already (from a group, or the page); else they are file-system paths a user typed."""
    given_keys = list(paths) if keys else [path_key(os.path.abspath(os.path.expanduser(p))) for p in paths]
    with lock or nullcontext():
        found = index.store.points([point_id(k) for k in given_keys]) if index.store.meta() is not None else {}
    payloads: dict[str, dict] = {}
    for given, key in zip(paths, given_keys, strict=True):
        hit = found.get(point_id(key))
        payload = hit[1] if hit is not None and hit[1].get("path") == key else _video(index, key, lock)
        if payload is None:
            raise ClipdexError(f"not an indexed file: {given}")
        payloads[key] = payload
    return payloads


def _video(index: Index, key: str, lock: AbstractContextManager[Any] | None) -> dict | None:
    """The payload of one moment of the video ``key`` (a video has one point per moment, none at the path's own
    point id), or None when no video is stored there."""
    import numpy as np

    from retrieval.store import SearchFilter

    with lock or nullcontext():
        meta = index.store.meta()
        if meta is None:
            return None
        probe = np.zeros(meta.dim, np.float32)
        probe[0] = 1.0  # any unit vector: only the filter matters
        hits = index.store.query(probe, 1, SearchFilter(path=key, media="video"))
    return hits[0].payload if hits and hits[0].payload.get("path") == key else None


def _hashes(index: Index, paths: Sequence[str], lock: AbstractContextManager[Any] | None, keys: bool) -> list[str]:
    payloads = _indexed(index, paths, lock, keys=keys)
    hashes = [str(p.get("hash") or "") for p in payloads.values()]
    if not all(hashes):
        raise ClipdexError("a file has no content hash in the collection; ingest it again first")
    return hashes


def dismiss(index: Index, paths: Sequence[str], lock: AbstractContextManager[Any] | None = None, *,
            keys: bool = False) -> dict[str, Any]:
    """Remember that the files ``paths`` (two or more indexed files) are not duplicates of each other."""
    if len(set(paths)) < 2:
        raise ClipdexError("--not-duplicates needs two or more indexed files")
    hashes = _hashes(index, paths, lock, keys)
    added = Decisions(decisions_file(index.settings)).add(hashes)
    listed = sorted(paths) if keys else sorted(path_key(os.path.abspath(os.path.expanduser(p))) for p in paths)
    return {"not_duplicates": listed, "new_pairs": added}


def forget(index: Index, paths: Sequence[str], lock: AbstractContextManager[Any] | None = None) -> dict[str, Any]:
    """Drop every "not duplicates" decision that involves one of the indexed files ``paths``."""
    if not paths:
        raise ClipdexError("--forget-decision needs one or more indexed files")
    dropped = Decisions(decisions_file(index.settings)).forget(_hashes(index, paths, lock, False))
    return {"forgotten": dropped}


def group_moves(groups: Sequence[Group]) -> list[resolve.GroupMove]:
    """What the mover needs of found groups: each keeper and duplicate with the hash the group was built from."""
    return [resolve.GroupMove(g.keep.path, g.keep.hash, tuple((d.path, d.root, d.hash) for d in g.duplicates))
            for g in groups]


def selection_moves(index: Index, keys: Sequence[str],
                    lock: AbstractContextManager[Any] | None = None) -> list[resolve.GroupMove]:
    """The move of indexed files a user selected (path keys), not a duplicate group: no keeper, each file
    checked like any duplicate (inside a root, a regular file, the bytes the collection holds for it)."""
    payloads = _indexed(index, list(dict.fromkeys(keys)), lock, keys=True)
    return [resolve.GroupMove("", "", tuple((key, str(p.get("root") or ""), str(p.get("hash") or ""))
                                            for key, p in payloads.items()))]


def move_files(index: Index, groups: Sequence[resolve.GroupMove], move_to: str,
               lock: AbstractContextManager[Any] | None = None) -> dict[str, Any]:
    """Move each group's duplicates into ``move_to`` (relative paths kept) after checking each group against the
    disk again (:mod:`.resolve`), write the manifest, and drop the points of the files proven gone.

    Raises :class:`ClipdexError` when nothing could be moved for a reason (the first named), and when a move
    stopped part-way (after dropping the points of the files that did move)."""
    from retrieval.changes import drop_gone

    with lock or nullcontext():
        roots = list(index.store.root_counts())
    outcome = resolve.move(groups, move_to, roots)
    gone: dict[str, list[str]] = defaultdict(list)
    for m in outcome.done:
        if not os.path.lexists(fs_path(m.source)):
            gone[m.root or "/"].append(fs_path(m.source))
    store = _store(index, lock)
    dropped, warning = 0, outcome.warning
    try:
        dropped = sum(drop_gone(store, fs_path(root), files, 1.0)["deleted"] for root, files in gone.items())
    except ClipdexError as exc:
        kept = f"the store kept their points ({exc}); the next ingest drops them"
        warning = f"{warning}; {kept}" if warning else kept
    skipped = [{"path": p, "reason": why} for p, why in outcome.skipped]
    if outcome.failure:
        raise ClipdexError(f"moved {len(outcome.done)} files, then {outcome.failure}; {outcome.manifest} lists "
                           "the moves done (undo puts them back)")
    if not outcome.done and skipped:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise ClipdexError(f"nothing moved: {skipped[0]['path']}: {skipped[0]['reason']}{more}")
    return {"manifest": outcome.manifest, "moved": [m.row() for m in outcome.done], "skipped": skipped,
            "points_dropped": dropped, "warning": warning}


def undo_moves(index: Index, manifest: str, lock: AbstractContextManager[Any] | None = None) -> dict[str, Any]:
    """Put back every file a manifest lists (nothing is overwritten; only from below the manifest's folder to
    below a root of this collection) and ingest them again by path."""
    from retrieval.changes import apply_changes

    with lock or nullcontext():
        roots = list(index.store.root_counts())
    restored, already, failure = resolve.undo(manifest, roots)
    by_root: dict[str, list[str]] = defaultdict(list)
    for m in restored + already:
        by_root[m.root].append(fs_path(m.source))
    indexed = 0
    for root, files in by_root.items():
        if root and os.path.isdir(fs_path(root)):
            summary = apply_changes(Index(index.settings, _store(index, lock), index.encoder), fs_path(root), files)
            indexed += int(summary.get("indexed", 0)) + int(summary.get("moved", 0))
        else:
            indexed += Index(index.settings, _store(index, lock), index.encoder).ingest(files).indexed
    if failure:
        raise ClipdexError(failure)
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
