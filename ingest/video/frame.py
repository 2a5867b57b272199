"""One frame of a video, upright: for thumbnails, ``--like path#t=SECONDS`` and OCR of a video.

Seeks to the keyframe at or before ``time_s`` and decodes forward to the first frame at or after it,
within a decoded-frame cap and the caller's wall-time limit (:func:`ingest.decode.time_limit`).
"""

from __future__ import annotations

from typing import BinaryIO

import av
from PIL import Image

from ingest.video.probe import VideoError, _reason, open_video, probe, video_stream

MAX_DECODED = 2000  # frames decoded after the seek at most (a keyframe interval of a minute at 30 fps)


def frame_at(path: str | BinaryIO, time_s: float, *, max_side: int, max_megapixels: float) -> Image.Image:
    """The frame at ``time_s`` seconds (the last one if the video is shorter), scaled to fit ``max_side``.

    ``path``: a file name or an open binary file (a server's descriptor, see ingest.decode_pool)."""
    with open_video(path) as container:
        stream = video_stream(container)
        probe(container, stream, max_megapixels)
        target = max(0.0, float(time_s))
        if target > 0 and stream.time_base:
            try:
                container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                container.seek(0)
        chosen = None
        decoded = 0
        try:
            for frame in container.decode(stream):
                decoded += 1
                chosen = frame
                if (frame.time is not None and frame.time >= target - 1e-3) or decoded >= MAX_DECODED:
                    break
        except av.error.FFmpegError as exc:
            if chosen is None:
                raise VideoError(f"cannot decode a frame ({_reason(exc)})") from None
        if chosen is None:
            raise VideoError("no decodable video frame")
        w, h = chosen.width, chosen.height
        scale = min(1.0, max_side / max(w, h))
        image = chosen.reformat(width=max(1, round(w * scale)), height=max(1, round(h * scale)),
                                format="rgb24", interpolation="AREA").to_image()
        rotation = int(getattr(chosen, "rotation", 0) or 0) % 360
        return image.rotate(rotation, expand=True) if rotation else image
