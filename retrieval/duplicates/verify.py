"""Pixel-level verification of a candidate pair: the same photo, or only a similar one?

Each image is reduced once to a small grey "look" (:func:`look_of`). A pair is compared after
undoing what copies of a photo go through: the crop box of one image inside the other is found by
coordinate descent (crops, small shifts, resizes), and the tone by a monotone curve that matches the
histograms (brightness, contrast, clipped highlights). What is left of a true copy is faint and
spread out (JPEG blocks, resampling); a second shot of the same scene leaves a block where
something moved whose structure no longer matches. So the decision is on the worst block:
``similarity`` is the lowest SSIM of the 16 x 16 blocks of the aligned pair. Chosen by measurement
against pHash, dHash and whole-image SSIM, which cannot tell those shots apart (docs/duplicates.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

from ingest.decode import DecodeError, load_image
from ingest.records import fs_path
from retrieval.inside import Refused, open_regular

LOOK = 256
"""Longer side of the grey image kept per file."""
SIDE = 128
"""Both images of a pair are compared at SIDE x SIDE pixels."""
GRID = 16
"""The similarity is that of the worst block of a GRID x GRID grid."""
MAX_CROP = 0.15
"""The most the alignment crops from any side (a fraction of the width or height)."""
DEFAULT_MIN_SIMILARITY = 0.80
"""Measured: altered copies >= 0.88, the same scene with an object moved 2 % <= 0.74 (docs/duplicates.md)."""
_SURE = 0.97
"""A pair this similar before any alignment is the same photo without searching for a crop."""
MAX_PHASH_DISTANCE = 20
"""Pairs whose pHashes differ in more bits are different pictures, rejected without a pixel comparison
(altered copies measured <= 6 bits, distinct scenes see docs/duplicates.md). pHash alone cannot reject
the hard case (two shots of one scene differ by 0 bits): the block check below does that."""
_UNLIKE = 0.8
"""Pairs whose 16 x 16 thumbnails correlate less than this are different pictures: no alignment is tried
(altered copies measured >= 0.94)."""
_C1, _C2 = (0.01 * 255) ** 2, (0.04 * 255) ** 2
_QUANTILES = np.linspace(0.0, 100.0, 65)


@dataclass(frozen=True)
class Look:
    """A file reduced for comparison: grey, float, at most LOOK pixels on its longer side."""

    image: Image.Image  # mode "F"
    width: int  # of the file as decoded (upright)
    height: int
    phash: int = 0  # 64-bit perceptual hash (imagehash.phash): a quick first test only

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def full(self) -> np.ndarray:
        return _sample(self, (0.0, 0.0, *self.image.size))


def look_of(path: str, max_megapixels: float = 100.0) -> Look:
    """The :class:`Look` of an image file (``path``: a stored path key, opened as :func:`ingest.records.fs_path`
    says, only if it is a regular file, without blocking); raises :class:`ingest.decode.DecodeError`."""
    try:
        opened = open_regular(fs_path(path), shown=path)
    except Refused as exc:
        raise DecodeError(str(exc)) from None
    with opened:
        image = load_image(opened.fd, max_megapixels=max_megapixels, draft_size=LOOK)
    return look_of_image(image)


def look_of_image(image: Image.Image) -> Look:
    """The :class:`Look` of a decoded picture (a photo, or a video's frame: :mod:`.videos`)."""
    width, height = image.size
    grey = image.convert("L")
    grey.thumbnail((LOOK, LOOK), Image.Resampling.BOX)
    bits = imagehash.phash(grey).hash.ravel()
    return Look(grey.convert("F"), width, height, int("".join("1" if b else "0" for b in bits), 2))


def _sample(look: Look, box: tuple[float, float, float, float]) -> np.ndarray:
    return np.asarray(look.image.resize((SIDE, SIDE), Image.Resampling.BILINEAR, box=box), np.float32)


def _tone(moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """``moving`` through the monotone tone curve that gives it ``fixed``'s histogram."""
    return np.interp(moving, np.percentile(moving, _QUANTILES), np.percentile(fixed, _QUANTILES)).astype(np.float32)


def _error(moving: np.ndarray, fixed: np.ndarray) -> float:
    """Squared error left after the best gain and offset (the cheap fit the alignment search uses)."""
    m, f = moving - moving.mean(), fixed - fixed.mean()
    var = float((m * m).mean())
    gain = float((m * f).mean()) / var if var > 1e-6 else 1.0
    return float(np.mean((m * gain - f) ** 2))


def block_ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM of each block of a GRID x GRID grid over two SIDE x SIDE images."""
    block = SIDE // GRID
    xb = x.reshape(GRID, block, GRID, block).transpose(0, 2, 1, 3).reshape(GRID, GRID, -1)
    yb = y.reshape(GRID, block, GRID, block).transpose(0, 2, 1, 3).reshape(GRID, GRID, -1)
    mx, my = xb.mean(-1), yb.mean(-1)
    vx, vy = xb.var(-1), yb.var(-1)
    cov = ((xb - mx[..., None]) * (yb - my[..., None])).mean(-1)
    return ((2 * mx * my + _C1) * (2 * cov + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))


def _worst_block(moving: np.ndarray, fixed: np.ndarray) -> float:
    return float(block_ssim(_tone(moving, fixed), fixed).min())


def _align(big: Look, fixed: np.ndarray) -> np.ndarray:
    """The part of ``big`` that best matches ``fixed`` (SIDE x SIDE), found by coordinate descent on its box."""
    w, h = big.image.size
    box = [0.0, 0.0, float(w), float(h)]
    best = _error(_sample(big, (0.0, 0.0, w, h)), fixed)
    step = 0.03
    while step >= 0.001:
        improved = True
        while improved:
            improved = False
            for i in range(4):
                size = w if i % 2 == 0 else h
                for sign in (1.0, -1.0):
                    trial = list(box)
                    trial[i] += sign * step * size
                    inset = trial[i] if i < 2 else size - trial[i]
                    if not 0.0 <= inset <= MAX_CROP * size:
                        continue
                    err = _error(_sample(big, (trial[0], trial[1], trial[2], trial[3])), fixed)
                    if err < best - 1e-9:
                        best, box, improved = err, trial, True
        step /= 2
    return _sample(big, (box[0], box[1], box[2], box[3]))


def _coarse_correlation(x: np.ndarray, y: np.ndarray) -> float:
    block = SIDE // 16
    xs = x.reshape(16, block, 16, block).mean(axis=(1, 3)).ravel()
    ys = y.reshape(16, block, 16, block).mean(axis=(1, 3)).ravel()
    xs, ys = xs - xs.mean(), ys - ys.mean()
    norm = float(np.sqrt((xs * xs).sum() * (ys * ys).sum()))
    return float((xs * ys).sum()) / norm if norm > 1e-6 else 1.0


def similarity(a: Look, b: Look) -> float:
    """The lowest block SSIM of the pair once aligned (1.0: the same pixels; a moved object: far lower)."""
    fa, fb = a.full(), b.full()
    if _coarse_correlation(fa, fb) < _UNLIKE:
        return 0.0
    plain = max(_worst_block(fa, fb), _worst_block(fb, fa))
    if plain >= _SURE:
        return plain
    scores = [plain]
    for big, fixed in ((a, fb), (b, fa)):  # either may be the crop of the other
        scores.append(_worst_block(_align(big, fixed), fixed))
    return max(scores)


def same_photo(a: Look, b: Look, min_similarity: float = DEFAULT_MIN_SIMILARITY) -> tuple[bool, float]:
    """Whether ``a`` and ``b`` show the same photo, and their :func:`similarity` (0.0 when their shapes
    rule it out: no crop the alignment tries turns one into the other)."""
    if abs(np.log(a.aspect / b.aspect)) > 2 * MAX_CROP:
        return False, 0.0
    if a.phash and b.phash and (a.phash ^ b.phash).bit_count() > MAX_PHASH_DISTANCE:
        return False, 0.0
    score = similarity(a, b)
    return score >= min_similarity, score


__all__ = ["DEFAULT_MIN_SIMILARITY", "DecodeError", "Look", "look_of", "look_of_image", "same_photo", "similarity"]
