"""Batched image augmentation on uint8 tensors, reproducible from a ``torch.Generator``.

Images are decoded once to ``(N, 3, S, S)`` uint8 at the model's input size; each training step
augments a whole batch at once (random resized crop + shift, horizontal flip, brightness/contrast
jitter) with one affine ``grid_sample``, then normalises with the model's mean/std.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass(frozen=True)
class AugmentConfig:
    scale_min: float = 0.8
    """Smallest crop area as a fraction of the image (1.0 = no cropping)."""
    flip: bool = True
    jitter: float = 0.0
    """Brightness/contrast jitter strength (0 = none)."""


def to_uint8(image: Image.Image, size: int) -> np.ndarray:
    """Resize the short side to ``size`` (bicubic) and centre-crop: open_clip's 'shortest' eval transform."""
    image = image.convert("RGB")
    w, h = image.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 or [0, 1] float ``(B, 3, H, W)`` -> normalised float32."""
    x = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def draw(n: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Random augmentation parameters ``(n, 7)``: crop scale x/y, shift x/y, flip, brightness, contrast.

    They are resolution-free (normalised coordinates), so one draw gives the same crop to models of
    different input sizes (a teacher and its student). Row ``[1, 1, 0, 0, 0, 1, 1]`` is the identity.
    """
    params = identity_params(n)
    if cfg.scale_min < 1.0 or cfg.flip:
        area = cfg.scale_min + (1 - cfg.scale_min) * torch.rand(n, generator=gen)
        log_ratio = (torch.rand(n, generator=gen) * 2 - 1) * math.log(4 / 3)
        ratio = torch.exp(log_ratio)
        sx = torch.sqrt(area * ratio).clamp(max=1.0)
        sy = torch.sqrt(area / ratio).clamp(max=1.0)
        params[:, 0], params[:, 1] = sx, sy
        params[:, 2] = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sx)
        params[:, 3] = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sy)
        params[:, 4] = (torch.rand(n, generator=gen) < 0.5).float() if cfg.flip else 0.0
    if cfg.jitter > 0:
        params[:, 5] = 1 + (torch.rand(n, generator=gen) * 2 - 1) * cfg.jitter
        params[:, 6] = 1 + (torch.rand(n, generator=gen) * 2 - 1) * cfg.jitter
    return params


def identity_params(n: int) -> torch.Tensor:
    """Parameters that leave ``n`` images as they are."""
    return torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]).repeat(n, 1)


def apply(batch: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Crop/shift/flip/jitter a uint8 batch as ``params`` (from :func:`draw`) say; float in [0, 1]."""
    x = batch.float() / 255.0
    n = x.shape[0]
    geometric = params[:, :5] != identity_params(1)[:, :5]
    if bool(geometric.any()):
        sx, sy, tx, ty, flip = params[:, 0], params[:, 1], params[:, 2], params[:, 3], params[:, 4] > 0.5
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = torch.where(flip, -sx, sx)
        theta[:, 0, 2] = tx
        theta[:, 1, 1] = sy
        theta[:, 1, 2] = ty
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if bool((params[:, 5:] != 1).any()):
        bright, contrast = params[:, 5].view(n, 1, 1, 1), params[:, 6].view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (((x - mean) * contrast + mean) * bright).clamp(0, 1)
    return x


def augment(batch: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Randomly crop/shift/flip/jitter a uint8 batch; returns float in [0, 1]."""
    return apply(batch, draw(batch.shape[0], cfg, gen))
