"""A query image ("search by example") decoded to no more pixels than the model needs.

``clipdex search --image`` and ``POST /api/search`` both call :func:`query_image`, so they see the
same pixels. JPEGs are reduced while they decode (``draft``: 1/2, 1/4, 1/8 scale) and the pixel cap
applies to that reduced size; formats that cannot reduce while decoding are refused above the cap
before a pixel is decoded. The result is then shrunk by a whole factor to a shorter side below
``2 × size`` and its longer side cut (centred) to at most ``MAX_ASPECT`` times the shorter one, so
the model's own resize (shorter side to ``size``) can never blow a 100000×8 strip up to gigabytes.
"""

from __future__ import annotations

from PIL import Image

from ingest.decode import load_image

MAX_ASPECT = 4
"""The longest side kept, in shorter sides (the model centre-crops a square anyway)."""


def reduce_for_query(image: Image.Image, size: int) -> Image.Image:
    """``image`` with its shorter side below ``2 * size`` (a whole-factor box reduction) and an aspect
    ratio of at most ``MAX_ASPECT`` (the centre kept); unchanged when it already fits."""
    width, height = image.size
    short = min(width, height)
    if short <= 0:
        return image
    longest = MAX_ASPECT * short
    if width > longest or height > longest:
        left, top = (width - min(width, longest)) // 2, (height - min(height, longest)) // 2
        image = image.crop((left, top, left + min(width, longest), top + min(height, longest)))
    factor = short // max(1, size)
    return image.reduce(factor) if factor >= 2 else image


def query_image(source: str | int, *, size: int, max_megapixels: float) -> Image.Image:
    """Decode ``source`` (a path or an open descriptor) as ingest does, then :func:`reduce_for_query`."""
    return reduce_for_query(load_image(source, max_megapixels=max_megapixels, draft_size=size), size)
