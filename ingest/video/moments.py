"""Segments plus their vectors become moments: near-identical neighbours merged, payloads written."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingest.video.shots import Segment


@dataclass
class Moment:
    """One point of a video: a time range, its representative frame's time, and its vector."""

    start_s: float
    end_s: float
    time_s: float
    vector: np.ndarray
    segment: Segment | None = None  # the representative frame (dropped once stored)


class MomentMerger:
    """Merge each new moment into the previous one of the same shot when their vectors' cosine is at least
    ``merge_cosine`` (a moment that starts at a cut is never merged: the frames there differ).

    The merged moment keeps the first one's frame and vector and extends its end: a static 10-minute shot
    becomes one moment, a slow pan several.
    """

    def __init__(self, merge_cosine: float):
        self.merge_cosine = merge_cosine
        self.moments: list[Moment] = []

    def add(self, segments: list[Segment], vectors: np.ndarray) -> None:
        for segment, vector in zip(segments, vectors, strict=True):
            last = self.moments[-1] if self.moments else None
            if (last is not None and not segment.cut
                    and float(np.dot(last.vector, vector)) >= self.merge_cosine):
                last.end_s = max(last.end_s, segment.end_s)
                continue
            self.moments.append(Moment(segment.start_s, segment.end_s, segment.time_s,
                                       np.asarray(vector, dtype=np.float32), segment))


def moment_key(key: str, digest: str, time_s: float) -> str:
    """What a moment's point id is derived from: the file's key, its content version and the time.

    The version makes a changed video's new points distinct from its old ones, so the old set is deleted
    only once the new one is stored (see ingest.video.run).
    """
    return f"{key}#v={digest[:16]}#t={time_s:.3f}"
