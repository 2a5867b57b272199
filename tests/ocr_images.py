"""Pictures with words on them, for the OCR tests and ``benchmarks/ocr.py``.

Fonts: DejaVu from Debian (``fonts-dejavu-core``) when installed, else Pillow's own scalable default font
(``ImageFont.load_default(size=...)``, Pillow >= 10.1), so nothing has to be installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from tests.hostile import photo

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansCondensed-Bold.ttf",
              "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf")


def fonts() -> list[Path | None]:
    """The DejaVu font files present (None stands for Pillow's default font when there are none)."""
    found = [DEJAVU / name for name in FONT_FILES if (DEJAVU / name).is_file()]
    return found or [None]  # type: ignore[list-item]


def font(size: int, which: Path | None = None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    which = which if which is not None else fonts()[0]
    if which is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(which), size)


def textured(size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like picture: :func:`tests.hostile.photo` with sensor noise and a slight blur."""
    rng = np.random.default_rng(seed + 7919)
    arr = np.asarray(photo(size, seed), np.float32)
    arr += rng.normal(0, 6, arr.shape)
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return im.filter(ImageFilter.GaussianBlur(0.6))


def sign(words: str, size: tuple[int, int] = (320, 240), seed: int = 0, *, font_size: int = 36,
         angle: float = 0.0, which: Path | None = None, base: Image.Image | None = None,
         colours: tuple[tuple[int, int, int], tuple[int, int, int]] = ((250, 250, 245), (20, 20, 30)),
         at: tuple[float, float] = (0.5, 0.5)) -> Image.Image:
    """A picture with ``words`` on a plate (``colours``: plate, letters), rotated by ``angle`` degrees,
    centred at ``at`` (fractions of the picture)."""
    im = (base.copy() if base is not None else textured(size, seed)).convert("RGB")
    f = font(font_size, which)
    probe = ImageDraw.Draw(im)
    left, top, right, bottom = probe.textbbox((0, 0), words, font=f)
    pad = max(6, font_size // 3)
    plate = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), colours[0] + (255,))
    ImageDraw.Draw(plate).text((pad - left, pad - top), words, font=f, fill=colours[1] + (255,))
    plate = plate.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    w, h = im.size
    x = int(min(max(at[0] * w - plate.width / 2, 0), max(w - plate.width, 0)))
    y = int(min(max(at[1] * h - plate.height / 2, 0), max(h - plate.height, 0)))
    im.paste(plate, (x, y), plate)
    return im
