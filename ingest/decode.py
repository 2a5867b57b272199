"""Decode one image file into an upright RGB picture, or fail with a one-line reason.

Safe for hostile files: the pixel cap is checked from the header before any pixels are decoded,
truncated files fail (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set), only the image formats
clipdex indexes are parsed (no EPS/Ghostscript and friends behind a ``.jpg`` name), and
:func:`time_limit` bounds the wall time per file.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

import numpy as np
import xxhash
from PIL import Image, ImageOps, UnidentifiedImageError, features

from retrieval.errors import first_line

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "HEIF", "AVIF")
"""The Pillow formats ``load_image`` parses, whatever a file's extension says (JPEG includes MPO)."""

_CHUNK = 1 << 20
_registered = False
_formats: tuple[str, ...] = ()


class DecodeError(Exception):
    """A file that cannot be turned into an image; ``str()`` is a one-line, user-readable reason."""


def register_plugins() -> None:
    """Teach Pillow HEIC/HEIF (pillow-heif) and AVIF (Pillow's own, else pillow-avif-plugin); idempotent."""
    global _registered, _formats
    if _registered:
        return
    with suppress(ImportError):  # without it HEIC files fail as "not an image"
        import pillow_heif

        pillow_heif.register_heif_opener()
    if not features.check("avif"):  # Pillow >= 11.3 reads AVIF natively; the plugin would shadow it
        with suppress(ImportError):
            import pillow_avif  # noqa: F401  (registers on import)
    Image.init()
    _formats = tuple(f for f in FORMATS if f in Image.OPEN)
    _registered = True


register_plugins()


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`DecodeError` in the body after ``seconds`` of wall time.

    Uses ``SIGALRM``/``setitimer``, so it works only in a process's main thread (DataLoader workers run
    the dataset there); elsewhere, or with ``seconds`` None or <= 0, it is a no-op. The previous handler
    and any previous timer are restored. Python handlers run between bytecodes, so a single long C call
    finishes before the error is raised (Pillow decodes in chunks, so in practice it fires promptly).
    """
    if (not seconds or seconds <= 0 or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise DecodeError(f"decode took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    # Re-fire every 50 ms after the first expiry: a decoder that swallows one exception gets the next.
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if old_delay > 0:
            left = max(old_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file vanished before decode"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "not a regular file"
    return f"cannot read file: {exc.strerror or exc}".splitlines()[0]


def content_hash(path: str) -> str:
    """xxh3-128 hex digest of the whole file, read in 1 MiB chunks; OS errors become :class:`DecodeError`."""
    digest = xxhash.xxh3_128()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise DecodeError(_os_reason(exc)) from None
    return digest.hexdigest()


def _sniff(path: str | int) -> str:
    """Why a file Pillow cannot identify is not an image (``path``: a name or an open descriptor)."""
    try:
        if isinstance(path, int):
            head = os.pread(path, 1024, 0)
        else:
            with open(path, "rb") as fh:
                head = fh.read(1024)
    except OSError as exc:
        return _os_reason(exc)
    magic = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
    if head.startswith(magic) or head[4:8] == b"ftyp":
        return "corrupt or truncated image header"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return "not an image (looks like HTML)"
    if text.startswith(b"<svg") or b"<svg" in text:
        return "not an image (looks like SVG, which is not supported)"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        decoded = head[:-3].decode("utf-8", "replace") if len(head) == 1024 else "\ufffd"
    if decoded and all(ch.isprintable() or ch in "\t\r\n\f" for ch in decoded):
        return "not an image (looks like text)"
    return "not an image (unrecognised or unsupported format)"


def _check_size(width: int, height: int, decoded_pixels: int, max_megapixels: float) -> None:
    if decoded_pixels > max_megapixels * 1_000_000:
        raise DecodeError(f"image too large: {width}x{height} pixels exceeds the {max_megapixels:g} MP cap")


def _to_8bit(im: Image.Image) -> Image.Image:
    """A single-channel 16/32-bit integer or float image as 'L', scaled rather than clipped."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        scaled = arr.astype(np.float32) / 257.0
    else:
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max()) if arr.size else 0.0
        if im.mode == "F" and top <= 1.0:
            scaled = arr * 255.0
        elif top <= 255:
            scaled = arr
        elif top <= 65535:
            scaled = arr / 257.0
        else:
            scaled = arr * (255.0 / top)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))  # 2-D uint8: mode L


def to_rgb(im: Image.Image) -> Image.Image:
    """A new RGB image: alpha composited on white, 16-bit scaled to 8-bit, palette/CMYK converted."""
    info = dict(im.info)
    if im.mode.startswith(("I", "F")):
        out = _to_8bit(im).convert("RGB")
    elif im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(white, rgba).convert("RGB")
    else:
        out = im.convert("RGB")
    info.pop("transparency", None)
    if im.mode != "RGB":
        info.pop("icc_profile", None)  # it describes the source colour space, not the converted pixels
    out.info = info  # keeps EXIF etc., so exif_payload() works on the result too
    return out


def _upright(im: Image.Image) -> Image.Image:
    """Apply EXIF orientation; malformed EXIF leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:
        return im


def _opened(path: str | int) -> str | BinaryIO:
    """What ``Image.open`` reads: the name, or a new file object over a descriptor (from its start)."""
    if isinstance(path, str):
        return path
    fh = os.fdopen(os.dup(path), "rb")
    fh.seek(0)
    return fh


def load_image(path: str | int, *, max_megapixels: float, draft_size: int | None = None) -> Image.Image:
    """Decode ``path`` to an upright RGB image (first frame of animations), or raise :class:`DecodeError`.

    ``path`` is a file name or a descriptor open for reading (read from its start; left open).

    ``max_megapixels`` caps the pixels actually decoded, checked from the header first; with
    ``draft_size``, JPEGs are decoded at a reduced scale (1/2, 1/4, 1/8) whose both sides are still at
    least ``draft_size``, and the cap applies to that reduced size.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DecodeError(_os_reason(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError("not a regular file")
    if st.st_size == 0:
        raise DecodeError("empty file")
    source = None
    try:
        source = _opened(path)
        with Image.open(source, formats=_formats) as im:
            width, height = im.size
            if draft_size and im.format in ("JPEG", "MPO"):
                im.draft("RGB", (draft_size, draft_size))
            _check_size(width, height, im.width * im.height, max_megapixels)
            im.load()
            return to_rgb(_upright(im))
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(_bomb_reason(exc, max_megapixels)) from None
    except UnidentifiedImageError:
        raise DecodeError(_sniff(path)) from None
    except MemoryError:
        raise DecodeError("out of memory while decoding") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise DecodeError(_os_reason(exc)) from None
    except Exception as exc:
        raise DecodeError(_failure_reason(exc)) from None
    finally:
        if source is not None and not isinstance(source, str):
            source.close()


def _bomb_reason(exc: Exception, max_megapixels: float) -> str:
    """Pillow's own bomb check fired in ``Image.open`` (its message has the pixel count, not the size)."""
    words = str(exc).replace("(", " ").split()
    count = next((int(w) for w in words if w.isdigit()), 0)
    if count > max_megapixels * 1_000_000:
        return f"image too large: {count / 1e6:.0f} MP exceeds the {max_megapixels:g} MP cap"
    return f"image too large: {count / 1e6:.0f} MP exceeds Pillow's decompression-bomb limit"


def _failure_reason(exc: Exception) -> str:
    msg = first_line(exc)
    if isinstance(exc, EOFError) or "truncated" in msg or "broken data stream" in msg:
        return "truncated image"
    if isinstance(exc, ValueError) and "conversion" in msg:
        return f"unsupported colour mode ({msg})"
    return f"corrupt image ({type(exc).__name__}: {msg})"
