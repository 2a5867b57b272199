"""Real video files for the tests and benchmarks/video.py, written with PyAV: scenes of known pictures."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

# (container suffix, codec, pixel format) that the tests write
KINDS = {"mp4": ("libx264", "yuv420p"), "mkv": ("libx264", "yuv420p"), "mov": ("libx264", "yuv420p"),
         "webm": ("libvpx-vp9", "yuv420p")}


def write_video(path: Path, scenes: Sequence[tuple[Image.Image, float]], *, size: tuple[int, int] = (64, 48),
                fps: int = 10, codec: str | None = None, pix_fmt: str | None = None, rotation: int = 0,
                gop: int | None = None, creation_time: str = "", motion: bool = True,
                options: dict[str, str] | None = None) -> Path:
    """Encode ``scenes`` (picture, seconds) one after another into ``path`` (container from the suffix).

    Each scene shows its picture letterboxed on black, shaking by a pixel when ``motion`` (so frames of a
    shot differ a little, as in real footage). ``rotation``: display rotation in degrees
    (counter-clockwise, as a phone writes it). ``gop``: keyframe interval in frames (None: the codec's).
    """
    suffix = path.suffix.lstrip(".").lower()
    default_codec, default_fmt = KINDS.get(suffix, ("libx264", "yuv420p"))
    codec, pix_fmt = codec or default_codec, pix_fmt or default_fmt
    width, height = size
    with av.open(str(path), "w") as out:
        if creation_time:
            out.metadata["creation_time"] = creation_time
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        opts = {"preset": "ultrafast"} if codec == "libx264" else {"deadline": "realtime", "cpu-used": "8"}
        if codec.startswith("libx26") and gop:
            opts["x264-params" if codec == "libx264" else "x265-params"] = f"keyint={gop}:min-keyint={gop}"
        elif gop:
            stream.codec_context.gop_size = gop
        stream.options = {**(opts if codec.startswith("lib") else {}), **(options or {})}
        if rotation:
            stream.set_display_rotation(rotation)
        for picture, seconds in scenes:
            canvas = _canvas(picture, width, height)
            for i in range(max(1, round(seconds * fps))):
                frame = np.roll(canvas, (i // 3) % 2, axis=1) if motion else canvas
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _canvas(picture: Image.Image, width: int, height: int) -> np.ndarray:
    """``picture`` scaled to fit ``width`` x ``height``, centred on black."""
    pic = picture.convert("RGB")
    scale = min(width / pic.width, height / pic.height)
    pic = pic.resize((max(1, round(pic.width * scale)), max(1, round(pic.height * scale))), Image.Resampling.BILINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - pic.width) // 2, (height - pic.height) // 2
    canvas[y:y + pic.height, x:x + pic.width] = np.asarray(pic)
    return canvas


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    """One flat colour."""
    return Image.new("RGB", size, colour)


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """A file with one AAC audio stream and no video (named like a video by the caller)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = int(16000 * seconds)
        tone = (np.sin(np.arange(samples) * 0.1) * 3000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_vfr(path: Path, pictures: Sequence[Image.Image], times_s: Sequence[float],
              size: tuple[int, int] = (64, 48)) -> Path:
    """Variable frame rate: frame i shows ``pictures[i]`` at ``times_s[i]`` (irregular gaps)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"preset": "ultrafast"}
        for picture, t in zip(pictures, times_s, strict=True):
            frame = av.VideoFrame.from_ndarray(_canvas(picture, *size), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def patch_bytes(path: Path, old: bytes, new: bytes) -> Path:
    """Replace every ``old`` by ``new`` (same length) in the file: a damaged header."""
    data = path.read_bytes()
    assert old in data and len(old) == len(new)
    path.write_bytes(data.replace(old, new))
    return path


def absurd_duration(path: Path) -> Path:
    """An mp4 whose movie and media headers claim about 136 years (duration fields set to 2^32 - 1)."""
    data = bytearray(path.read_bytes())
    for box in (b"mvhd", b"mdhd", b"tkhd"):
        at = data.find(box)
        while at >= 0:
            version = data[at + 4]
            offset = {b"mvhd": 16, b"mdhd": 16, b"tkhd": 20}[box] if version == 0 else None
            if offset is not None:
                data[at + 4 + offset:at + 8 + offset] = b"\xff\xff\xff\xff"
            at = data.find(box, at + 4)
    path.write_bytes(bytes(data))
    return path
