"""Which file of a group to keep, and why.

The rules, in order: the highest resolution; then **the source over what was derived from it**, at the
same resolution (:func:`derivation`: a lossless file whose pixels carry a JPEG's 8x8 block grid is a
re-encode of a JPEG; a copy whose highlights clip where another's do not is an edit); then the largest
file, compared between files of one format only (a PNG made from a JPEG is larger but holds nothing
more, so across formats size comes last); then the most EXIF fields; then the oldest capture date; then
the path, so the choice is stable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from ingest.decode import FORMATS
from ingest.records import fs_path
from retrieval.inside import open_regular


@dataclass(frozen=True)
class Candidate:
    """One file of a group, with what the keep rules compare."""

    path: str
    width: int
    height: int
    size: int
    format: str
    exif_fields: int
    taken_ts: float | None
    hash: str = ""  # the content hash the group was built from (checked again before any move)
    root: str = ""  # the ingested root it was found under (a path key)
    media: str = "image"  # "video": a whole video (its moments' payload fields)
    duration_s: float = 0.0  # a video's
    codec: str = ""  # a video's stream codec
    time_s: float | None = None  # a video's frame to show for it (a moment's representative frame)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def bitrate(self) -> float:
        """A video's mean bits per second over its duration (0 when unknown)."""
        return self.size * 8 / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def taken(self) -> str:
        if self.taken_ts is None:
            return ""
        return datetime.fromtimestamp(self.taken_ts, UTC).strftime("%Y-%m-%d %H:%M")

    def row(self) -> dict[str, Any]:
        row = {"path": self.path, "width": self.width, "height": self.height, "size": self.size,
               "format": self.format, "exif_fields": self.exif_fields, "taken_at": self.taken}
        if self.media == "video":
            row |= {"media": "video", "duration_s": self.duration_s, "codec": self.codec,
                    "bitrate": round(self.bitrate), "time_s": self.time_s}
        return row


def exif_fields(path: str) -> int:
    """How many EXIF tags the file carries (IFD0, Exif and GPS IFDs); 0 when it has none or is unreadable.

    ``path`` is a stored path key; only a regular file is read, opened without blocking (a FIFO put at a
    photo's path counts as unreadable instead of hanging the search)."""
    try:
        with open_regular(fs_path(path), shown=path) as opened, os.fdopen(os.dup(opened.fd), "rb") as fh, \
                Image.open(fh, formats=[f for f in FORMATS if f in Image.OPEN]) as im:
            exif = im.getexif()
            return len(exif) + sum(len(exif.get_ifd(ifd)) for ifd in (0x8769, 0x8825))
    except Exception:
        return 0


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def candidate(payload: dict[str, Any]) -> Candidate:
    """The :class:`Candidate` of a stored point (a photo's EXIF fields are read from the file itself); a video
    moment's payload stands for its whole video."""
    path = str(payload.get("path", ""))
    video = payload.get("media") == "video"
    return Candidate(path, int(payload.get("width") or 0), int(payload.get("height") or 0),
                     int(payload.get("size") or 0), str(payload.get("format") or ""),
                     0 if video else exif_fields(path), _finite(payload.get("taken_ts")),
                     str(payload.get("hash") or ""), str(payload.get("root") or ""),
                     "video" if video else "image", _finite(payload.get("duration_s")) or 0.0,
                     str(payload.get("codec") or ""), _finite(payload.get("time_s")) if video else None)


LOSSLESS = ("PNG", "TIFF", "BMP", "DIB", "GIF")
GRID_RATIO = 1.15
"""A lossless file whose pixel steps across the 8x8 block edges are this much larger than inside the blocks
was a JPEG (benchmarks/keeper_signals.py on 24 tests/photos.py scenes: JPEG q70-85 gives 1.25-1.88, pixels
never JPEG'd 1.01-1.07; at q95 and above the grid is below the noise, and such a re-encode is not told apart)."""
CLIP_MIN = 0.002
"""Highlights clip when this share of the pixels is at full white (>= 254): the same scenes as rendered clip at
most 0.03 %, after a +30 % brightness edit at least 0.38 % (benchmarks/keeper_signals.py)."""
_signals: dict[tuple[str, int], tuple[float, float]] = {}


def pixel_signals(path: str) -> tuple[float, float]:
    """(block-grid ratio, clipped share) of a file's pixels (:data:`GRID_RATIO`, :data:`CLIP_MIN`); (1.0, 0.0)
    when it cannot be read. Read only for files that tie on resolution, once per run."""
    import numpy as np

    from ingest.decode import DecodeError, load_image
    from retrieval.inside import Refused

    try:
        with open_regular(fs_path(path), shown=path) as opened:
            key = (path, opened.st.st_mtime_ns)
            if key in _signals:
                return _signals[key]
            grey = np.asarray(load_image(opened.fd, max_megapixels=100.0).convert("L"), np.float32)
    except (Refused, DecodeError):
        return 1.0, 0.0
    if len(_signals) > 4096:
        _signals.clear()
    _signals[key] = (min(_grid(grey), _grid(grey.T)), float((grey >= 254).mean()))
    return _signals[key]


def _grid(grey: object) -> float:
    """Mean pixel step at the strongest of the 8 column phases over the median of the others (1.0: no grid)."""
    import numpy as np

    steps = np.abs(np.diff(np.asarray(grey), axis=1)).mean(axis=0)
    if steps.size < 32:
        return 1.0
    phases = np.array([steps[p::8].mean() for p in range(8)])
    rest = float(np.median(np.delete(phases, int(phases.argmax()))))
    return float(phases.max()) / rest if rest > 1e-6 else 1.0


def derivation(c: Candidate, others: Sequence[Candidate]) -> str:
    """Why ``c`` was made from another file of its group (in words), or "" when nothing says so."""
    if c.format in LOSSLESS and any(o.format in ("JPEG", "MPO") for o in others):
        grid, _ = pixel_signals(c.path)
        if grid >= GRID_RATIO:
            return f"{c.format} re-encoded from a JPEG (8x8 block grid in its pixels, {grid:.2f})"
    _, clip = pixel_signals(c.path)
    lowest = min((pixel_signals(o.path)[1] for o in others), default=clip)
    if clip >= CLIP_MIN and clip >= 4 * lowest + 0.001:
        return f"an edit whose highlights clip ({clip:.1%} of pixels white vs {lowest:.1%})"
    return ""


def _older(c: Candidate) -> float:
    return -(c.taken_ts if c.taken_ts is not None else math.inf)


def _sharpest(members: Sequence[Candidate]) -> tuple[list[Candidate], tuple[Candidate, str] | None]:
    """The members at the highest resolution (in path order), and the choice when that is one file alone."""
    ordered = sorted(members, key=lambda c: c.path)
    top = max(c.pixels for c in ordered)
    sharpest = [c for c in ordered if c.pixels == top]
    if len(sharpest) > 1:
        return sharpest, None
    keep = sharpest[0]
    runner = max((c for c in ordered if c is not keep), key=lambda c: c.pixels)
    return sharpest, (keep, f"highest resolution ({keep.width}x{keep.height} vs {runner.width}x{runner.height})")


def choose(members: Sequence[Candidate]) -> tuple[Candidate, str]:
    """The file to keep and the reason, in words."""
    if len(members) == 1:
        return members[0], "only file"
    if all(c.media == "video" for c in members):
        return choose_video(members)
    sharpest, decided = _sharpest(members)
    if decided is not None:
        return decided
    same_bytes = len({c.hash for c in sharpest}) == 1 and bool(sharpest[0].hash)  # byte copies: nothing derived
    derived = {} if same_bytes else {
        c.path: why for c in sharpest if (why := derivation(c, [o for o in sharpest if o is not c]))}
    sources = [c for c in sharpest if c.path not in derived]
    if derived and sources:
        if len(sources) == 1:
            other = next(c for c in sharpest if c.path in derived)
            return sources[0], f"the source: the other copy is {derived[other.path]}"
        sharpest = sources
    best_of: dict[str, Candidate] = {}
    for c in sharpest:  # within one format, the largest file holds the most detail
        if c.format not in best_of or (c.size, c.exif_fields, _older(c)) > _key3(best_of[c.format]):
            best_of[c.format] = c
    finalists = sorted(best_of.values(), key=lambda c: c.path)
    if len(finalists) == 1:
        keep = finalists[0]
        runner = max((c for c in sharpest if c is not keep), key=_key3)
        if keep.size > runner.size:
            return keep, f"largest file at the same resolution ({keep.size:,} vs {runner.size:,} bytes)"
        return keep, _after_size(keep, runner)
    keep = max(finalists, key=lambda c: (c.exif_fields, _older(c), c.size, [-ord(ch) for ch in c.path]))
    runner = max((c for c in finalists if c is not keep), key=lambda c: (c.exif_fields, _older(c), c.size))
    formats = " vs ".join(sorted({c.format or "?" for c in finalists}))
    return keep, f"same resolution, formats differ ({formats}): " + _after_size(keep, runner, sizes=True)


def _key3(c: Candidate) -> tuple[int, int, float]:
    return (c.size, c.exif_fields, _older(c))


def _after_size(keep: Candidate, runner: Candidate, *, sizes: bool = False) -> str:
    if keep.exif_fields > runner.exif_fields:
        return f"most EXIF fields ({keep.exif_fields} vs {runner.exif_fields})"
    if _older(keep) > _older(runner):
        return f"oldest capture date ({keep.taken or '?'} vs {runner.taken or 'none'})"
    if sizes and keep.size > runner.size:
        return f"largest file ({keep.size:,} vs {runner.size:,} bytes)"
    return "all else equal: first by path"


def _kbits(c: Candidate) -> str:
    return f"{c.bitrate / 1000:,.0f} kbit/s"


def choose_video(members: Sequence[Candidate]) -> tuple[Candidate, str]:
    """The video to keep: the highest resolution; then, at the same resolution and codec, the highest bitrate
    (a re-encode at another bitrate holds less); then the original: the oldest capture date (a copy without
    the container's date loses); then the highest bitrate across codecs; then the path."""
    sharpest, decided = _sharpest(members)
    if decided is not None:
        return decided
    codecs = {c.codec for c in sharpest}
    if len(codecs) == 1:
        keep = max(sharpest, key=lambda c: c.bitrate)
        runner = max((c for c in sharpest if c is not keep), key=lambda c: c.bitrate)
        if keep.bitrate > runner.bitrate * 1.01:
            return keep, f"highest bitrate at the same resolution ({_kbits(keep)} vs {_kbits(runner)})"
    keep = max(sharpest, key=lambda c: (_older(c), c.bitrate, [-ord(ch) for ch in c.path]))
    runner = max((c for c in sharpest if c is not keep), key=lambda c: (_older(c), c.bitrate))
    if _older(keep) > _older(runner):
        return keep, f"the original: oldest capture date ({keep.taken or '?'} vs {runner.taken or 'none'})"
    if keep.bitrate > runner.bitrate * 1.01:
        return keep, (f"same resolution, codecs differ ({' vs '.join(sorted(codecs))}): highest bitrate "
                      f"({_kbits(keep)} vs {_kbits(runner)})")
    return keep, "all else equal: first by path"
