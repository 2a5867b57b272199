"""Real image files of many formats for the end-to-end tests, written by PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def pattern(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A distinct RGB picture per seed: blocks of colour plus a gradient."""
    rng = np.random.default_rng(seed)
    w, h = size
    blocks = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    img = np.kron(blocks, np.ones((h // 4 + 1, w // 6 + 1, 1), dtype=np.uint8))[:h, :w]
    ramp = np.linspace(0, 60, w, dtype=np.float32)[None, :, None]
    return Image.fromarray(np.clip(img.astype(np.float32) * 0.8 + ramp, 0, 255).astype(np.uint8))


# EXIF written into some of write_library's files: (DateTimeOriginal, Make, Model); the rest have none.
LIBRARY_EXIF = {
    "a/one.png": ("2019:05:01 10:00:00", "Canon", "Canon EOS 5D"),
    "a/two.jpg": ("2021:07:04 18:22:00", "Canon", "Canon EOS R5"),
    "a/deep/three.webp": ("2023:01:15 08:30:00", "Apple", "iPhone 14"),
    "b/alpha.png": ("2020:02:02 12:00:00", "NIKON CORPORATION", "NIKON D750"),
    "b/rotated.jpg": ("2022:10:10 16:45:00", "Apple", "iPhone 14"),
}


def camera_exif(name: str, exif: Image.Exif | None = None) -> Image.Exif:
    """``exif`` (or a new one) with the date and camera ``LIBRARY_EXIF`` gives ``name``, if any."""
    exif = exif if exif is not None else Image.Exif()
    if name in LIBRARY_EXIF:
        taken, make, model = LIBRARY_EXIF[name]
        exif[0x010F], exif[0x0110] = make, model
        exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal, in the Exif IFD
    return exif


def write_library(root: Path) -> dict[str, list[Path]]:
    """Good images of several formats in two folders (some with EXIF dates and cameras), three broken files."""
    (root / "a" / "deep").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    good = []
    specs = [("a/one.png", "PNG", "RGB"), ("a/two.jpg", "JPEG", "RGB"), ("a/deep/three.webp", "WEBP", "RGB"),
             ("b/gray.png", "PNG", "L"), ("b/alpha.png", "PNG", "RGBA"), ("b/palette.png", "PNG", "P")]
    for seed, (name, fmt, mode) in enumerate(specs):
        img = pattern(seed)
        img = img.convert(mode) if mode != "P" else img.quantize(64)
        img.save(root / name, fmt, exif=camera_exif(name))
        good.append(root / name)
    rotated = pattern(len(specs)).transpose(Image.Transpose.ROTATE_90)  # stored sideways ...
    exif = camera_exif("b/rotated.jpg")
    exif[0x0112] = 6  # ... and tagged "rotate 90° clockwise to display"
    rotated.save(root / "b" / "rotated.jpg", "JPEG", exif=exif)
    good.append(root / "b" / "rotated.jpg")
    full = root / "a" / "two.jpg"
    (root / "b" / "truncated.jpg").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    (root / "b" / "empty.jpg").write_bytes(b"")
    (root / "b" / "notes.jpg").write_text("this is not an image\n")
    broken = [root / "b" / n for n in ("truncated.jpg", "empty.jpg", "notes.jpg")]
    return {"good": good, "broken": broken}


def write_near_duplicates(root: Path) -> dict[str, list[Path]]:
    """Three classes (red, green, blue tints of a pattern), each an original and three near-duplicates
    (a JPEG re-encode, slight noise, a down-and-up resize): ``{"a": [a/0.png, …], "b": …, "c": …}``."""
    rng = np.random.default_rng(0)
    classes: dict[str, list[Path]] = {}
    for name, seed, tint in (("a", 11, (1, .25, .25)), ("b", 22, (.25, 1, .25)), ("c", 33, (.25, .25, 1))):
        (root / name).mkdir(parents=True)
        pixels = np.asarray(pattern(seed), np.float32) * np.array(tint, np.float32)
        base = Image.fromarray(pixels.astype(np.uint8))
        base.save(root / name / "0.png")
        base.save(root / name / "1.jpg", quality=85)
        Image.fromarray(np.clip(pixels + rng.normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)).save(
            root / name / "2.png")
        base.resize((86, 58)).resize(base.size).save(root / name / "3.png")
        classes[name] = [root / name / f for f in ("0.png", "1.jpg", "2.png", "3.png")]
    return classes
