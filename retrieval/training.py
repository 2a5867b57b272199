"""Contrastive training of an open_clip model, with periodic resumable checkpoints.

Objectives: ``clip`` (symmetric image-text InfoNCE with a learnable temperature; captions that are
string-identical within a batch are one text whose positives are all its images) and ``simclr``
(InfoNCE between two augmentations of each image, image tower only). Every random choice of a
step (batch order, augmentation, which caption) is derived from ``seed`` and the step number, and
a checkpoint holds model, optimizer, scaler and RNG states, so ``resume`` reaches the same weights
as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from retrieval import _torchvision_shim  # noqa: F401  (before open_clip)
from retrieval.augment import AugmentConfig, augment, normalize, to_uint8
from retrieval.datasets import FMNIST_TEMPLATES, ImageSet, captioned_folder, coco_captions, fashion_mnist, image_folder
from retrieval.encoder import CONFIG_NAME, LOCAL_DIR, _quiet_open_clip, pick_device, save_model_folder
from retrieval.errors import ClipdexError
from retrieval.settings import TrainSettings

open_clip = importlib.import_module("open_clip")  # only after the torchvision shim above

CHECKPOINT_NAME = "last.pt"
# Settings that may differ between an interrupted run and its resumption.
_RESUME_FREE = {"output", "checkpoint_dir", "checkpoint_every", "threads", "device"}


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


# --- model -------------------------------------------------------------------------------------

def build_model(cfg: TrainSettings) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Create the model to train and its architecture config (for the saved folder)."""
    try:
        with _quiet_open_clip():
            if cfg.arch.startswith(LOCAL_DIR):
                folder = Path(cfg.arch[len(LOCAL_DIR):]).expanduser()
                if not (folder / CONFIG_NAME).is_file():
                    raise ClipdexError(f"train.arch: {folder} has no {CONFIG_NAME}")
                model_cfg = json.loads((folder / CONFIG_NAME).read_text())["model_cfg"]
                model = open_clip.create_model(f"{LOCAL_DIR}{folder}")
            elif cfg.arch:
                model_cfg = open_clip.get_model_config(cfg.arch)
                if model_cfg is None:
                    raise ClipdexError(f"unknown open_clip architecture '{cfg.arch}'")
                if cfg.pretrained and not (cfg.pretrained in open_clip.list_pretrained_tags_by_model(cfg.arch)
                                           or Path(cfg.pretrained).is_file()):
                    raise ClipdexError(f"train.pretrained '{cfg.pretrained}' is neither a tag of {cfg.arch} "
                                       "nor a checkpoint file")
                model = open_clip.create_model(cfg.arch, pretrained=cfg.pretrained or None)
            else:
                if not cfg.model_cfg:
                    raise ClipdexError("set train.arch (an open_clip architecture) or a train.model_cfg table")
                model_cfg = json.loads(json.dumps(cfg.model_cfg))
                with tempfile.TemporaryDirectory() as tmp:
                    Path(tmp, CONFIG_NAME).write_text(json.dumps({"model_cfg": model_cfg}))
                    model = open_clip.create_model(f"{LOCAL_DIR}{tmp}")
    except ClipdexError:
        raise
    except Exception as exc:  # open_clip raises many types for bad configs
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClipdexError(f"cannot build the model: {msg}") from None
    return model, model_cfg


def image_size_of(model: torch.nn.Module) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


def decode_all(data: ImageSet, size: int) -> torch.Tensor:
    """Every image of ``data`` as one ``(N, 3, size, size)`` uint8 tensor."""
    out = np.empty((len(data), 3, size, size), dtype=np.uint8)
    for i, src in enumerate(data.images):
        if isinstance(src, np.ndarray) and src.shape == (size, size):
            out[i] = src[None]  # grayscale at model size: no resampling
        else:
            out[i] = to_uint8(data.load(i), size)
    return torch.from_numpy(out)


def _param_groups(params: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """open_clip's convention: no weight decay on gains, biases, norms, embeddings' scale."""
    def no_decay(n: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    return [{"params": [p for n, p in params if no_decay(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in params if not no_decay(n, p)], "weight_decay": weight_decay}]


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * min(1.0, progress)))


# --- losses ------------------------------------------------------------------------------------

def clip_loss(image: torch.Tensor, text: torch.Tensor, caption_index: torch.Tensor,
              logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between ``B`` images and ``U`` unique captions (image ``i`` has caption
    ``caption_index[i]``; a caption's positives are all images that carry it)."""
    logits = logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    loss_i = F.cross_entropy(logits, caption_index)
    pos = (caption_index[None, :] == torch.arange(text.shape[0], device=image.device)[:, None]).float()
    loss_t = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def simclr_loss(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent: each view's positive is the other view of the same image, all else negatives."""
    z = F.normalize(torch.cat([view1, view2]), dim=-1)
    n = view1.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


# --- checkpoints -------------------------------------------------------------------------------

def fingerprint(cfg: TrainSettings, n_items: int) -> str:
    data = {k: v for k, v in cfg.model_dump().items() if k not in _RESUME_FREE}
    data["n_items"] = n_items
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_folder(cfg: TrainSettings) -> Path:
    if cfg.checkpoint_dir:
        return Path(cfg.checkpoint_dir).expanduser()
    out = Path(cfg.output).expanduser()
    return out.parent / f".{out.name}.checkpoints"


def _save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")  # training state never belongs in git
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".last-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, folder / CHECKPOINT_NAME)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _publish(model: torch.nn.Module, model_cfg: dict, preprocess_cfg: dict, extra: dict, output: Path) -> None:
    """Write the model folder under a temporary name, then swap it into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    old = output.parent / f".{output.name}.old-{os.getpid()}"
    try:
        save_model_folder(model, model_cfg, tmp, preprocess_cfg, extra)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model folder is meant to be shared
        for file in tmp.iterdir():
            os.chmod(file, 0o644)
        if output.exists():
            os.replace(output, old)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


# --- the loop ----------------------------------------------------------------------------------

def train(cfg: TrainSettings, *, resume: bool = False, stop_after: int | None = None, init_only: bool = False,
          progress: bool = True, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train as ``cfg`` says; write the model folder to ``cfg.output`` (unless stopped early).

    ``init_only`` writes the freshly initialised model (a random-init baseline with this seed).
    """
    start_time = time.perf_counter()
    log = log or (lambda _msg: None)
    objective = objective_of(cfg)
    if objective == "simclr" and cfg.freeze_image:
        raise ClipdexError("the simclr objective trains the image tower: freeze_image makes it a no-op")
    if cfg.freeze_image and cfg.freeze_text:
        raise ClipdexError("both towers frozen: nothing to train")
    if len(cfg.image_mean) != 3 or len(cfg.image_std) != 3 or min(cfg.image_std) <= 0:
        raise ClipdexError("train.image_mean and train.image_std need three values (std > 0)")
    ckpt_dir = checkpoint_folder(cfg)
    if resume and not (ckpt_dir / CHECKPOINT_NAME).is_file():
        raise ClipdexError(f"--resume: no checkpoint at {ckpt_dir / CHECKPOINT_NAME}")
    data = load_training_set(cfg)
    if objective == "clip" and not data.captions:
        raise ClipdexError(f"source '{cfg.source}' has no captions: use objective = 'simclr'")
    if len(data) < 2:
        raise ClipdexError(f"need at least 2 training images, found {len(data)}")
    device = pick_device(cfg.device)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    model, model_cfg = build_model(cfg)
    model = model.to(device).train()
    if cfg.freeze_image:
        model.visual.eval()  # frozen means frozen: no batch-norm statistics updates either
    tokenizer = open_clip.get_tokenizer(f"{LOCAL_DIR}{_cfg_dir(model_cfg)}") if objective == "clip" else None
    size = image_size_of(model)
    log(f"decoding {len(data)} images at {size}px")
    pixels = decode_all(data, size)

    batch = min(cfg.batch_size, len(data))
    per_epoch = max(1, len(data) // batch)
    total = 0 if init_only else (cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch)))
    trainable = [(n, p) for n, p in model.named_parameters()
                 if not (cfg.freeze_image and n.startswith("visual."))
                 and not ((cfg.freeze_text or objective == "simclr") and not n.startswith("visual."))]
    for n, p in model.named_parameters():
        p.requires_grad_(any(n == t for t, _ in trainable))
    if objective == "clip":
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1 / cfg.init_temperature))
    optimizer = torch.optim.AdamW(_param_groups(trainable, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98),
                                  eps=1e-6)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    aug = AugmentConfig(cfg.aug_scale_min, cfg.aug_flip, cfg.aug_jitter)
    ssl_aug = AugmentConfig(cfg.ssl_scale_min, cfg.aug_flip, cfg.ssl_jitter)
    print_ = fingerprint(cfg, len(data))

    step = 0
    if resume:
        file = ckpt_dir / CHECKPOINT_NAME
        state = torch.load(file, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != print_:
            raise ClipdexError(f"--resume: {file} was written with different training settings or data")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        step = int(state["step"])
        log(f"resuming at step {step} of {total}")

    def checkpoint() -> None:
        _save_checkpoint(ckpt_dir, {"fingerprint": print_, "step": step, "model": model.state_dict(),
                                    "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                    "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state()})

    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, disable=not progress, unit="step", dynamic_ncols=True, leave=True)
    loss_value = float("nan")
    order_epoch, order = -1, torch.empty(0, dtype=torch.long)
    first_step, loop_start = step, time.perf_counter()
    while step < total and (stop_after is None or step < stop_after):
        epoch, k = divmod(step, per_epoch)
        if epoch != order_epoch:
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            order_epoch = epoch
        idx = order[k * batch:(k + 1) * batch]
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, cfg.lr, cfg.warmup_steps)
        autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
        with autocast:
            if objective == "clip":
                x = normalize(augment(pixels[idx], aug, gen), cfg.image_mean, cfg.image_std).to(device)
                captions = _pick_captions(data, idx.tolist(), cfg, step)
                uniq = sorted(set(captions))
                where = {c: i for i, c in enumerate(uniq)}
                target = torch.tensor([where[c] for c in captions], device=device)
                with torch.set_grad_enabled(not cfg.freeze_image):
                    image = model.encode_image(x)
                with torch.set_grad_enabled(not cfg.freeze_text):
                    text = model.encode_text(tokenizer(uniq).to(device))
                loss = clip_loss(image.float(), text.float(), target, model.logit_scale.float())
            else:
                crops = pixels[idx]
                v1 = normalize(augment(crops, ssl_aug, gen), cfg.image_mean, cfg.image_std).to(device)
                v2 = normalize(augment(crops, ssl_aug, gen), cfg.image_mean, cfg.image_std).to(device)
                feats = model.encode_image(torch.cat([v1, v2])).float()
                loss = simclr_loss(feats[: len(idx)], feats[len(idx):], cfg.ssl_temperature)
        if not torch.isfinite(loss):
            raise ClipdexError(f"loss became {loss.item()} at step {step}: lower train.lr")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        loss_value = float(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
        if not progress and step % 100 == 0:
            rate = (step - first_step) / max(time.perf_counter() - loop_start, 1e-9)
            log(f"step {step}/{total} loss {loss_value:.4f} ({rate:.2f} steps/s)")
        if step % cfg.checkpoint_every == 0 or (stop_after is not None and step == stop_after):
            checkpoint()
    bar.close()
    seconds = time.perf_counter() - start_time
    if step < total:
        checkpoint()
        return TrainResult(None, step, total, loss_value, seconds)
    output = Path(cfg.output).expanduser()
    preprocess_cfg = {"size": size, "mode": "RGB", "mean": list(cfg.image_mean), "std": list(cfg.image_std),
                      "interpolation": "bicubic", "resize_mode": "shortest"}
    extra = {"objective": objective, "source": cfg.source, "data": data.name, "images": len(data),
             "steps": step, "final_loss": round(loss_value, 5), "train_seconds": round(seconds, 1),
             "templates": data.templates if data.class_names else [], "class_names": data.class_names or [],
             "settings": cfg.model_dump(exclude={"model_cfg"})}
    _publish(model.eval().cpu(), model_cfg, preprocess_cfg, extra, output)
    return TrainResult(output, step, total, loss_value, seconds)


def _pick_captions(data: ImageSet, idx: list[int], cfg: TrainSettings, step: int) -> list[str]:
    """One caption per image: the same caption slot for the whole batch, or a random one per image."""
    assert data.captions is not None
    rng = np.random.default_rng([cfg.seed, step])
    if cfg.caption_choice == "per_batch":
        slot = int(rng.integers(1 << 30))
        return [data.captions[i][slot % len(data.captions[i])] for i in idx]
    return [data.captions[i][int(rng.integers(len(data.captions[i])))] for i in idx]


_CFG_DIRS: dict[str, str] = {}


def _cfg_dir(model_cfg: dict[str, Any]) -> str:
    """A folder holding only ``model_cfg`` (open_clip reads the tokenizer settings from it)."""
    key = json.dumps(model_cfg, sort_keys=True)
    if key not in _CFG_DIRS or not Path(_CFG_DIRS[key]).is_dir():
        folder = tempfile.mkdtemp(prefix="clipdex-cfg-")
        Path(folder, CONFIG_NAME).write_text(json.dumps({"model_cfg": model_cfg}))
        _CFG_DIRS[key] = folder
    return _CFG_DIRS[key]


__all__ = ["FMNIST_TEMPLATES", "TrainResult", "build_model", "clip_loss", "lr_at", "simclr_loss", "train"]
