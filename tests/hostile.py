"""Real hostile and unusual image files, for unit tests and the end-to-end ingest test.

:func:`write_hostile_files` writes every case into a folder and says what ingest must do with each.
Each key is the file's path relative to that folder (``os.fsdecode`` form, POSIX ``/``); its stem
names the case, and :data:`HOSTILE_REASONS` gives the start of the ``failed`` reason per stem.

"A file deleted between scan and decode" is not a file you can leave on disk; produce it with
``write_photo(folder / "gone.jpg")``, then ``scan``, then ``os.remove`` it, then ``load_image`` →
``DecodeError("file vanished before decode")`` (see ``tests/test_decode.py``).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ingest.decode import register_plugins

NON_UTF8_NAME = b"caf\xe9.jpg"
"""A Latin-1 file name that is not valid UTF-8."""

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (30, 40, 220)

HOSTILE_REASONS = {
    "truncated": "truncated image",
    "empty": "empty file",
    "text": "not an image (looks like text)",
    "html": "not an image (looks like HTML)",
    "bomb": "image too large",
    "unreadable": "permission denied",
}
"""Case (file stem) → how its ``failed`` reason starts."""


def photo(size: tuple[int, int] = (160, 120), seed: int = 0) -> Image.Image:
    """A photo-like RGB picture: a two-way gradient with a few coloured shapes; differs per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 1, w)[None, :]
    y = np.linspace(0, 1, h)[:, None]
    base = rng.uniform(40, 200, 3)
    arr = np.stack([base[0] + 50 * x + 0 * y, base[1] + 50 * y + 0 * x, base[2] + 40 * (x * y)], axis=-1)
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    return im


def write_photo(path: Path, seed: int = 0, size: tuple[int, int] = (160, 120), **save: object) -> Path:
    """Save :func:`photo` as a JPEG (or whatever ``path``'s extension says)."""
    photo(size, seed).save(path, **save)
    return path


def halves(size: tuple[int, int], top: tuple[int, ...], bottom: tuple[int, ...], mode: str = "RGB"
           ) -> Image.Image:
    """An image whose top half is one colour and bottom half another."""
    im = Image.new(mode, size, top)
    ImageDraw.Draw(im).rectangle((0, size[1] // 2, size[0], size[1]), fill=bottom)
    return im


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A small valid PNG whose IHDR (CRC fixed up) claims ``width`` × ``height`` pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), RED).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def exif_rotated() -> Image.Image:
    """Stored sideways with EXIF orientation 6; upright it is 60×100, red on top, blue below."""
    upright = halves((60, 100), RED, BLUE)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 = rotate 90° clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.info["exif"] = exif.tobytes()
    return stored


def write_hostile_files(folder: Path) -> dict[str, str]:
    """Write every hostile/unusual case into ``folder``; returns relative path → "ok" or "failed"."""
    register_plugins()
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, str] = {}

    def put(name: str, outcome: str) -> Path:
        cases[name] = outcome
        return folder / name

    write_photo(put("plain.jpg", "ok"), seed=1, quality=90)
    good = io.BytesIO()
    photo((320, 240), seed=2).save(good, "JPEG", quality=90)
    put("truncated.jpg", "failed").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    put("empty.jpg", "failed").write_bytes(b"")
    put("text.jpg", "failed").write_text("These are my holiday notes, not a photo.\nDay 1: beach.\n")
    put("html.jpg", "failed").write_text(
        "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
    )
    put("bomb.png", "failed").write_bytes(bomb_png())
    level = np.full((64, 64), 0xC000, np.uint16)  # 75 % grey, only expressible in 16 bits as 49152
    level[32:] = 0x4000
    Image.fromarray(level).save(put("png_16bit.png", "ok"))  # mode I;16
    halves((64, 64), (0, 255, 255, 0), (255, 0, 255, 0), "CMYK").save(put("cmyk.jpg", "ok"), quality=95)
    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([255, 0, 255] + [*GREEN] + [0, 0, 0] * 254)
    ImageDraw.Draw(pal).rectangle((0, 32, 64, 64), fill=1)
    pal.save(put("palette_alpha.png", "ok"), transparency=0)  # top half transparent magenta
    rgba = halves((64, 64), (*BLUE, 0), (*BLUE, 255), "RGBA")  # top half fully transparent
    rgba.save(put("rgba.png", "ok"))
    frames = [Image.new("RGB", (48, 48), RED), Image.new("RGB", (48, 48), BLUE)]
    frames[0].save(put("animated.gif", "ok"), save_all=True, append_images=frames[1:], duration=100, loop=0)
    rotated = exif_rotated()
    rotated.save(put("exif_rotated.jpg", "ok"), quality=95, exif=rotated.info["exif"])
    write_photo(put("photo.heic", "ok"), seed=3, format="HEIF", quality=90)
    write_photo(put("photo.avif", "ok"), seed=4, format="AVIF", quality=90)
    name_bytes = os.fsencode(folder) + b"/" + NON_UTF8_NAME
    fd = os.open(name_bytes, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as fh:
        photo(seed=5).save(fh, "JPEG")
    cases[os.fsdecode(NON_UTF8_NAME)] = "ok"
    (folder / "loop").mkdir(exist_ok=True)
    write_photo(put("loop/inside_loop.jpg", "ok"), seed=6)
    if not (folder / "loop" / "parent").is_symlink():
        os.symlink("..", folder / "loop" / "parent", target_is_directory=True)  # loop/parent/loop/parent/...
    locked = write_photo(put("unreadable.jpg", "failed"), seed=7)
    os.chmod(locked, 0)
    if readable_despite_chmod(locked):  # root or CAP_DAC_OVERRIDE: permissions do not stop reading
        cases["unreadable.jpg"] = "ok"
    return cases


def readable_despite_chmod(path: Path) -> bool:
    """Whether a mode-000 file or folder can still be read (running as root)."""
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with open(path, "rb"):
                pass
        return True
    except PermissionError:
        return False
