"""Find the groups of duplicates in a collection: candidates, verification, grouping, keepers.

1. Byte-identical files (the same content hash in the payload) form groups of reason ``identical``.
2. One file per content stands for it; each is a query for its nearest stored neighbours at the
   cosine ``threshold`` (:mod:`.candidates`), and each candidate pair is checked at the pixel level
   (:mod:`.verify`). Pairs the user dismissed (:mod:`.decisions`) are never checked.
3. Verified pairs are joined into groups; the keeper (:mod:`.keeper`) must itself match every
   duplicate of its group, so a chain of look-alikes never makes one group: members that do not
   match the keeper are grouped again among themselves.
4. Videos are grouped among videos only, whole: by their content hash, and else by their moment sequences
   aligned in time and a pixel check of frames at the same times (:mod:`.videos`). A video's own moments
   are never duplicates of each other.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from ingest.records import fs_path
from retrieval import hints
from retrieval.duplicates.candidates import Lock, Point, neighbours, scan
from retrieval.duplicates.decisions import Decisions
from retrieval.duplicates.keeper import Candidate, candidate, choose
from retrieval.duplicates.verify import DEFAULT_MIN_SIMILARITY, DecodeError, Look, look_of, same_photo
from retrieval.duplicates.videos import VideoCheck, candidate_pairs, videos_of
from retrieval.errors import ClipdexError
from retrieval.store import VectorStore

DEFAULT_THRESHOLD = 0.90
DEFAULT_NEIGHBOURS = 16
MAX_NEIGHBOURS = 256


@dataclass
class Group:
    keep: Candidate
    duplicates: list[Candidate]
    similarity: float
    reason: str  # "identical" | "near"
    keep_reason: str

    def row(self) -> dict[str, Any]:
        return {"keep": self.keep.path, "duplicates": [d.path for d in self.duplicates],
                "similarity": round(self.similarity, 4), "reason": self.reason, "keep_reason": self.keep_reason,
                "files": [self.keep.row()] + [d.row() for d in self.duplicates]}


@dataclass
class Found:
    groups: list[Group]
    checked: int
    candidates: int = 0  # near pairs the embedding proposed
    verified: int = 0  # of those, the pixel check confirmed
    unreadable: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: search, verify, group

    def as_dict(self) -> dict[str, Any]:
        return {"groups": [g.row() for g in self.groups], "checked": self.checked,
                "candidates": self.candidates, "verified": self.verified, "unreadable": self.unreadable[:20],
                "seconds": self.seconds}


@dataclass(frozen=True)
class Options:
    folder: str | None = None  # a path key: only files below it
    threshold: float = DEFAULT_THRESHOLD  # cosine for candidates
    neighbours: int = DEFAULT_NEIGHBOURS  # nearest neighbours asked per file
    min_similarity: float = DEFAULT_MIN_SIMILARITY  # pixel similarity for the verified pairs
    max_megapixels: float = 100.0

    def check(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ClipdexError(f"threshold must be above 0 and at most 1, not {self.threshold:g}")
        if not 0.0 < self.min_similarity <= 1.0:
            raise ClipdexError(f"min similarity must be above 0 and at most 1, not {self.min_similarity:g}")
        if not 1 <= self.neighbours <= MAX_NEIGHBOURS:
            raise ClipdexError(f"neighbours must be from 1 to {MAX_NEIGHBOURS}, not {self.neighbours}")


class _Looks:
    """Each file's :class:`Look`, made once per run (None: unreadable now)."""

    def __init__(self, max_megapixels: float):
        self.max_megapixels = max_megapixels
        self.cache: dict[str, Look | None] = {}
        self.unreadable: list[str] = []

    def __call__(self, path: str) -> Look | None:
        if path not in self.cache:
            try:
                self.cache[path] = look_of(path, self.max_megapixels)
            except DecodeError:
                self.cache[path] = None
                self.unreadable.append(path)
        return self.cache[path]


def find(store: VectorStore, decisions: Decisions, options: Options = Options(), lock: Lock | None = None,
         verify: Callable[[Look, Look], tuple[bool, float]] | None = None) -> Found:
    """The duplicate groups of the collection (of ``options.folder``), keepers chosen, best groups first:
    photos among photos, whole videos among videos (:mod:`.videos`)."""
    options.check()
    with lock or nullcontext():
        empty = store.meta() is None or store.count() == 0
    if empty:
        raise ClipdexError(f"collection at {store.location} holds no vectors (run {hints.command('ingest DIR')} first)")
    started = time.perf_counter()
    points, moments = scan(store, options.folder, lock)
    videos = videos_of(moments)
    groups: list[Group] = []
    reps = _identical_groups(points, decisions, groups)
    video_by_path = {v.path: v for v in videos}
    video_reps = _identical_groups([v.point for v in videos], decisions, groups)
    by_hash: dict[str, int] = defaultdict(int)
    for p in points:
        by_hash[p.hash or f"id:{p.id}"] += 1
    hash_of = {p.id: (p.hash or f"id:{p.id}") for p in points}
    queries = list(reps.values())
    limits = [min(MAX_NEIGHBOURS * 2, options.neighbours + by_hash[hash_of[q.id]]) for q in queries]
    pairs: dict[tuple[str, str], float] = {}
    photos_only = "image" if moments else None  # moments never crowd a photo's neighbours out (none: no filter)
    for row, hit_id, score in neighbours(store, queries, limits, options.threshold, options.folder, lock,
                                         media=photos_only):
        a, b = hash_of[queries[row].id], hash_of.get(hit_id)
        if b is None or a == b or decisions.dismissed(a, b):
            continue
        key = (a, b) if a < b else (b, a)
        pairs[key] = max(score, pairs.get(key, -1.0))
    whole = {h: video_by_path[p.path] for h, p in video_reps.items()}
    video_pairs = candidate_pairs(store, whole, decisions, threshold=options.threshold,
                                  neighbours_asked=options.neighbours, folder=options.folder, lock=lock)
    searched = time.perf_counter()
    check = verify or (lambda x, y: same_photo(x, y, options.min_similarity))
    looks = _Looks(options.max_megapixels)

    def photos_match(a: str, b: str) -> tuple[bool, float]:
        la, lb = looks(reps[a].path), looks(reps[b].path)
        return check(la, lb) if la is not None and lb is not None else (False, 0.0)

    same_video = VideoCheck(store, threshold=options.threshold, min_similarity=options.min_similarity,
                            max_megapixels=options.max_megapixels, lock=lock)

    def videos_match(a: str, b: str) -> tuple[bool, float]:
        return same_video(whole[a], whole[b])

    verified = _verified(pairs, photos_match)
    verified_videos = _verified(video_pairs, videos_match)
    checked = time.perf_counter()
    groups += _near_groups(verified, reps, photos_match)
    groups += _near_groups(verified_videos, video_reps, videos_match)
    groups.sort(key=lambda g: (g.reason != "identical", -g.similarity, g.keep.path))
    seconds = {"search": searched - started, "verify": checked - searched, "group": time.perf_counter() - checked}
    return Found(groups, len(points) + len(videos), len(pairs) + len(video_pairs),
                 len(verified) + len(verified_videos), looks.unreadable + same_video.unreadable,
                 {k: round(v, 3) for k, v in seconds.items()})


def _identical_groups(points: Sequence[Point], decisions: Decisions, groups: list[Group]) -> dict[str, Point]:
    """One point per content (the copy kept where there are several); byte-identical files' groups are added
    to ``groups`` (unless the user kept all copies of that content)."""
    by_hash: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        by_hash[p.hash or f"id:{p.id}"].append(p)
    reps = {h: copies[0] for h, copies in by_hash.items()}
    for h, copies in by_hash.items():
        copies = _distinct_files(copies) if len(copies) > 1 else copies
        if len(copies) > 1:
            group, keeper = _identical(copies)
            reps[h] = keeper  # the copy kept stands for its content in near groups too
            if not decisions.dismissed(h, h):
                groups.append(group)
    return reps


def _verified(pairs: dict[tuple[str, str], float],
              match: Callable[[str, str], tuple[bool, float]]) -> dict[tuple[str, str], float]:
    """The candidate pairs the check confirms (most similar by the embedding first), with its similarity."""
    verified: dict[tuple[str, str], float] = {}
    for a, b in sorted(pairs, key=lambda k: -pairs[k]):
        ok, score = match(a, b)
        if ok:
            verified[(a, b)] = score
    return verified


def _distinct_files(copies: Sequence[Point]) -> list[Point]:
    """``copies`` less every point that is the same file as an earlier one (the same device and inode: a
    folder ingested twice, directly and through a link, or a hard link): a file is no copy of itself."""
    seen: set[tuple[int, int]] = set()
    out = []
    for p in copies:
        try:
            st = os.stat(fs_path(p.path))
        except (OSError, ValueError):
            out.append(p)  # gone or unreadable now: the move checks it again and refuses it
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            out.append(p)
    return out


def _identical(copies: Sequence[Point]) -> tuple[Group, Point]:
    members = [candidate(p.payload) for p in copies]
    keep, why = choose(members)
    group = Group(keep, [m for m in members if m is not keep], 1.0, "identical", why)
    return group, copies[members.index(keep)]


def _near_groups(verified: dict[tuple[str, str], float], reps: dict[str, Point],
                 match: Callable[[str, str], tuple[bool, float]]) -> list[Group]:
    """Groups of contents joined by verified pairs; each duplicate matches its keeper (split otherwise)."""
    parent: dict[str, str] = {}

    def root(h: str) -> str:
        while parent.get(h, h) != h:
            parent[h] = parent.get(parent[h], parent[h])
            h = parent[h]
        return h

    for a, b in verified:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        parent[root(a)] = root(b)
    components: dict[str, list[str]] = defaultdict(list)
    for h in parent:
        components[root(h)].append(h)
    groups: list[Group] = []
    pending = [sorted(c) for c in components.values()]
    while pending:
        hashes = pending.pop()
        members = {h: candidate(reps[h].payload) for h in hashes}
        keep, why = choose(list(members.values()))
        keep_hash = next(h for h, c in members.items() if c is keep)
        scores: dict[str, float] = {}
        for h in hashes:
            if h == keep_hash:
                continue
            key = (h, keep_hash) if h < keep_hash else (keep_hash, h)
            if key in verified:
                scores[h] = verified[key]
                continue
            ok, score = match(h, keep_hash)
            if ok:
                scores[h] = score
        if scores:
            dups = sorted((members[h] for h in scores), key=lambda c: c.path)
            groups.append(Group(keep, dups, min(scores.values()), "near", why))
        rest = [h for h in hashes if h != keep_hash and h not in scores]
        if len(rest) > 1:  # the members that do not match this keeper: grouped again among themselves
            pending.extend(_split(rest, verified))
    return groups


def _split(hashes: list[str], verified: dict[tuple[str, str], float]) -> list[list[str]]:
    """The connected parts of ``hashes`` under the verified pairs (singletons left out)."""
    left, parts = set(hashes), []
    while left:
        start = left.pop()
        part, todo = [start], [start]
        while todo:
            h = todo.pop()
            for other in list(left):
                if (min(h, other), max(h, other)) in verified:
                    left.discard(other)
                    part.append(other)
                    todo.append(other)
        if len(part) > 1:
            parts.append(sorted(part))
    return parts


def folder_key(folder: str) -> str:
    """A ``--folder`` as the path key the payload holds (absolute, no trailing slash)."""
    from ingest.records import path_key

    return path_key(os.path.abspath(os.path.expanduser(folder))).rstrip("/") or "/"
