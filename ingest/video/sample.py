"""Decode a video at reduced cost and cut it into segments (:mod:`ingest.video.shots`), within the caps.

* A demux pass (no decoding) finds the keyframes. Where no two are further apart than
  ``[video] keyframe_gap_s`` (phones, cameras: about one a second) only keyframes are decoded
  (``skip_frame = NONKEY``); otherwise every reference frame is decoded (``NONREF``: B-frames nothing
  refers to are skipped) and one per ``probe_s`` compared.
* FFmpeg decodes on its own threads (``thread_type = AUTO``); a compared frame is scaled down by swscale to a
  tiny grey frame (the cut test) and a small RGB one (short side = the model's input size), made upright from
  the display matrix (a portrait phone video stays portrait).
* Caps (``[video]``): seconds of video, decoded frames, decoded pixels and wall time per file. Hitting one
  keeps the segments up to there and says which cap (``truncated``); memory holds one open segment's small
  frames, whatever the duration.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from ingest.video.probe import VideoError, VideoInfo, _reason, open_video, probe, video_stream
from ingest.video.shots import Segment, Segmenter
from retrieval.settings import VideoSettings

GREY_SIZE = (32, 18)  # the cut test's frame (width, height)


@dataclass
class SampleStats:
    """What sampling one video did."""

    frames: int = 0  # decoded frames
    pixels: int = 0  # decoded pixels
    candidates: int = 0  # frames compared for cuts
    keyframes_only: bool = False
    end_s: float = 0.0  # the last decoded frame's time (+ one frame)
    width: int = 0  # upright size of the frames
    height: int = 0
    rotation: int = 0
    truncated: str = ""  # which cap stopped sampling ("" when the whole video was read)


class VideoSampler:
    """Iterate to get a video's segments in time order; :attr:`info` and :attr:`stats` describe it.

    ``size``: the short side of the RGB frames handed out (the encoder's input size). ``max_megapixels``:
    the largest frame accepted (``[ingest] max_megapixels``).
    """

    def __init__(self, path: str, settings: VideoSettings, *, size: int, max_megapixels: float):
        self.path = path
        self.settings = settings
        self.size = size
        self.max_megapixels = max_megapixels
        self.stats = SampleStats()
        self.info: VideoInfo | None = None
        self.cuts = 0

    def __iter__(self) -> Iterator[Segment]:
        start = time.monotonic()
        deadline = start + self.settings.time_s
        keys, last = self._keyframes(deadline)
        stats = self.stats
        stats.keyframes_only = _sparse_enough(keys, last, self.settings.keyframe_gap_s)
        with open_video(self.path) as container:
            stream = video_stream(container)
            self.info = probe(container, stream, self.max_megapixels)
            stream.thread_type = "AUTO"
            # keyframes only where they are dense; else every frame other frames refer to (B-frames nothing
            # refers to are skipped: measured about twice as fast on x264 footage, and one per probe_s is enough)
            stream.codec_context.skip_frame = "NONKEY" if stats.keyframes_only else "NONREF"
            segmenter = Segmenter(self.settings.cut_threshold, self.settings.max_gap_s)
            next_probe = -1.0
            step = min(0.1, 1.0 / float(stream.average_rate)) if stream.average_rate else 0.04  # one frame
            frames = _decode(container, stream)
            try:
                for frame in frames:
                    t = frame.time
                    if t is None or t < 0:
                        continue
                    if t >= self.settings.max_seconds:
                        stats.truncated = f"[video] max_seconds ({self.settings.max_seconds:g} s)"
                        break
                    stats.frames += 1
                    stats.pixels += frame.width * frame.height
                    stats.end_s = max(stats.end_s, t + step)
                    if not stats.keyframes_only and t < next_probe:
                        if self._capped(deadline):
                            break
                        continue
                    next_probe = t + self.settings.probe_s
                    stats.candidates += 1
                    grey, image = self._small(frame)
                    yield from segmenter.add(t, grey, image)
                    if self._capped(deadline):
                        break
            finally:
                frames.close()
            if stats.frames == 0:
                raise VideoError("no decodable video frame")
            self.cuts = segmenter.cuts
            yield from segmenter.close(stats.end_s)

    def _capped(self, deadline: float) -> bool:
        """Whether a cap is reached (and which, in ``stats.truncated``)."""
        s, stats = self.settings, self.stats
        if stats.frames >= s.max_frames:
            stats.truncated = f"[video] max_frames ({s.max_frames})"
        elif stats.pixels >= s.max_gigapixels * 1e9:
            stats.truncated = f"[video] max_gigapixels ({s.max_gigapixels:g})"
        elif time.monotonic() > deadline:
            stats.truncated = f"[video] time_s ({s.time_s:g} s)"
        return bool(stats.truncated)

    def _keyframes(self, deadline: float) -> tuple[list[float], float]:
        """Keyframe times and the last packet's time, from a demux pass (bounded by the caps; no decoding)."""
        keys: list[float] = []
        packets, last = 0, 0.0
        with open_video(self.path) as container:
            stream = video_stream(container)
            try:
                for packet in container.demux(stream):
                    if packet.size == 0 or packet.pts is None or packet.time_base is None:
                        continue
                    packets += 1
                    t = float(packet.pts * packet.time_base)
                    last = max(last, t)
                    if packet.is_keyframe:
                        keys.append(t)
                    if (t >= self.settings.max_seconds or packets >= self.settings.max_frames
                            or (packets % 1024 == 0 and time.monotonic() > deadline)):
                        break
            except av.error.FFmpegError:
                pass  # a damaged tail: decode what the demuxer could read
        if not packets:
            raise VideoError("no video frames (empty or truncated)")
        return sorted(keys), last

    def _small(self, frame: av.VideoFrame) -> tuple[np.ndarray, Image.Image]:
        """The frame as a tiny grey array (cut test) and an upright RGB image with short side ``size``."""
        grey = frame.reformat(width=GREY_SIZE[0], height=GREY_SIZE[1], format="gray",
                              interpolation="AREA").to_ndarray().astype(np.float32) / 255.0
        w, h = frame.width, frame.height
        scale = self.size / max(1, min(w, h))
        rw, rh = (max(1, round(w * scale)), max(1, round(h * scale))) if scale < 1 else (w, h)
        image = frame.reformat(width=rw, height=rh, format="rgb24", interpolation="AREA").to_image()
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        if rotation:
            image = image.rotate(rotation, expand=True)
        stats = self.stats
        if not stats.width:
            stats.rotation = rotation
            upright = (h, w) if rotation in (90, 270) else (w, h)
            stats.width, stats.height = upright
        return grey, image


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
    """Decoded frames; a damaged packet is skipped, a damaged tail ends the stream (what came before stays)."""
    errors = 0
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except (StopIteration, av.error.FFmpegError):
            return  # the end, or a damaged tail the demuxer cannot read past
        try:
            yield from packet.decode()
        except av.error.FFmpegError as exc:
            errors += 1
            if errors > 50:
                raise VideoError(f"too many decoding errors ({_reason(exc)})") from None


def _sparse_enough(keys: list[float], last: float, gap_s: float) -> bool:
    """Whether decoding keyframes only sees a frame at least every ``gap_s`` seconds, to the end."""
    if gap_s <= 0 or len(keys) < 2:
        return False
    points = [*keys, last]
    return max(b - a for a, b in zip(points, points[1:], strict=False)) <= gap_s
