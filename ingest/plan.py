"""Planning an ingest: compare the roots' listing with the store and decide what may be deleted.

Nothing here reads image bytes or writes to the store. The rules ("never delete what is not known
to be gone"):

* A root that is missing, cannot be listed, is not a folder, or lists no image file while the store
  holds points below it is **offline**: every point below it is kept.
* A stored point below a folder (or symlink) that could not be listed is **kept**.
* Every other stored point below a root whose file was not listed is **stale**: a candidate for
  deletion, decided after the upserts by :func:`ingest.finish.finish` (moved files reuse the vector
  first; a mass deletion is held back unless confirmed).

Memory: the plan holds per listed file its :class:`ScannedFile`, and per stored point at most one
hash in a set (a video's moment: its id); stale candidates keep (key, hash). No vector and no stored
payload is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.records import ancestors, is_below, path_key, point_id
from ingest.scan import EMPTY, Listing, ScannedFile, ScanProblem, is_video_name, root_message
from retrieval.errors import ClipdexError
from retrieval.store import VectorStore

STORED_FIELDS = ("path", "size", "mtime_ns", "hash", "media", "video_points")


@dataclass
class RootPlan:
    """One root: what the store holds below it and what happens to it."""

    path: str  # the root's key (absolute path, see ingest.records.path_key)
    points: int = 0  # stored points at or below it before the run
    files: int = 0  # image files listed at or below it
    offline: str = ""  # why every point below it is kept ("" while online)
    is_file: bool = False  # an image file given as a root (e.g. one changed file a watcher saw)
    stale: list[tuple[str, str]] = field(default_factory=list)  # (key, hash) of stored points not listed


@dataclass
class IngestPlan:
    """What an ingest will do: files to read, stale candidates, roots to leave alone."""

    roots: list[RootPlan]
    todo: list[ScannedFile]  # new or changed files (to hash, and to decode unless the hash is known)
    unchanged: int  # files whose size and mtime match their stored point
    problems: list[ScanProblem]  # folders and links that could not be listed (their points are kept)
    kept: dict[str, int]  # unreadable path -> stored points kept below it
    known_hashes: set[str]  # every content hash the store holds (reused instead of re-embedded)
    on_disk: set[str]  # keys of every listed file
    previous: dict[str, str]  # key -> stored hash, for todo files that already have a point
    present: set[str]  # hashes still on disk: unchanged files now, files read by the run added later
    videos: list[ScannedFile] = field(default_factory=list)  # new or changed videos (ingest.video)
    video_ids: dict[str, list[str]] = field(default_factory=dict)  # video key -> its stored moment ids
    superseded: list[str] = field(default_factory=list)  # ids of incomplete or replaced video versions
    video_versions: dict[str, list[str]] = field(default_factory=dict)  # hash -> ids of one complete stored set

    def ids_of(self, key: str) -> list[str]:
        """The point ids of a stored file: a video's moments, else the one point of an image."""
        return self.video_ids.get(key) or [point_id(key)]

    def root_of(self, key: str) -> RootPlan | None:
        """The first root ``key`` lies below (online or not)."""
        return next((r for r in self.roots if is_below(key, r.path)), None)


def plan_ingest(listing: Listing, store: VectorStore, *, videos: bool = True) -> IngestPlan:
    """Compare ``listing`` (from :func:`ingest.scan.scan_roots`) with the store's points.

    ``videos``: whether the listing includes videos; without them, stored videos are left as they are
    (not listed is not gone).
    """
    refuse_aliases([r.path for r in listing.roots if not r.error], list(store.root_counts()))
    roots = [RootPlan(path_key(r.path), offline=r.error, is_file=r.is_file) for r in listing.roots]
    listed: dict[str, ScannedFile] = {path_key(f.path): f for f in listing.files}
    for root in roots:
        root.files = sum(1 for key in listed if is_below(key, root.path)) if len(roots) > 1 else len(listed)
        if not root.offline and not root.files:
            root.offline = EMPTY  # only matters if the store holds points below it
    problem_paths = {path_key(p.path) for p in listing.problems}
    plan = IngestPlan(roots, [], 0, listing.problems, {}, set(), set(listed), {}, set())
    stored_videos: dict[str, dict[str, _Version]] = {}  # key -> content hash -> its stored moments
    for pid, payload in store.payloads(STORED_FIELDS):
        key, digest = payload.get("path"), payload.get("hash") or ""
        if not isinstance(key, str):
            continue
        if payload.get("media") == "video":
            version = stored_videos.setdefault(key, {}).setdefault(digest, _Version(payload))
            version.ids.append(pid)
            continue
        if digest:
            plan.known_hashes.add(digest)
        file = listed.get(key)
        if file is not None:
            for root in roots:
                root.points += is_below(key, root.path)
            if payload.get("size") == file.size and payload.get("mtime_ns") == file.mtime_ns:
                plan.unchanged += 1
                plan.present.add(digest)
                del listed[key]
            else:
                plan.previous[key] = digest
            continue
        _place_unlisted(plan, key, digest, problem_paths)
    for key, versions in stored_videos.items():
        for digest, version in versions.items():
            if digest and version.complete:  # a moved or copied video copies these moments (ingest.video.reuse)
                plan.video_versions.setdefault(digest, version.ids)
        if videos:
            _place_video(plan, key, versions, listed, problem_paths)
    plan.todo = [f for f in listed.values() if not is_video_name(f.path)]  # new and changed images, in path order
    plan.videos = [f for f in listed.values() if is_video_name(f.path)]
    _check_roots(listing, roots)
    return plan


class _Version:
    """One content version of a stored video: its moments' ids and the payload of the first one read."""

    def __init__(self, payload: dict):
        self.payload = payload
        self.ids: list[str] = []

    @property
    def complete(self) -> bool:
        """Every moment the version was written with is there (one store request writes them all)."""
        return len(self.ids) == self.payload.get("video_points")


def _place_video(plan: IngestPlan, key: str, versions: dict[str, _Version], listed: dict[str, ScannedFile],
                 problem_paths: set[str]) -> None:
    """A stored video: unchanged (its other versions superseded), changed (all replaced once the new one is
    stored), or unlisted (stale or kept, like an image)."""
    file = listed.get(key)
    current = None
    if file is not None:
        current = next((d for d, v in versions.items() if v.complete and v.payload.get("size") == file.size
                        and v.payload.get("mtime_ns") == file.mtime_ns), None)
    for digest, version in versions.items():
        if current is not None and digest != current:
            plan.superseded += version.ids  # a replaced version a kill left behind
    if current is not None:
        for root in plan.roots:
            root.points += is_below(key, root.path)
        plan.unchanged += 1
        plan.present.add(current)
        plan.video_ids[key] = versions[current].ids
        del listed[key]
        return
    if file is not None:  # changed: complete versions are replaced once the new one is stored
        for root in plan.roots:
            root.points += is_below(key, root.path)
        plan.superseded += [pid for v in versions.values() if not v.complete for pid in v.ids]
        plan.video_ids[key] = [pid for v in versions.values() if v.complete for pid in v.ids]
        plan.previous[key] = next((d for d, v in versions.items() if v.complete), "")
        return
    plan.video_ids[key] = [pid for v in versions.values() for pid in v.ids]
    whole = next((d for d, v in versions.items() if v.complete), next(iter(versions)))  # moved: this one is present
    _place_unlisted(plan, key, whole, problem_paths)


def _place_unlisted(plan: IngestPlan, key: str, digest: str, problem_paths: set[str]) -> None:
    """A stored point whose file was not listed: stale, kept, or not ours."""
    containing = [r for r in plan.roots if is_below(key, r.path)]
    for root in containing:
        root.points += 1
    if not containing or any(r.offline for r in containing):
        return
    if problem_paths and (key in problem_paths or not problem_paths.isdisjoint(ancestors(key))):
        below = next(p for p in [key, *ancestors(key)] if p in problem_paths)
        plan.kept[below] = plan.kept.get(below, 0) + 1
        return
    containing[0].stale.append((key, digest))


def refuse_aliases(given: list[str], stored: list[str]) -> None:
    """Roots are folders, identified by their real path: a root given through a link to a folder that is (or
    holds, or lies in) another root, where the names do not say so, would store every file twice under two
    paths (and each would look like a byte-identical copy of the other). Refused with one line."""
    import os

    from ingest.records import fs_path

    seen = [(path_key(p), os.path.realpath(p)) for p in given]
    seen += [(key, os.path.realpath(fs_path(key))) for key in stored if key not in {k for k, _ in seen}]
    for i, (key, real) in enumerate(seen[:len(given)]):
        for other, other_real in seen[:i] + seen[i + 1:]:
            if other == key:
                continue
            nested_real = is_below(path_key(real), path_key(other_real)) or is_below(path_key(other_real),
                                                                                      path_key(real))
            nested_name = is_below(key, other) or is_below(other, key)
            if nested_real and not nested_name:
                raise ClipdexError(f"{key} is the folder {other} (or within it, or holds it) reached through a "
                                   f"link; ingest it by one name only, e.g. `clipdex ingest {other}` (through "
                                   "both, every file would be stored twice)")


def _check_roots(listing: Listing, roots: list[RootPlan]) -> None:
    """A root that cannot be listed and holds no points is a mistake (a typo), not an offline drive."""
    for listed, root in zip(listing.roots, roots, strict=True):
        if listed.error and not root.points:
            raise ClipdexError(root_message(listed))
    if not listing.files and not any(r.points for r in roots):
        where = ", ".join(r.path for r in listing.roots)
        unreadable = f" ({len(listing.problems)} unreadable)" if listing.problems else ""
        raise ClipdexError(f"no image files (or videos) found in {where}{unreadable}")
