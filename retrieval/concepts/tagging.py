"""Tagging: each point's payload ``concepts`` lists the concepts it belongs to, so filters and counts are exact.

A point is a member of a concept when it is one of its examples (same content hash, so a renamed or copied file
stays one), or when its score reaches the concept's threshold and it is none of its non-examples. Tagged points
carry ``concepts_at`` (a marker); points without it (just ingested, moved: ingest writes a fresh payload) are the
ones :func:`tag_new` scores. Only points whose list changes are written, grouped by their new list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from retrieval.concepts.book import content_key
from retrieval.concepts.learner import Head

FIELD = "concepts"
MARK = "concepts_at"
FIELDS = (FIELD, MARK, "hash", "path", "media", "time_s")

Judge = tuple[Head, float, set[str], set[str]]
"""A concept's head, threshold, and the content keys of its examples and of its non-examples."""


def members(judge: Judge, vectors: np.ndarray, payloads: list[dict[str, Any]]) -> np.ndarray:
    """Which rows are members (bool)."""
    head, cut, yes, no = judge
    keys = [content_key(p) for p in payloads]
    inside = head.score(vectors) >= cut if len(vectors) else np.zeros(0, bool)
    for i, key in enumerate(keys):
        if key in yes:
            inside[i] = True
        elif key in no:
            inside[i] = False
    return inside


def tag_rows(store: Any, judges: Mapping[str, Judge], ids: list[Any], vectors: np.ndarray,
             payloads: list[dict[str, Any]], forget: Iterable[str] = ()) -> dict[str, Any]:
    """Tag these points (their vectors and payloads with :data:`FIELDS` in hand); write only changed lists.
    ``payloads`` are updated in place to what was written."""
    gone = set(forget)
    olds = [p.get(FIELD) or [] for p in payloads]
    changed = np.array([MARK not in p for p in payloads], bool)
    if gone:
        changed |= np.array([bool(gone.intersection(old)) for old in olds], bool)
    inside = {}
    for name, judge in judges.items():
        inside[name] = members(judge, vectors, payloads)
        changed |= inside[name] != np.array([name in old for old in olds], bool)
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i in np.flatnonzero(changed):
        new = {c for c in olds[i] if c not in judges and c not in gone}
        new.update(name for name, flags in inside.items() if flags[i])
        groups[tuple(sorted(new))].append(int(i))
    written = _write(store, groups, ids, payloads)
    counts = {name: int(flags.sum()) for name, flags in inside.items()}
    return {"scanned": len(ids), "written": written, "members": counts}


def retag(store: Any, name: str, inside: np.ndarray, was: np.ndarray, ids: list[Any],
          payloads: list[dict[str, Any]]) -> int:
    """Write ``name`` onto the rows where ``inside`` differs from ``was`` (what their payloads list now), and
    take it off; only those rows are touched (a review's refit: its membership before is known). ``payloads``
    are updated in place. Returns the number of points written."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i in np.flatnonzero(inside != was):
        new = {c for c in payloads[i].get(FIELD) or [] if c != name}
        if inside[i]:
            new.add(name)
        groups[tuple(sorted(new))].append(int(i))
    return _write(store, groups, ids, payloads)


def tag_vectors_store(store: Any, judges: Mapping[str, Judge], *, only_new: bool = False,
                      forget: Iterable[str] = ()) -> dict[str, Any]:
    """Score every point (``only_new``: those without the marker) against ``judges`` and write what changed.

    ``forget``: concept names to take off every point (a forgotten concept). Returns counts: points scanned,
    points written, members per concept.
    """
    total: dict[str, Any] = {"scanned": 0, "written": 0, "members": dict.fromkeys(judges, 0)}
    for ids, vectors, payloads in store.scroll_vectors(FIELDS, missing=MARK if only_new else None, raw_ids=True):
        page = tag_rows(store, judges, ids, vectors, payloads, forget)
        total["scanned"] += page["scanned"]
        total["written"] += page["written"]
        for name, n in page["members"].items():
            total["members"][name] += n
    return total


def untag(store: Any, name: str) -> int:
    """Take ``name`` off every point that lists it; the number of points changed."""
    changed = 0
    pages = list(store.scroll_vectors((FIELD,), having=(FIELD, name), vectors=False))
    for ids, _, payloads in pages:
        groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for pid, payload in zip(ids, payloads, strict=True):
            groups[tuple(sorted(c for c in payload.get(FIELD) or [] if c != name))].append(pid)
        for value, group in groups.items():
            store.set_payload(group, {FIELD: list(value)})
            changed += len(group)
    return changed


def _write(store: Any, groups: Mapping[tuple[str, ...], list[int]], ids: list[Any],
           payloads: list[dict[str, Any]]) -> int:
    """Set each group's concept list on its rows (in pages of 8192), mirror it into ``payloads``; rows written."""
    for value, rows in groups.items():
        for start in range(0, len(rows), 8192):
            chunk = rows[start:start + 8192]
            store.set_payload([ids[i] for i in chunk], {FIELD: list(value), MARK: 1})
            for i in chunk:
                payloads[i].update({FIELD: list(value), MARK: 1})
    return sum(len(rows) for rows in groups.values())
