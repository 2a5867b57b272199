"""Whole videos that are copies of each other (another bitrate, resolution or container), by their moments.

A video's own moments are never duplicates of each other, and a video is never one of a photo: videos are
compared whole, with videos only.

1. **Candidates.** Each video (one per content) asks the store, as photos do, for the moments nearest to two
   of its own: the ones showing a third and two thirds of its duration (past a black or faded start). A hit
   counts only when it belongs to another video whose duration agrees (:func:`durations_agree`): a trimmed
   clip of a longer video is never a candidate. No pair loop: at most ``neighbours`` hits per query.
2. **Aligned by time, not by index** (a re-encode moves shot boundaries a little, and a cut seen at one
   keyframe in one file may be seen at the next in the other): the union of both videos' moment starts cuts
   the duration into spans, and each span compares the moment of A and the moment of B that cover it. The
   pair goes on when their vectors agree (cosine >= ``threshold``) over :data:`COVERAGE` of the duration.
3. **The pixels decide**, as for photos (:mod:`.verify`): the frames at :data:`SAMPLES` times spread over the
   duration, each in the middle of an agreeing span, are decoded from both files, scaled to the smaller
   video's size (what a re-encode at a lower resolution did to it). Each must be the same picture at a glance
   (shape, pHash, coarse layout: else the pair fails), and the pair's similarity, the median of their worst
   aligned block SSIMs, must reach ``min_similarity`` (the median: a re-encode at a low bitrate smears one
   frame more than another, and one frame may sit next to a cut).
"""

from __future__ import annotations

import os
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ingest.records import fs_path
from retrieval.duplicates.candidates import Lock, Point, neighbours, vectors_of
from retrieval.duplicates.decisions import Decisions
from retrieval.duplicates.verify import Look, look_of_image, same_photo
from retrieval.search.moments import covering, shown
from retrieval.store import VectorStore

COVERAGE = 0.9
"""The share of the duration whose aligned moments must agree."""
DURATION_SLACK_S = 0.5
DURATION_SLACK = 0.02
"""Two copies' durations differ by at most the larger of 0.5 s and 2 % (a re-encode may add or drop a frame or
an edit list's offset; a clip trimmed by more is no copy)."""
SAMPLES = 3
"""Frames compared per candidate pair (one in each third of the duration)."""
MIN_SPAN_S = 0.2
"""A frame is sampled only in an agreeing span at least this long (never right at a cut)."""
FRAME_SIDE = 256
"""Frames are decoded scaled to this longer side (the pixel check looks at 256 px at most)."""
MAX_LIMIT = 512
CACHED_VIDEOS = 64


@dataclass(frozen=True)
class Video:
    """One stored video: a point standing for it (its payload), its moments in time order, its duration."""

    point: Point
    ids: tuple[str, ...]
    starts: tuple[float, ...]
    duration: float

    @property
    def path(self) -> str:
        return self.point.path

    @property
    def hash(self) -> str:
        return self.point.hash

    def at(self, t: float) -> int:
        """The index of the moment that covers ``t`` seconds (the last one that starts at or before it)."""
        return covering(self.starts, t)


def _number(value: object, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else default


def videos_of(moments: Sequence[Point]) -> list[Video]:
    """The stored videos of a scroll's moment points, one per path (where a kill left two versions of a file,
    the newer), sorted by path. Each stands for itself by its first moment's payload, showing the frame of
    the moment a third in (what the duplicates view shows)."""
    by_version: dict[tuple[str, str], list[Point]] = defaultdict(list)
    for m in moments:
        by_version[(m.path, m.hash)].append(m)
    newest: dict[str, list[Point]] = {}
    for (path, _), points in by_version.items():
        mtime = _number(points[0].payload.get("mtime"))
        if path not in newest or mtime > _number(newest[path][0].payload.get("mtime")):
            newest[path] = points
    videos = []
    for path in sorted(newest):
        points = sorted(newest[path], key=lambda p: (_number(p.payload.get("start_s")), p.id))
        starts = tuple(_number(p.payload.get("start_s")) for p in points)
        duration = max(_number(points[0].payload.get("duration_s")), _number(points[-1].payload.get("end_s")))
        frame = points[shown(starts, duration)].payload.get("time_s")
        videos.append(Video(Point(points[0].id, {**points[0].payload, "time_s": frame}), tuple(p.id for p in points),
                            starts, duration))
    return videos


def durations_agree(a: float, b: float) -> bool:
    """Whether two durations are those of copies (see :data:`DURATION_SLACK`)."""
    return a > 0 and b > 0 and abs(a - b) <= max(DURATION_SLACK_S, DURATION_SLACK * max(a, b))


def candidate_pairs(store: VectorStore, reps: dict[str, Video], decisions: Decisions, *, threshold: float,
                    neighbours_asked: int, folder: str | None, lock: Lock | None = None
                    ) -> dict[tuple[str, str], float]:
    """Pairs of contents (hashes, in order) whose moments the store's nearest-neighbour search brings together
    and whose durations agree, with their best cosine; pairs the user dismissed are left out."""
    owner = {pid: h for h, v in reps.items() for pid in v.ids}
    queries: list[Point] = []
    asking: list[str] = []
    limits: list[int] = []
    for h, v in reps.items():
        for i in sorted({v.at(v.duration / 3), v.at(2 * v.duration / 3)}):
            queries.append(Point(v.ids[i], {}))
            asking.append(h)
            limits.append(min(MAX_LIMIT, neighbours_asked + len(v.ids)))
    pairs: dict[tuple[str, str], float] = {}
    for row, hit_id, score in neighbours(store, queries, limits, threshold, folder, lock, media="video"):
        a, b = asking[row], owner.get(hit_id)
        if b is None or a == b or decisions.dismissed(a, b):
            continue
        if not durations_agree(reps[a].duration, reps[b].duration):
            continue
        key = (a, b) if a < b else (b, a)
        pairs[key] = max(score, pairs.get(key, -1.0))
    return pairs


def spans(a: Video, b: Video) -> list[tuple[float, float, int, int]]:
    """(start, end, moment of a, moment of b): the common duration cut at every moment start of either."""
    end = min(a.duration, b.duration)
    cuts = sorted({0.0, end, *(t for t in a.starts + b.starts if 0.0 < t < end)})
    out = []
    for t0, t1 in zip(cuts, cuts[1:], strict=False):
        if t1 - t0 > 1e-3:
            mid = (t0 + t1) / 2
            out.append((t0, t1, a.at(mid), b.at(mid)))
    return out


def sample_times(agreeing: Sequence[tuple[float, float]], end: float, samples: int = SAMPLES) -> list[float]:
    """One time in each of ``samples`` equal parts of ``[0, end]``: the middle of the longest agreeing span's
    piece in that part (none where no piece is :data:`MIN_SPAN_S` long)."""
    times = []
    for k in range(samples):
        lo, hi = end * k / samples, end * (k + 1) / samples
        pieces = [(min(t1, hi) - max(t0, lo), max(t0, lo), min(t1, hi)) for t0, t1 in agreeing]
        length, t0, t1 = max(pieces, default=(0.0, 0.0, 0.0))
        if length >= min(MIN_SPAN_S, end / (2 * samples)):
            times.append(round((t0 + t1) / 2, 3))
    return times


def _side(video: Video) -> int:
    """The longer side of a video's frames (:data:`FRAME_SIDE` when the payload does not say)."""
    longer = max(int(_number(video.point.payload.get("width"))), int(_number(video.point.payload.get("height"))))
    return longer if longer > 0 else FRAME_SIDE


class VideoCheck:
    """Decides candidate pairs of videos (steps 2 and 3 of the module's doc); files it could not read are
    listed in ``unreadable``."""

    def __init__(self, store: VectorStore, *, threshold: float, min_similarity: float, max_megapixels: float,
                 lock: Lock | None = None):
        self.store = store
        self.threshold = threshold
        self.min_similarity = min_similarity
        self.max_megapixels = max_megapixels
        self.lock = lock or nullcontext()
        meta = store.meta()
        self.dim = meta.dim if meta else 0
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.unreadable: list[str] = []

    def vectors(self, video: Video) -> np.ndarray:
        """The video's moment vectors (rows in time order, unit length), a few videos cached."""
        if video.path not in self.cache:
            rows = vectors_of(self.store, list(video.ids), self.dim, self.lock)
            norms = np.linalg.norm(rows, axis=1, keepdims=True)
            self.cache[video.path] = rows / np.where(norms > 0, norms, 1.0)
            while len(self.cache) > CACHED_VIDEOS:
                self.cache.popitem(last=False)
        self.cache.move_to_end(video.path)
        return self.cache[video.path]

    def coverage(self, a: Video, b: Video) -> tuple[float, list[tuple[float, float]]]:
        """The share of the common duration whose aligned moments agree, and those spans."""
        va, vb = self.vectors(a), self.vectors(b)
        pieces = spans(a, b)
        agreeing = [(t0, t1) for t0, t1, i, j in pieces if float(va[i] @ vb[j]) >= self.threshold]
        total = sum(t1 - t0 for t0, t1, _, _ in pieces)
        return (sum(t1 - t0 for t0, t1 in agreeing) / total if total > 0 else 0.0), agreeing

    def frame(self, video: Video, t: float, side: int = FRAME_SIDE) -> Look | None:
        """The :class:`Look` of a video's frame at ``t`` seconds, scaled to fit ``side`` pixels (None: unreadable
        now, noted once)."""
        from ingest.video.frame import frame_at
        from retrieval.inside import open_regular

        try:
            with open_regular(fs_path(video.path), shown=video.path) as opened, \
                    os.fdopen(os.dup(opened.fd), "rb") as fh:
                image = frame_at(fh, t, max_side=side, max_megapixels=self.max_megapixels)
        except Exception:  # refused (not a regular file now), gone, damaged: any decoder error means unreadable
            if video.path not in self.unreadable:
                self.unreadable.append(video.path)
            return None
        return look_of_image(image)

    def __call__(self, a: Video, b: Video) -> tuple[bool, float]:
        """Whether ``a`` and ``b`` are the same video, and their similarity (their worst sampled frame's)."""
        if not durations_agree(a.duration, b.duration):
            return False, 0.0
        share, agreeing = self.coverage(a, b)
        if share < COVERAGE:
            return False, 0.0
        scores = []
        side = min(FRAME_SIDE, _side(a), _side(b))  # both at the smaller one's size: what a re-encode did to it
        for t in sample_times(agreeing, min(a.duration, b.duration)):
            fa, fb = self.frame(a, t, side), self.frame(b, t, side)
            if fa is None or fb is None:
                return False, 0.0
            _, score = same_photo(fa, fb, self.min_similarity)
            if score <= 0.0:  # another picture altogether (shape, pHash or coarse layout): no copy
                return False, 0.0
            scores.append(score)
        similarity = float(np.median(scores)) if scores else 0.0
        return similarity >= self.min_similarity, similarity
