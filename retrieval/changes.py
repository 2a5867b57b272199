"""What a burst of file-system events changes in the collection, decided by looking at the disk.

Existing files are ingested by path (the ingest pipeline: new or changed bytes are embedded, moved
bytes reuse their stored vector); a path is dropped only when the disk proves it gone, and a burst
that would drop more than ``[ingest] max_delete_fraction`` of a watched folder's points waits for a
confirmation, like ``clipdex ingest``'s mass deletions. Folders and large bursts become a full sync
(``Index.ingest`` of the watched folder), where the pipeline's own rules decide what is gone.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ingest import failures
from ingest.finish import Progress
from ingest.records import is_below, path_key, point_id
from retrieval.errors import ClipdexError
from retrieval.index import Index
from retrieval.store import VectorStore
from retrieval.watch import selected

MAX_EVENT_FILES = 1000
"""More changed paths than this in one burst: a full sync of the root is cheaper than file by file."""
CHUNK = 256
"""Points per store call (the server's lock is held for one call at a time)."""


def root_problem(root: str) -> str:
    """Why ``root`` cannot prove anything about the files below it ("" when it can).

    A missing or unlistable root, and an empty one (an unmounted mount point looks like that), are
    reasons to keep every point below it.
    """
    try:
        with os.scandir(root) as entries:
            return "" if next(entries, None) is not None else "empty (not mounted?)"
    except FileNotFoundError:
        return "missing (not mounted?)"
    except NotADirectoryError:
        return "not a folder"
    except OSError as exc:
        return exc.strerror or str(exc)


def _gone(path: str) -> bool:
    """True only when the disk says ``path`` does not exist while its folder can be listed."""
    try:
        os.lstat(path)
        return False
    except FileNotFoundError:
        pass
    except OSError:
        return False  # unreadable is not gone
    try:
        with os.scandir(os.path.dirname(path)):
            return True
    except FileNotFoundError:  # the folder went too: its own event (or a parent's) proves that
        return True
    except OSError:
        return False


def apply_changes(index: Index, root: str, paths: Iterable[str], progress: Progress | None = None, *,
                  prune: bool = False) -> dict[str, Any]:
    """Bring the points of ``paths`` (below ``root``) in line with the disk; returns a summary.

    Existing files go through ``Index.ingest`` (new or changed bytes are embedded, moved bytes reuse
    their stored vector); a path the disk proves gone loses its point and every point below it.
    A new or moved-in folder, or a burst too large, becomes a full sync of the root instead.
    """
    problem = root_problem(root)
    if problem:
        raise ClipdexError(f"{root}: {problem}; nothing changed, every point below it is kept")
    ingest_settings = index.settings.ingest
    files: list[str] = []
    gone: list[str] = []
    for path in sorted(set(paths)):
        try:
            st = os.stat(path)
        except OSError:
            if _gone(path) and selected(root, path, ingest_settings, is_dir=True):
                gone.append(path)
            continue
        if stat.S_ISDIR(st.st_mode) and selected(root, path, ingest_settings, is_dir=True):
            return full_sync(index, root, progress, prune=prune) | {"reason": f"folder changed: {path}"}
        if stat.S_ISREG(st.st_mode) and selected(root, path, ingest_settings, is_dir=False):
            files.append(path)
    if len(files) + len(gone) > MAX_EVENT_FILES:
        return full_sync(index, root, progress, prune=prune) | {"reason": f"{len(files) + len(gone)} changed paths"}
    summary: dict[str, Any] = {"kind": "changes", "files": len(files)}
    if files:  # the paths were selected against the root's rules above; the basenames need not match `include`
        by_path = Index(index.settings.with_overrides(ingest={"include": []}), index.store, encoders=index.encoders)
        report = by_path.ingest(files, progress=progress or False)
        adopt(index.store, root, files)
        summary |= report.as_dict() | {"notices": report.notices()}
    held = drop_gone(index.store, root, gone, 1.0 if prune else ingest_settings.max_delete_fraction)
    summary["deleted"] = summary.get("deleted", 0) + held.pop("deleted")
    if held["would_delete"]:
        summary.setdefault("held_back", []).append(held)
        summary.setdefault("notices", []).append(
            f"held back: {held['would_delete']:,} of {held['points']:,} points below {root} are gone (over "
            "[ingest] max_delete_fraction); nothing deleted there; POST /api/ingest?prune=true confirms")
    return summary


def adopt(store: VectorStore, root: str, files: Sequence[str]) -> None:
    """Points ingested by path record each file as their own root: record the watched root instead
    (``clipdex status`` counts points per root)."""
    root_key = path_key(root)
    ids = [point_id(path_key(f)) for f in files]
    for start in range(0, len(ids), CHUNK):
        found = store.points(ids[start:start + CHUNK])
        wrong = [(pid, vector, payload) for pid, (vector, payload) in found.items() if payload.get("root") != root_key]
        if wrong:
            store.upsert([pid for pid, _, _ in wrong], np.stack([vector for _, vector, _ in wrong]),
                         [payload | {"root": root_key} for _, _, payload in wrong])


def drop_gone(store: VectorStore, root: str, gone: Sequence[str], max_fraction: float) -> dict[str, Any]:
    """Delete the points of the proven-gone ``gone`` paths and of anything stored below them, unless
    that is more than ``max_fraction`` of the points below ``root`` (then nothing: ``would_delete``)."""
    result = {"path": root, "points": 0, "would_delete": 0, "deleted": 0}
    if not gone or store.meta() is None:
        return result
    keys = {path_key(p) for p in gone}
    root_key = path_key(root)
    failures.forget_gone(store, keys)  # a gone file that had failed is no longer counted by `status`
    ids: set[str] = set()
    for pid, payload in store.payloads(["path"]):
        stored = payload.get("path", "")
        if is_below(stored, root_key):
            result["points"] += 1
            if _at_or_below(stored, keys, root_key):  # the gone path itself, or a gone folder's file
                ids.add(pid)
    if len(ids) > max_fraction * result["points"]:
        result["would_delete"] = len(ids)
        return result
    ordered = sorted(ids)
    for start in range(0, len(ordered), CHUNK):  # the server's lock is held per chunk only
        store.delete(ordered[start:start + CHUNK])
    result["deleted"] = len(ids)
    return result


def _at_or_below(key: str, folders: set[str], root_key: str) -> bool:
    """Whether ``key`` or one of its folders up to ``root_key`` is in ``folders`` (one set look-up per level)."""
    while key not in folders:
        parent = posixpath.dirname(key)
        if key == root_key or parent == key:
            return False
        key = parent
    return True


def full_sync(index: Index, root: str, progress: Progress | None = None, *, prune: bool = False) -> dict[str, Any]:
    """``Index.ingest`` of the whole root: the pipeline decides what is new, changed and gone (an
    offline root, an unreadable folder or a mass deletion keeps its points: see ``notices``;
    ``prune`` confirms a mass deletion)."""
    report = index.ingest([root], progress=progress or False, prune=prune)
    return {"kind": "full"} | report.as_dict() | {"notices": report.notices()}
