"""open_clip's evaluation image transform in PIL and numpy (no torch, no torchvision).

:class:`Preprocess` resizes, crops (or pads) and normalises a picture exactly as the transform of
``open_clip.create_model_and_transforms(...)[2]`` does with torchvision on a PIL image (same PIL resize
filters, same output sizes and crop offsets), and returns a float32 ``(3, H, W)`` array. Pictures that
are not RGB are first converted the way ingest decodes files (:func:`ingest.decode.to_rgb`: alpha on
white, 16-bit scaled to 8-bit, palette and CMYK converted), so a query image and an ingested file of
the same picture get the same pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ingest.decode import to_rgb

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
"""open_clip's defaults (``open_clip.constants.OPENAI_DATASET_MEAN``/``_STD``)."""
RESIZE_MODES = ("shortest", "longest", "squash")
FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
           "random": Image.Resampling.BICUBIC}
"""open_clip's interpolation names and the PIL filter torchvision uses for each ("random" is bicubic at eval)."""


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int | float):
        return int(size), int(size)
    values = [int(v) for v in size]
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise ValueError(f"preprocess size must be an int or (height, width), not {size!r}")
    return values[0], values[1]


def _triple(value: float | Sequence[float]) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"preprocess mean/std need 3 values, not {value!r}")
    return values[0], values[1], values[2]


@dataclass(frozen=True)
class Preprocess:
    """Resize, crop and normalise as open_clip's eval transform: ``pre(image)`` is float32 ``(3, H, W)``."""

    size: tuple[int, int] = (224, 224)
    """(height, width) of the output."""
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    def __post_init__(self) -> None:
        if self.interpolation not in FILTERS:
            raise ValueError(f"unknown interpolation '{self.interpolation}' ({', '.join(FILTERS)})")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize_mode '{self.resize_mode}' ({', '.join(RESIZE_MODES)})")
        if min(self.size) < 1 or min(self.std) <= 0:
            raise ValueError(f"bad preprocess size {self.size} or std {self.std}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Preprocess:
        """From an open_clip ``PreprocessCfg`` as a dict (``model.visual.preprocess_cfg``, or a model folder's
        ``preprocess_cfg``); missing keys take open_clip's defaults, unknown keys are ignored as open_clip does."""
        return cls(size=_pair(cfg.get("size") or 224), mean=_triple(cfg.get("mean") or OPENAI_MEAN),
                   std=_triple(cfg.get("std") or OPENAI_STD), interpolation=cfg.get("interpolation") or "bicubic",
                   resize_mode=cfg.get("resize_mode") or "shortest", fill_color=int(cfg.get("fill_color") or 0))

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any]) -> Preprocess:
        """From a whole ``open_clip_config.json`` (model_cfg + preprocess_cfg), as open_clip merges them for a
        ``local-dir:`` model: its ``preprocess_cfg`` over the defaults, the size from the image tower's config."""
        cfg = dict(config.get("preprocess_cfg") or {})
        vision = (config.get("model_cfg") or {}).get("vision_cfg") or {}
        cfg["size"] = vision.get("image_size") or 224
        return cls.from_config(cfg)

    @property
    def filter(self) -> Image.Resampling:
        return FILTERS[self.interpolation]

    def _resize(self, im: Image.Image) -> Image.Image:
        w, h = im.size
        target_h, target_w = self.size
        if self.resize_mode == "squash":
            out = (target_w, target_h)
        elif self.resize_mode == "shortest" and target_h == target_w:
            # torchvision Resize(int): the short side becomes the size, the long side int(size * long / short)
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = target_h, int(target_h * long / short)
            out = (new_short, new_long) if w <= h else (new_long, new_short)
        else:  # open_clip's ResizeKeepRatio (its shortest mode with a non-square target is always bicubic)
            ratio_h, ratio_w = h / target_h, w / target_w
            ratio = max(ratio_h, ratio_w) if self.resize_mode == "longest" else min(ratio_h, ratio_w)
            out = (round(w / ratio), round(h / ratio))
            if self.resize_mode == "shortest":
                return im if out == im.size else im.resize(out, Image.Resampling.BICUBIC)
        return im if out == im.size else im.resize(out, self.filter)

    def _crop(self, im: Image.Image) -> Image.Image:
        """torchvision's center_crop (zero padding) or open_clip's CenterCropOrPad (``fill_color``)."""
        crop_h, crop_w = self.size
        w, h = im.size
        if crop_w > w or crop_h > h:
            left, top = (crop_w - w) // 2 if crop_w > w else 0, (crop_h - h) // 2 if crop_h > h else 0
            padded_w, padded_h = max(w, crop_w), max(h, crop_h)
            fill = self.fill_color if self.resize_mode == "longest" else 0
            canvas = Image.new(im.mode, (padded_w, padded_h), (fill,) * len(im.getbands()))
            canvas.paste(im, (left, top))
            im, w, h = canvas, padded_w, padded_h
            if (w, h) == (crop_w, crop_h):
                return im
        top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
        if (left, top, w, h) == (0, 0, crop_w, crop_h):
            return im
        return im.crop((left, top, left + crop_w, top + crop_h))

    def image(self, im: Image.Image) -> Image.Image:
        """The resized and cropped RGB picture, before normalisation."""
        im = im if im.mode == "RGB" else to_rgb(im)
        im = self._resize(im)
        if self.resize_mode != "squash":
            im = self._crop(im)
        return im

    def __call__(self, im: Image.Image) -> np.ndarray:
        """float32 ``(3, H, W)``: (pixel / 255 - mean) / std per channel."""
        out = np.empty((3, *self.size), dtype=np.float32)
        self._into(im, out)
        return out

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 ``(N, 3, H, W)`` for several pictures."""
        out = np.empty((len(images), 3, *self.size), dtype=np.float32)
        for i, im in enumerate(images):
            self._into(im, out[i])
        return out

    def _into(self, im: Image.Image, out: np.ndarray) -> None:
        pixels = np.asarray(self.image(im), dtype=np.float32).transpose(2, 0, 1)  # (3, H, W), 0..255
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        np.divide(pixels, np.float32(255.0), out=out)
        out -= mean
        out /= std
