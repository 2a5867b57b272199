"""Shots and segments from a stream of small frames: a cut where two neighbours differ, a new segment in a long shot.

The frame difference is the mean absolute difference of two small grey frames (values 0..1): cheap, and
what a cut looks like. A segment is a piece of one shot no longer than ``max_gap_s``; its representative
frame is its middle candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class Segment:
    """A closed piece of a shot: [start_s, end_s), with its representative frame at ``time_s``."""

    start_s: float
    end_s: float
    time_s: float
    image: Image.Image
    cut: bool  # it starts at a shot cut (or at the start of the video), not inside a long shot


@dataclass
class _Open:
    start_s: float
    cut: bool
    frames: list[tuple[float, Image.Image]] = field(default_factory=list)


class Segmenter:
    """Feed candidate frames in time order with :meth:`add`; closed segments come back as they close."""

    def __init__(self, cut_threshold: float, max_gap_s: float):
        self.cut_threshold = cut_threshold
        self.max_gap_s = max_gap_s
        self._open: _Open | None = None
        self._previous: np.ndarray | None = None
        self.cuts = 0

    def add(self, time_s: float, grey: np.ndarray, image: Image.Image) -> list[Segment]:
        """One candidate frame: ``grey`` a small float array (0..1), ``image`` the frame to embed if chosen."""
        closed: list[Segment] = []
        is_cut = (self._previous is not None and self._previous.shape == grey.shape
                  and float(np.abs(grey - self._previous).mean()) > self.cut_threshold)
        self._previous = grey
        if self._open is None:
            self._open = _Open(time_s, True)
        elif is_cut or time_s - self._open.start_s >= self.max_gap_s:
            closed.append(self._close(time_s))
            self._open = _Open(time_s, is_cut)
            self.cuts += is_cut
        self._open.frames.append((time_s, image))
        return closed

    def close(self, end_s: float) -> list[Segment]:
        """The last segment, ending at ``end_s`` (the end of the video, or where sampling stopped)."""
        if self._open is None or not self._open.frames:
            return []
        segment = self._close(max(end_s, self._open.frames[-1][0]))
        self._open = None
        return [segment]

    def _close(self, end_s: float) -> Segment:
        seg = self._open
        assert seg is not None and seg.frames
        time_s, image = seg.frames[(len(seg.frames) - 1) // 2]
        return Segment(seg.start_s, end_s, time_s, image, seg.cut)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two grey frames of one shape (0..1)."""
    return float(np.abs(a - b).mean())
