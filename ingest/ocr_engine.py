"""Read the words in one picture: PP-OCRv4 (rapidocr-onnxruntime's ONNX models) on onnxruntime, gated.

Gating, so the cost goes where the text is: text *detection* runs first on a copy whose longer side is at
most ``det_max_side`` pixels (a bounded cost per image); a picture with no text box ends there. Only the
boxes found are cut out (from the decoded picture, at up to ``rec_max_side``, so small print stays legible),
turned upright (the 0/180° classifier) and *recognised*, largest first, at most ``max_boxes`` of them.
Lines the recogniser is unsure of (score below ``min_score``) are dropped.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from PIL import Image

from retrieval.settings import OcrSettings

MIN_SIDE = 32
"""Both sides of what the detector sees are at least this (1×N strips are padded, never resized to 0)."""

log = logging.getLogger("clipdex.ocr")


def engine_version(settings: OcrSettings) -> str:
    """What a point's ``ocr`` payload field records: the models and the settings that change the text.

    A point whose field differs from this is pending: changing the engine or these settings re-reads.
    """
    try:
        pkg = version("rapidocr-onnxruntime")
    except PackageNotFoundError:
        pkg = "?"
    return f"rapidocr-{pkg}/ppocrv4/d{settings.det_max_side}/r{settings.rec_max_side}/b{settings.max_boxes}"


class OcrEngine:
    """The detection, orientation and recognition sessions, loaded once (about 0.4 s); not thread-safe."""

    def __init__(self, settings: OcrSettings):
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        from rapidocr_onnxruntime import RapidOCR

        self.settings = settings
        self.version = engine_version(settings)
        self._ocr: Any = RapidOCR(text_score=settings.min_score)
        self._lock = threading.Lock()

    def read(self, image: Image.Image) -> str:
        """The recognised lines of an RGB picture, top to bottom, one per line ("" when it has no text)."""
        with self._lock:
            return self._read(image)

    def _read(self, image: Image.Image) -> str:
        s = self.settings
        big = _bounded(image, s.rec_max_side)
        small = _bounded(big, s.det_max_side)
        det_in = _bgr(_padded(small))
        boxes, _ = self._ocr.text_det(det_in)
        if boxes is None or len(boxes) == 0:
            return ""
        boxes = _largest(list(boxes), s.max_boxes)
        scale = big.width / small.width
        rec_img = _bgr(_padded(big))
        boxes = self._ocr.sorted_boxes(np.asarray([b * scale for b in boxes], dtype=np.float32))
        crops = self._ocr.get_crop_img_list(rec_img, boxes)
        crops = [c for c in crops if c.shape[0] >= 2 and c.shape[1] >= 2]
        if not crops:
            return ""
        if s.use_cls:
            crops, _, _ = self._ocr.text_cls(crops)
        lines, _ = self._ocr.text_rec(crops)
        return "\n".join(text.strip() for text, score, *_ in lines if float(score) >= s.min_score and text.strip())


def _bounded(image: Image.Image, side: int) -> Image.Image:
    """``image`` scaled down so its longer side is at most ``side`` (each side stays at least 1 pixel)."""
    w, h = image.size
    if max(w, h) <= side:
        return image
    f = side / max(w, h)
    return image.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR)


def _padded(image: Image.Image) -> Image.Image:
    """``image`` on a white canvas of at least :data:`MIN_SIDE` per side (top left, so box coordinates hold)."""
    w, h = image.size
    if w >= MIN_SIDE and h >= MIN_SIDE:
        return image
    canvas = Image.new("RGB", (max(w, MIN_SIDE), max(h, MIN_SIDE)), (255, 255, 255))
    canvas.paste(image, (0, 0))
    return canvas


def _bgr(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _largest(boxes: list[np.ndarray], limit: int) -> list[np.ndarray]:
    """At most ``limit`` boxes, the largest by area (small ones are usually noise or fine print)."""
    if len(boxes) <= limit:
        return boxes

    def area(box: np.ndarray) -> float:
        x, y = box[:, 0], box[:, 1]
        return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))

    return sorted(boxes, key=area, reverse=True)[:limit]
