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


def scene(size: tuple[int, int] = (640, 480), seed: int = 0) -> Image.Image:
    """A procedurally textured street-like photo: sky gradient, fractal ground texture, buildings with
    window grids, a few round shapes, sensor noise and a slight blur (edges a text detector must not read)."""
    rng = np.random.default_rng(seed)
    w, h = size
    field = np.zeros((h, w), np.float32)
    for octave in range(1, 7):  # fractal value noise
        cells = 2 ** octave
        coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
        up = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC))
        field += up.astype(np.float32) / 255 / octave
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    ground, sky = rng.uniform(40, 200, 3), rng.uniform(120, 240, 3)
    horizon = int(h * rng.uniform(0.3, 0.6))
    arr = ground[None, None, :] * (0.55 + 0.7 * field[:, :, None])
    t = np.linspace(0, 1, horizon)[:, None, None]
    arr[:horizon] = sky * (1 - 0.35 * t) + 20 * field[:horizon, :, None]
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 5))):
        bw, bh = int(rng.integers(w // 8, w // 3)), int(rng.integers(h // 5, h // 2))
        x0 = int(rng.integers(0, w - bw))
        y0 = max(0, horizon + int(rng.integers(-10, 30)) - bh)
        wall = tuple(int(c) for c in rng.integers(60, 220, 3))
        draw.rectangle((x0, y0, x0 + bw, y0 + bh), fill=wall)
        glass = tuple(int(c) for c in rng.integers(20, 120, 3))
        step = int(rng.integers(14, 30))
        for wx in range(x0 + 6, x0 + bw - 10, step):
            for wy in range(y0 + 8, y0 + bh - 12, step + 4):
                draw.rectangle((wx, wy, wx + step // 2, wy + step // 2), fill=glass)
    for _ in range(int(rng.integers(1, 4))):
        r = int(rng.integers(8, h // 6))
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    noisy = np.asarray(im, np.float32) + rng.normal(0, 5, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))


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


def text_page(size: tuple[int, int] = (2400, 3200), line_height: int = 26, font_size: int = 22) -> Image.Image:
    """A page packed with lines of words in three columns (about 360 lines at the default size): a picture whose
    OCR takes minutes when the settings let it read every line (a slow image for the OCR time budget)."""
    im = Image.new("RGB", size, (250, 250, 245))
    draw = ImageDraw.Draw(im)
    f = font(font_size)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
             "lima"]
    for i, y in enumerate(range(10, size[1] - line_height, line_height)):
        for column in range(3):
            line = " ".join(words[(i + column + k) % len(words)] for k in range(4))
            draw.text((10 + column * size[0] // 3, y), line, font=f, fill=(20, 20, 30))
    return im
