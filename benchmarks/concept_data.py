"""Vectors for benchmarks/concepts.py: the Fashion-MNIST test split and a made-up "glyph" domain, embedded by
the bundled model once and cached (``--cache``).

The glyph domain is rendered here, without a download: 10 families of 28x28 grey pictures (rings, stripes at a
slant, checkers, dot grids, triangles, crosses, spirals, letters, blobs, zigzags), each drawn with a random size,
place, rotation, contrast and noise. The bundled model was trained on clothing only: it never saw these and its
text tower has no word for them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GLYPH_CLASSES = ["rings", "stripes", "checkers", "dots", "triangle", "cross", "spiral", "letter", "blobs", "zigzag"]
SIDE = 28


def _canvas(rng: np.random.Generator) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    bg = int(rng.integers(0, 60))
    img = Image.new("L", (SIDE * 2, SIDE * 2), bg)
    return img, ImageDraw.Draw(img), int(rng.integers(150, 256))


def glyph(kind: int, rng: np.random.Generator) -> np.ndarray:
    """One 28x28 uint8 picture of family ``kind``."""
    img, draw, ink = _canvas(rng)
    s = SIDE * 2
    cx, cy = s / 2 + rng.uniform(-6, 6), s / 2 + rng.uniform(-6, 6)
    r = rng.uniform(12, 24)
    width = int(rng.integers(2, 5))
    if kind == 0:  # rings
        for k in range(int(rng.integers(2, 4))):
            rr = r * (1 - k * 0.3)
            draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], outline=ink, width=width)
    elif kind == 1:  # stripes
        period = rng.uniform(6, 12)
        for x in np.arange(-s, 2 * s, period):
            draw.line([(x, 0), (x + s * 0.4, s)], fill=ink, width=width)
    elif kind == 2:  # checkers
        cell = rng.uniform(6, 12)
        for i in range(int(s / cell) + 1):
            for j in range(int(s / cell) + 1):
                if (i + j) % 2:
                    draw.rectangle([i * cell, j * cell, (i + 1) * cell, (j + 1) * cell], fill=ink)
    elif kind == 3:  # dots
        step = rng.uniform(8, 14)
        dot = rng.uniform(1.5, 3.5)
        for x in np.arange(step / 2, s, step):
            for y in np.arange(step / 2, s, step):
                draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=ink)
    elif kind == 4:  # triangle
        a = rng.uniform(0, 2 * math.pi)
        pts = [(cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3))
               for k in range(3)]
        draw.polygon(pts, fill=ink if rng.random() < 0.5 else None, outline=ink, width=width)
    elif kind == 5:  # cross
        draw.line([(cx - r, cy), (cx + r, cy)], fill=ink, width=width + 2)
        draw.line([(cx, cy - r), (cx, cy + r)], fill=ink, width=width + 2)
    elif kind == 6:  # spiral
        t = np.linspace(0, rng.uniform(3, 5) * math.pi, 80)
        pts = [(cx + r * tt / t[-1] * math.cos(tt), cy + r * tt / t[-1] * math.sin(tt)) for tt in t]
        draw.line(pts, fill=ink, width=width)
    elif kind == 7:  # letter
        letter = "AEKMRWXZ"[int(rng.integers(0, 8))]
        font = ImageFont.load_default(size=int(rng.integers(28, 44)))
        draw.text((cx, cy), letter, fill=ink, font=font, anchor="mm")
    elif kind == 8:  # blobs
        noise = rng.normal(size=(7, 7))
        field = np.asarray(Image.fromarray(((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8))
                           .resize((s, s), Image.BICUBIC), np.float32)
        img = Image.fromarray(np.where(field > 140, ink, np.asarray(img)).astype(np.uint8))
    else:  # zigzag
        amp, step = rng.uniform(5, 12), rng.uniform(6, 10)
        for row in np.arange(rng.uniform(4, 10), s, rng.uniform(14, 22)):
            pts = [(x, row + (amp if k % 2 else -amp) / 2) for k, x in enumerate(np.arange(0, s + step, step))]
            draw.line(pts, fill=ink, width=width)
    img = img.rotate(float(rng.uniform(0, 360)), resample=Image.BILINEAR, fillcolor=int(np.asarray(img)[0, 0]))
    out = np.asarray(img.resize((SIDE, SIDE), Image.BILINEAR), np.float32)
    out += rng.normal(0, rng.uniform(0, 18), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def glyphs(per_class: int = 1000, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """``per_class`` pictures of each family, shuffled, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(GLYPH_CLASSES)), per_class)
    rng.shuffle(labels)
    return [glyph(int(k), rng) for k in labels], labels


def embedded(config: str, cache: Path, data: str | None = None) -> dict[str, np.ndarray]:
    """Vectors and labels of both domains, plus the text vectors the concepts' names give: from ``cache`` when
    it is there (written by the first run)."""
    if cache.is_file():
        with np.load(cache) as z:
            return dict(z)
    from retrieval import load_settings
    from retrieval.concepts.learner import name_prompts
    from retrieval.datasets import FMNIST_CLASSES, ImageSet, fashion_mnist
    from retrieval.evaluate import embed_images
    from retrieval.model.torch_backend import TorchEncoder

    encoder = TorchEncoder.load(load_settings(config).model)
    fm = fashion_mnist(data, "test")
    images, labels = glyphs()
    out = {
        "fm_vectors": embed_images(encoder, fm), "fm_labels": np.asarray(fm.labels),
        "gl_vectors": embed_images(encoder, ImageSet(list(images), labels=labels)), "gl_labels": labels,
        "fm_zero_shot": encoder.encode_texts([f"a photo of a {c}." for c in FMNIST_CLASSES]),
        "fm_names": np.stack([encoder.encode_texts(name_prompts(c)).mean(0) for c in FMNIST_CLASSES]),
        "gl_names": np.stack([encoder.encode_texts(name_prompts(c)).mean(0) for c in GLYPH_CLASSES]),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out
