"""``clipdex train``: contrastive training of an open_clip model on captioned or image-only data.

Objectives: ``clip`` (symmetric image-text InfoNCE with a learnable temperature; captions that are
string-identical within a batch are one text whose positives are all its images) and ``simclr``
(InfoNCE between two augmentations of each image, image tower only). The loop, schedule and
checkpoints are :mod:`retrieval.training.loop`'s.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retrieval.augment import AugmentConfig, augment, normalize
from retrieval.datasets import ImageSet, captioned_folder, coco_captions, fashion_mnist, image_folder
from retrieval.errors import ClipdexError
from retrieval.model.torch_backend import image_size_of
from retrieval.settings import TrainSettings
from retrieval.training.checkpoint import check_output, checkpoint_folder, fingerprint, publish
from retrieval.training.loop import RunOptions, prepare, run_loop
from retrieval.training.losses import clip_loss, simclr_loss
from retrieval.training.model import build_model, decode_all, tokenizer_for

# Settings that may differ between an interrupted run and its resumption.
RESUME_FREE = {"output", "checkpoint_dir", "checkpoint_every", "threads", "device"}


@dataclass
class TrainResult:
    output: Path | None
    steps: int
    total_steps: int
    loss: float
    seconds: float


def objective_of(cfg: TrainSettings) -> str:
    if cfg.objective != "auto":
        return cfg.objective
    return "simclr" if cfg.source == "images" else "clip"


def load_training_set(cfg: TrainSettings) -> ImageSet:
    """The :class:`ImageSet` named by ``cfg.source`` / ``cfg.data``."""
    if cfg.source == "fashion-mnist":
        return fashion_mnist(cfg.data or None, "train", cfg.templates or None)
    if not cfg.data:
        raise ClipdexError(f"train.data (--data) is required for source '{cfg.source}'")
    if cfg.source == "captions":
        return captioned_folder(cfg.data)
    if cfg.source == "coco":
        return coco_captions(cfg.data, cfg.coco_images or None)
    return image_folder(cfg.data)


def _check(cfg: TrainSettings, objective: str) -> None:
    if objective == "simclr" and cfg.freeze_image:
        raise ClipdexError("the simclr objective trains the image tower: freeze_image makes it a no-op")
    if cfg.freeze_image and cfg.freeze_text:
        raise ClipdexError("both towers frozen: nothing to train")
    if len(cfg.image_mean) != 3 or len(cfg.image_std) != 3 or min(cfg.image_std) <= 0:
        raise ClipdexError("train.image_mean and train.image_std need three values (std > 0)")


def train(cfg: TrainSettings, *, resume: bool = False, stop_after: int | None = None, init_only: bool = False,
          progress: bool = True, log=None) -> TrainResult:
    """Train as ``cfg`` says; write the model folder to ``cfg.output`` (unless stopped early).

    ``init_only`` writes the freshly initialised model (a random-init baseline with this seed).
    """
    start_time = time.perf_counter()
    opts = RunOptions(resume, stop_after, init_only, progress, log or (lambda _msg: None))
    objective = objective_of(cfg)
    _check(cfg, objective)
    output = Path(cfg.output).expanduser()
    check_output(output)
    ckpt_dir = checkpoint_folder(cfg.output, cfg.checkpoint_dir)
    if resume and not (ckpt_dir / "last.pt").is_file():
        raise ClipdexError(f"--resume: no checkpoint at {ckpt_dir / 'last.pt'}")
    data = load_training_set(cfg)
    if objective == "clip" and not data.captions:
        raise ClipdexError(f"source '{cfg.source}' has no captions: use objective = 'simclr'")
    if len(data) < 2:
        raise ClipdexError(f"need at least 2 training images, found {len(data)}")
    device = prepare(cfg)
    model, model_cfg = build_model(cfg.arch, cfg.pretrained, cfg.model_cfg)
    model = model.to(device).train()
    if cfg.freeze_image:
        model.visual.eval()  # frozen means frozen: no batch-norm statistics updates either
    tokenizer = tokenizer_for(model_cfg) if objective == "clip" else None
    size = image_size_of(model)
    opts.log(f"decoding {len(data)} images at {size}px")
    pixels = decode_all(data, size)
    trainable = [(n, p) for n, p in model.named_parameters()
                 if not (cfg.freeze_image and n.startswith("visual."))
                 and not ((cfg.freeze_text or objective == "simclr") and not n.startswith("visual."))]
    if objective == "clip":
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1 / cfg.init_temperature))
    aug = AugmentConfig(cfg.aug_scale_min, cfg.aug_flip, cfg.aug_jitter)
    ssl_aug = AugmentConfig(cfg.ssl_scale_min, cfg.aug_flip, cfg.ssl_jitter)

    def clip_step(idx: torch.Tensor, gen: torch.Generator, step: int) -> torch.Tensor:
        x = normalize(augment(pixels[idx], aug, gen), cfg.image_mean, cfg.image_std).to(device)
        captions = pick_captions(data, idx.tolist(), cfg, step)
        uniq = sorted(set(captions))
        where = {c: i for i, c in enumerate(uniq)}
        target = torch.tensor([where[c] for c in captions], device=device)
        with torch.set_grad_enabled(not cfg.freeze_image):
            image = model.encode_image(x)
        with torch.set_grad_enabled(not cfg.freeze_text):
            text = model.encode_text(tokenizer(uniq).to(device))
        return clip_loss(image.float(), text.float(), target, model.logit_scale.float())

    def simclr_step(idx: torch.Tensor, gen: torch.Generator, step: int) -> torch.Tensor:
        crops = pixels[idx]
        v1 = normalize(augment(crops, ssl_aug, gen), cfg.image_mean, cfg.image_std).to(device)
        v2 = normalize(augment(crops, ssl_aug, gen), cfg.image_mean, cfg.image_std).to(device)
        feats = model.encode_image(torch.cat([v1, v2])).float()
        return simclr_loss(feats[: len(idx)], feats[len(idx):], cfg.ssl_temperature)

    def clamp_temperature() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    run = run_loop(model, trainable, clip_step if objective == "clip" else simclr_step, len(data), cfg, device,
                   ckpt_dir, fingerprint(cfg.model_dump(), RESUME_FREE, n_items=len(data)), opts, clamp_temperature)
    seconds = time.perf_counter() - start_time
    if run.steps < run.total_steps:
        return TrainResult(None, run.steps, run.total_steps, run.loss, seconds)
    preprocess_cfg = {"size": size, "mode": "RGB", "mean": list(cfg.image_mean), "std": list(cfg.image_std),
                      "interpolation": "bicubic", "resize_mode": "shortest"}
    extra = {"objective": objective, "source": cfg.source, "data": data.name, "images": len(data),
             "steps": run.steps, "final_loss": round(run.loss, 5), "train_seconds": round(seconds, 1),
             "templates": data.templates if data.class_names else [], "class_names": data.class_names or [],
             "settings": cfg.model_dump(exclude={"model_cfg"})}
    publish(model.eval().cpu(), model_cfg, preprocess_cfg, extra, output)
    return TrainResult(output, run.steps, run.total_steps, run.loss, seconds)


def pick_captions(data: ImageSet, idx: list[int], cfg: TrainSettings, step: int) -> list[str]:
    """One caption per image: the same caption slot for the whole batch, or a random one per image."""
    assert data.captions is not None
    rng = np.random.default_rng([cfg.seed, step])
    if cfg.caption_choice == "per_batch":
        slot = int(rng.integers(1 << 30))
        return [data.captions[i][slot % len(data.captions[i])] for i in idx]
    return [data.captions[i][int(rng.integers(len(data.captions[i])))] for i in idx]
