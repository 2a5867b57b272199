"""The optimisation loop shared by ``train`` and ``distill``: they differ only in data and loss.

A task hands the loop its model, the parameters to train and ``loss(idx, gen, step)`` for a batch
of item indices. The loop owns the rest: batch order from ``seed`` + epoch, a per-step generator
from ``seed`` + step (augmentation, caption or view choice), AdamW with warm-up + cosine, gradient
clipping, fp16 autocast on CUDA, the progress bar, and checkpoints that make ``--resume`` reach
the same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retrieval.errors import ClipdexError
from retrieval.model.torch_backend import pick_device
from retrieval.settings import LoopSettings
from retrieval.training.checkpoint import load_checkpoint, save_checkpoint

LossFn = Callable[[torch.Tensor, torch.Generator, int], torch.Tensor]


@dataclass
class LoopResult:
    steps: int
    total_steps: int
    loss: float
    seconds: float


@dataclass
class RunOptions:
    """How one invocation runs (not part of the recipe)."""

    resume: bool = False
    stop_after: int | None = None
    init_only: bool = False
    progress: bool = True
    log: Callable[[str], None] = lambda _msg: None


def prepare(cfg: LoopSettings) -> torch.device:
    """Device, CPU threads and seeds, before anything random (the model's initialisation) happens."""
    device = pick_device(cfg.device)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    return device


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * min(1.0, progress)))


def param_groups(params: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """open_clip's convention: no weight decay on gains, biases, norms, embeddings' scale."""
    def no_decay(n: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    return [{"params": [p for n, p in params if no_decay(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in params if not no_decay(n, p)], "weight_decay": weight_decay}]


def total_steps(cfg: LoopSettings, n_items: int, init_only: bool = False) -> tuple[int, int, int]:
    """(batch size, steps per epoch, total steps) for ``n_items`` training items."""
    batch = min(cfg.batch_size, n_items)
    per_epoch = max(1, n_items // batch)
    total = 0 if init_only else (cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch)))
    return batch, per_epoch, total


def run_loop(model: torch.nn.Module, trainable: list[tuple[str, torch.nn.Parameter]], loss_fn: LossFn,
             n_items: int, cfg: LoopSettings, device: torch.device, ckpt_dir: Path, fingerprint: str,
             opts: RunOptions, after_step: Callable[[], None] | None = None) -> LoopResult:
    """Optimise ``trainable`` on ``loss_fn`` as ``cfg`` schedules it; checkpoint into ``ckpt_dir``."""
    start_time = time.perf_counter()
    batch, per_epoch, total = total_steps(cfg, n_items, opts.init_only)
    wanted = {id(p) for _, p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in wanted)
    optimizer = torch.optim.AdamW(param_groups(trainable, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    step = 0
    if opts.resume:
        state = load_checkpoint(ckpt_dir, fingerprint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        step = int(state["step"])
        opts.log(f"resuming at step {step} of {total}")

    def checkpoint() -> None:
        save_checkpoint(ckpt_dir, {"fingerprint": fingerprint, "step": step, "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                   "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state()})

    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, disable=not opts.progress, unit="step", dynamic_ncols=True, leave=True)
    loss_value = float("nan")
    order_epoch, order = -1, torch.empty(0, dtype=torch.long)
    first_step, loop_start = step, time.perf_counter()
    stop_after = opts.stop_after
    while step < total and (stop_after is None or step < stop_after):
        epoch, k = divmod(step, per_epoch)
        if epoch != order_epoch:
            order = torch.randperm(n_items, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            order_epoch = epoch
        idx = order[k * batch:(k + 1) * batch]
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, cfg.lr, cfg.warmup_steps)
        with torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext():
            loss = loss_fn(idx, gen, step)
        if not torch.isfinite(loss):
            raise ClipdexError(f"loss became {loss.item()} at step {step}: lower the learning rate (lr)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if after_step is not None:
            after_step()
        step += 1
        loss_value = float(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
        if not opts.progress and step % 100 == 0:
            rate = (step - first_step) / max(time.perf_counter() - loop_start, 1e-9)
            opts.log(f"step {step}/{total} loss {loss_value:.4f} ({rate:.2f} steps/s)")
        if step % cfg.checkpoint_every == 0 or (stop_after is not None and step == stop_after):
            checkpoint()
    bar.close()
    if step < total:
        checkpoint()
    return LoopResult(step, total, loss_value, time.perf_counter() - start_time)
