"""Open a video with PyAV and read what its container says, checked: one stream, size, codec, duration.

Nothing here trusts the header: the frame count and duration a file claims are only used to report; the
sampler (:mod:`ingest.video.sample`) counts what it decodes against the ``[video]`` caps.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

import av

from ingest.scan import VIDEO_EXTENSIONS

__all__ = ["VIDEO_EXTENSIONS", "VideoError", "VideoInfo", "open_video", "probe", "video_stream"]


class VideoError(Exception):
    """A file that is not a usable video; the message is one line for the report."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream (coded width/height, before rotation)."""

    codec: str
    width: int
    height: int
    duration_s: float  # from the container; 0 when it does not say
    format: str
    taken_at: str = ""  # the container's creation time, ISO 8601 UTC ("" when absent)


def open_video(path: str | BinaryIO) -> av.container.InputContainer:
    """Open ``path`` (or an open binary file) for reading; a file FFmpeg cannot open raises :class:`VideoError`."""
    try:
        return av.open(path, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise VideoError(f"not a readable video ({_reason(exc)})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise VideoError(f"not a readable video ({exc})") from None


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream, ready to decode; an audio-only file or an unknown codec raises VideoError."""
    if not container.streams.video:
        raise VideoError("no video stream (audio only?)")
    streams = [s for s in container.streams.video if s.codec_context is not None]
    if not streams:
        tag = getattr(container.streams.video[0], "codec_tag", "") or "unknown"
        raise VideoError(f"cannot decode its video codec ({tag})")
    stream = streams[0]
    if stream.codec_context.codec is None or not stream.codec_context.codec.is_decoder:
        raise VideoError(f"cannot decode codec {stream.codec_context.name!r}")
    return stream


def probe(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
          max_megapixels: float) -> VideoInfo:
    """The stream's checked facts; a frame larger than ``max_megapixels`` or of no size raises VideoError."""
    cc = stream.codec_context
    width, height = int(cc.width or 0), int(cc.height or 0)
    if width <= 0 or height <= 0:
        raise VideoError("video stream without a frame size")
    if width * height > max_megapixels * 1e6:
        raise VideoError(f"frames of {width}x{height} exceed [ingest] max_megapixels ({max_megapixels:g})")
    duration = 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    if not math.isfinite(duration) or duration < 0 or duration > 1e7:
        duration = 0.0  # an absurd header: the sampler measures what is there
    return VideoInfo(codec=cc.name, width=width, height=height, duration_s=round(duration, 3),
                     format=container_format(container),
                     taken_at=_creation_time({**container.metadata, **stream.metadata}))


def container_format(container: av.container.InputContainer) -> str:
    """The container's short name: of FFmpeg's demuxer aliases ("mov,mp4,m4a,3gp,3g2,mj2") the one the file's
    suffix names, else the first."""
    names = [n for n in (container.format.name or "").split(",") if n]
    suffix = os.path.splitext(str(getattr(container, "name", "") or ""))[1].lstrip(".").lower()
    return suffix if suffix in names else (names[0] if names else "")


def _creation_time(metadata: dict[str, Any]) -> str:
    """``creation_time`` as ISO 8601 UTC ("" when absent or not a date; 1970 and 1904 epochs are absent)."""
    raw = str(metadata.get("creation_time") or metadata.get("date") or "").strip()
    if not raw:
        return ""
    try:
        taken = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return ""
    if taken.tzinfo is None:
        taken = taken.replace(tzinfo=UTC)
    taken = taken.astimezone(UTC)
    return "" if taken.year <= 1970 else taken.replace(microsecond=0).isoformat()


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
