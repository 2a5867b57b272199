"""Read the words in one picture: PP-OCRv4 (rapidocr-onnxruntime's ONNX models) on onnxruntime, gated.

Gating, so the cost goes where the text is: text *detection* runs first on a copy whose longer side is at
most ``det_max_side`` pixels (a bounded cost per image); a picture with no text box ends there. Only the
boxes found are cut out (from the decoded picture, at up to ``rec_max_side``, so small print stays legible),
turned upright (the 0/180° classifier) and *recognised*, largest first, at most ``max_boxes`` of them.
Lines the recogniser is unsure of (score below ``min_score``) are dropped, and so are lines of fewer than two
letters or digits (on photos without text, a round shape reads as "O", a post as "T").
"""

from __future__ import annotations

import logging
import re
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from PIL import Image

from retrieval.settings import OcrSettings
from retrieval.words import split_joined

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


class OcrTimeout(Exception):
    """One picture's time budget ran out inside the engine (its ONNX Runtime runs were stopped)."""


class _Budgeted:
    """An ONNX Runtime session whose runs carry the engine's current ``RunOptions``, so a timer thread can stop
    a run at the picture's deadline (``RunOptions.terminate``: ONNX Runtime checks it between its kernels).

    rapidocr calls ``session.run(names, feed)`` and wraps any exception in its own ``ONNXRuntimeError``;
    :meth:`OcrEngine.read` recognises a stopped run by the deadline, whatever the exception became.
    """

    def __init__(self, session: Any, engine: OcrEngine):
        self._session = session
        self._engine = engine

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        options = self._engine._run_options
        if options is not None and options.terminate:
            raise OcrTimeout("time budget spent")
        return self._session.run(output_names, input_feed, options if options is not None else run_options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class OcrEngine:
    """The detection, orientation and recognition sessions, loaded once (about 0.4 s); one picture at a time."""

    def __init__(self, settings: OcrSettings):
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        from rapidocr_onnxruntime import RapidOCR

        self.settings = settings
        self.version = engine_version(settings)
        self._ocr: Any = RapidOCR(text_score=settings.min_score)
        # rapidocr's default ("min" 736) *enlarges* every picture until its short side is 736 px; "max" keeps
        # the size this engine bounded it to (rounded to multiples of 32).
        self._ocr.text_det.limit_type = "max"
        self._lock = threading.Lock()
        self._run_options: Any = None  # the RunOptions of the picture being read under a deadline
        self._deadline: float | None = None
        for stage in (self._ocr.text_det, self._ocr.text_cls, self._ocr.text_rec):
            for name in ("infer", "session"):  # rapidocr's OrtInferSession, holding the onnxruntime session
                holder = getattr(stage, name, None)
                if holder is not None and hasattr(getattr(holder, "session", None), "run"):
                    holder.session = _Budgeted(holder.session, self)
                    break
            else:
                log.warning("OCR: cannot bound %s's runs in time (rapidocr changed?)", type(stage).__name__)

    def read(self, image: Image.Image, deadline: float | None = None) -> str:
        """The recognised lines of an RGB picture, top to bottom, one per line ("" when it has no text).

        ``deadline`` (``time.monotonic()``): :class:`OcrTimeout` once it has passed, in any thread: a running
        ONNX Runtime call is stopped by a timer (``RunOptions.terminate``) and the stages check it in between.
        """
        import onnxruntime as ort

        with self._lock:
            if deadline is None:
                return self._read(image)
            if time.monotonic() >= deadline:
                raise OcrTimeout("time budget spent before OCR started")
            options = ort.RunOptions()
            timer = threading.Timer(max(0.0, deadline - time.monotonic()), setattr, (options, "terminate", True))
            timer.daemon = True
            self._run_options, self._deadline = options, deadline
            timer.start()
            try:
                return self._read(image)
            except Exception as exc:
                if options.terminate or time.monotonic() >= deadline:
                    raise OcrTimeout("time budget spent") from exc
                raise
            finally:
                timer.cancel()
                self._run_options, self._deadline = None, None

    def _check(self) -> None:
        """Between stages: stop once the picture's deadline has passed."""
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise OcrTimeout("time budget spent")

    def _read(self, image: Image.Image) -> str:
        s = self.settings
        big = _bounded(image, s.rec_max_side)
        small = _bounded(big, s.det_max_side)
        det_in = _bgr(_padded(small))
        boxes, _ = self._ocr.text_det(det_in)
        if boxes is None or len(boxes) == 0:
            return ""
        self._check()
        boxes = _largest(list(boxes), s.max_boxes)
        scale = big.width / small.width
        rec_img = _bgr(_padded(big))
        boxes = self._ocr.sorted_boxes(np.asarray([b * scale for b in boxes], dtype=np.float32))
        crops = self._ocr.get_crop_img_list(rec_img, boxes)
        crops = [c for c in crops if c.shape[0] >= 2 and c.shape[1] >= 2]
        if not crops:
            return ""
        self._check()
        if s.use_cls:
            crops, _, _ = self._ocr.text_cls(crops)
        self._check()
        pieces = [split_words(c) for c in crops]  # the recogniser often drops the space between words
        flat = [p for ps in pieces for p in ps]
        self._check()
        results, _ = self._ocr.text_rec(flat)
        kept, at = [], 0
        for ps in pieces:
            words = [(t.strip(), float(sc)) for t, sc, *_ in results[at:at + len(ps)]]
            at += len(ps)
            good = [t for t, sc in words if t and sc >= s.min_score]
            kept.append(split_joined(" ".join(good)))
        return "\n".join(t for t in kept if len(_WORDCHARS.findall(t)) >= 2)  # a lone "O" is a circle


_WORDCHARS = re.compile(r"[^\W_]")


def split_words(crop: np.ndarray, gap: float = 0.4) -> list[np.ndarray]:
    """A text line cut at its word gaps: runs of ink-free columns at least ``gap`` × its height wide.

    Ink is the minority side of the crop's Otsu threshold (dark on light or light on dark). A line whose
    background is too busy to show clean gaps stays whole.
    """
    h, w = crop.shape[:2]
    if h < 8 or w < 3 * h:
        return [crop]
    grey = crop.mean(axis=2) if crop.ndim == 3 else crop.astype(np.float64)
    hist, edges = np.histogram(grey, bins=64)
    c = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * c)
    mu0 = np.divide(m, w0, out=np.zeros_like(m), where=w0 > 0)
    mu1 = np.divide(m[-1] - m, w1, out=np.zeros_like(m), where=w1 > 0)
    thr = edges[int(np.argmax(w0 * w1 * (mu0 - mu1) ** 2)) + 1]
    dark = grey < thr
    ink = dark if dark.mean() < 0.5 else ~dark
    empty = ink.sum(axis=0) <= max(1, h // 20)
    cuts, start = [], None
    for x in range(w + 1):
        if x < w and empty[x]:
            start = x if start is None else start
        elif start is not None:
            if x - start >= gap * h and start > 0 and x < w:
                cuts.append((start + x) // 2)
            start = None
    if not cuts or len(cuts) > 40:
        return [crop]
    bounds = [0, *cuts, w]
    return [crop[:, a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b - a >= 4]


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
