"""Procedural "photos" with the structure of real ones, and the copies a library collects of them.

A scene is a sky gradient over textured ground, a sun, hills, a few objects (shapes with shading)
and a line of text, plus sensor noise. :func:`render` draws it; ``moved`` shifts one object by a few
per cent of the frame (a second shot of the same scene a moment later). :data:`ALTERATIONS` are the
copies of issue 17: a resized export, a JPEG at quality 40, a 4 % crop, brightness +12 %, a PNG.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

SIZE = (640, 480)
SMALL = (384, 288)
"""What the tests use: big enough for the structure, quick to write and read."""


def render(seed: int, *, moved: float = 0.0, size: tuple[int, int] = SIZE) -> Image.Image:
    """Scene ``seed``; ``moved`` > 0 moves its main object right by that fraction of the width."""
    rng = np.random.default_rng(seed)
    w, h = size
    horizon = int(h * rng.uniform(0.35, 0.6))
    top, bottom = rng.integers(60, 230, 3), rng.integers(120, 255, 3)
    t = np.linspace(0.0, 1.0, horizon)[:, None, None]
    sky = np.broadcast_to(top * (1 - t) + bottom * t, (horizon, w, 3))
    ground_col = rng.integers(20, 160, 3).astype(np.float64)
    yy, xx = np.mgrid[0:h - horizon, 0:w]
    freq = rng.uniform(0.02, 0.08, 2)
    texture = 25 * np.sin(xx * freq[0] + yy * freq[1] * 3) * np.cos(yy * freq[1])
    ground = ground_col[None, None, :] + texture[..., None] + rng.normal(0, 12, (h - horizon, w, 1))
    canvas = np.clip(np.concatenate([sky, ground], axis=0), 0, 255).astype(np.uint8)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    sx, sy, sr = rng.uniform(0.1, 0.9) * w, rng.uniform(0.05, 0.3) * horizon, rng.uniform(0.03, 0.07) * w
    draw.ellipse((sx - sr, sy - sr, sx + sr, sy + sr), fill=tuple(int(v) for v in rng.integers(200, 256, 3)))
    for _ in range(int(rng.integers(2, 4))):  # hills on the horizon
        cx, hw, hh = rng.uniform(0, w), rng.uniform(0.1, 0.35) * w, rng.uniform(0.05, 0.2) * h
        draw.polygon([(cx - hw, horizon), (cx, horizon - hh), (cx + hw, horizon)],
                     fill=tuple(int(v) for v in rng.integers(30, 140, 3)))
    objects = int(rng.integers(3, 6))
    for i in range(objects):
        ow, oh = rng.uniform(0.06, 0.18) * w, rng.uniform(0.08, 0.25) * h
        ox, oy = rng.uniform(0.05, 0.8) * w, rng.uniform(horizon - oh / 2, h - oh)
        if i == 0:
            ox += moved * w
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shade = tuple(max(0, c - 70) for c in colour)
        if rng.random() < 0.5:
            draw.ellipse((ox, oy, ox + ow, oy + oh), fill=colour, outline=shade, width=4)
            draw.ellipse((ox + ow * 0.2, oy + oh * 0.15, ox + ow * 0.45, oy + oh * 0.4), fill=shade)
        else:
            draw.rectangle((ox, oy, ox + ow, oy + oh), fill=colour, outline=shade, width=4)
            draw.line((ox, oy + oh / 2, ox + ow, oy + oh / 2), fill=shade, width=3)
    font = ImageFont.load_default(size=max(12, h // 18))
    draw.text((rng.uniform(0.05, 0.5) * w, h * 0.9), f"SCENE {seed:05d}", fill=(250, 250, 250), font=font)
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    noisy = np.asarray(img, np.float32) + rng.normal(0, 4, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _crop(img: Image.Image, fraction: float = 0.04) -> Image.Image:
    w, h = img.size
    dx, dy = round(w * fraction / 2), round(h * fraction / 2)
    return img.crop((dx, dy, w - dx, h - dy))


ALTERATIONS: dict[str, tuple[str, Callable[[Image.Image], Image.Image], dict[str, object]]] = {
    # name: (suffix, change, save options)
    "resized": (".jpg", lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
                {"quality": 90}),
    "q40": (".jpg", lambda im: im, {"quality": 40}),
    "crop": (".jpg", _crop, {"quality": 90}),
    "bright": (".jpg", lambda im: ImageEnhance.Brightness(im).enhance(1.12), {"quality": 90}),
    "png": (".png", lambda im: im, {}),
}


def exif_of(taken: str, make: str = "Canon", model: str = "Canon EOS R5") -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make, model
    exif.get_ifd(0x8769)[0x9003] = taken
    return exif


def write_family(folder: Path, seed: int, *, alterations: tuple[str, ...] = tuple(ALTERATIONS),
                 size: tuple[int, int] = SIZE) -> tuple[Path, list[Path]]:
    """Scene ``seed`` as ``photo{seed}.jpg`` (quality 95, EXIF) and its altered copies in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    original = render(seed, size=size)
    path = folder / f"photo{seed}.jpg"
    original.save(path, "JPEG", quality=95, exif=exif_of("2020:06:01 12:00:00"))
    copies = []
    for name in alterations:
        suffix, change, options = ALTERATIONS[name]
        copy = folder / f"photo{seed}-{name}{suffix}"
        change(original).save(copy, **options)
        copies.append(copy)
    return path, copies


def write_moment_apart(folder: Path, seed: int, shift: float = 0.03,
                       size: tuple[int, int] = SIZE) -> tuple[Path, Path]:
    """Two shots of scene ``seed``, the second with its main object moved ``shift`` of the width."""
    folder.mkdir(parents=True, exist_ok=True)
    first, second = folder / f"shot{seed}-a.jpg", folder / f"shot{seed}-b.jpg"
    render(seed, size=size).save(first, "JPEG", quality=92)
    render(seed, moved=shift, size=size).save(second, "JPEG", quality=92)
    return first, second
