"""Damaged stores: searches that refill past damaged points, and the check that finds and marks them.

A stored vector can be damaged on disk (a bad block, a stray write): its cosine with any query is then
no cosine (NaN, or far outside [-1, 1]). Such points may fill the top K of every search; they are
never results (:func:`retrieval.store.base.sane_hits`), so a search asks again without them
(:func:`refill`), a bounded number of times. ``clipdex status --check`` reads every vector, finds the
damaged ones (:func:`find_damaged`) and marks them (:data:`DAMAGED_MARK`): the next ingest then sees
their files as changed and embeds them again. A point is never deleted for being damaged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from retrieval import hints
from retrieval.errors import ClipdexError
from retrieval.store.base import SCORE_TOLERANCE, Hit, log

MAX_ROUNDS = 6
"""Searches one query may make to refill its top K past damaged points."""
MAX_EXCLUDED = 20_000
"""Known-damaged ids a search leaves out by id (a store with more needs ``clipdex status --check``)."""
NORM_TOLERANCE = 5e-2
"""A stored vector is damaged when it is not finite or its length is off 1 by more than this (stored
vectors are unit length; float16 or quantized storage stays far closer)."""
DAMAGED_MARK: dict[str, Any] = {"damaged": True, "hash": "", "size": -1}
"""The payload fields a damaged point gets: its file no longer matches (size), its content is not
reused for a copy or a move (hash), and ``damaged`` says why."""


class StoreDamaged(ClipdexError):
    """The engine failed reading the store's own files: a server answers 503, not a client error."""


def sane(hit: Hit) -> bool:
    return math.isfinite(hit.score) and abs(hit.score) <= 1.0 + SCORE_TOLERANCE


def sane_vector(vector: np.ndarray) -> bool:
    norm = float(np.linalg.norm(np.asarray(vector, np.float64)))
    return math.isfinite(norm) and abs(norm - 1.0) <= NORM_TOLERANCE


def refill(search: Callable[[int, frozenset[str]], list[Hit]], limit: int, damaged: set[str]) -> list[Hit]:
    """The ``limit`` best hits that are no damaged point, best first.

    ``search(k, exclude)`` returns the k best hits of the engine, leaving out the ids ``exclude``.
    ``damaged`` holds the ids known to be damaged (shared across searches; found ones are added). Each
    round leaves out every damaged id known so far and asks for ``limit`` plus twice that many hits: once
    a round holds ``limit`` sane hits, or fewer hits than asked (nothing more to find), those are exactly
    the best. At most :data:`MAX_ROUNDS` rounds; if damaged points still crowd the top, what was found is
    returned (and ``status --check`` is named in the log).
    """
    sane_hits: list[Hit] = []
    found: set[str] = set()
    for _ in range(MAX_ROUNDS):
        exclude = frozenset(damaged) if len(damaged) <= MAX_EXCLUDED else frozenset()
        ask = limit + 2 * len(exclude)
        raw = search(ask, exclude)
        sane_hits = [h for h in raw if sane(h)]
        new = {h.id for h in raw if not sane(h)} - exclude
        damaged.update(new)
        found |= new
        if len(sane_hits) >= limit or len(raw) < ask or not new:
            break
    if found:
        log.warning("left out %d point(s) with damaged vectors (%s marks them for re-embedding): %s", len(found),
                    hints.command("status --check"), ", ".join(sorted(found)[:3]))
    return sane_hits[:limit]


class _Readable(Protocol):
    def payloads(self, fields: list[str]) -> Iterator[tuple[str, dict[str, Any]]]: ...

    def points(self, ids: list[str]) -> dict[str, tuple[np.ndarray, dict[str, Any]]]: ...


@dataclass
class Damage:
    """What :func:`find_damaged` found: points read, and the damaged ones (id -> path, reason)."""

    checked: int = 0
    damaged: dict[str, tuple[str, str]] = field(default_factory=dict)


def find_damaged(store: _Readable, page: int = 256) -> Damage:
    """Read every stored vector; a point whose vector is not finite or not unit length, or cannot be
    read at all, is damaged. Memory: one page of vectors at a time."""
    damage = Damage()
    batch: list[tuple[str, str]] = []
    for pid, payload in store.payloads(["path"]):
        batch.append((pid, str(payload.get("path", ""))))
        if len(batch) >= page:
            _check_page(store, batch, damage)
            batch = []
    if batch:
        _check_page(store, batch, damage)
    return damage


def _check_page(store: _Readable, batch: list[tuple[str, str]], damage: Damage) -> None:
    try:
        found = store.points([pid for pid, _ in batch])
    except Exception:  # noqa: BLE001  (an engine error names no point: read them one by one)
        found = {}
        for pid, path in batch:
            try:
                found.update(store.points([pid]))
            except Exception as exc:  # noqa: BLE001
                damage.damaged[pid] = (path, f"unreadable ({str(exc).splitlines()[0][:120] if str(exc) else exc})")
    for pid, path in batch:
        damage.checked += 1
        if pid in damage.damaged:
            continue
        if pid not in found:
            damage.damaged[pid] = (path, "no vector")
        elif not sane_vector(found[pid][0]):
            norm = float(np.linalg.norm(np.asarray(found[pid][0], np.float64)))
            damage.damaged[pid] = (path, f"vector length {norm:.3g}, not 1")


def file_problems(folder: Path) -> list[str]:
    """Files of an embedded store whose size its own config contradicts (a truncated vector or payload
    file): cheap, a few ``stat`` calls, so ``status`` always makes it."""
    problems: list[str] = []
    for config in sorted((folder / "shard" / "segments").glob("*/*/*/config.json")):
        problems += _sized_files(config, "chunk_size_bytes", "chunk_*.mmap")
    for config in sorted((folder / "shard" / "segments").glob("*/payload_storage/config.json")):
        problems += _sized_files(config, "page_size_bytes", "page_*.dat")
    return problems


def _sized_files(config: Path, key: str, pattern: str) -> list[str]:
    try:
        size = json.loads(config.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(size, int) or size <= 0:
        return []
    problems = []
    for file in sorted(config.parent.glob(pattern)):
        try:
            actual = file.stat().st_size
        except OSError as exc:
            problems.append(f"{file} cannot be read ({exc.strerror})")
            continue
        if actual != size:
            problems.append(f"{file} is {actual:,} bytes, not {size:,} (truncated?)")
    return problems
