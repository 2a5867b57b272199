"""What a student learns from: the teacher, its image vectors (computed once and cached), the views.

Each image has ``views`` views: view 0 is the image itself, views 1.. are augmented crops whose
parameters are drawn once from the seed. The teacher embeds every view once (the expensive part);
the vectors are cached in the run's checkpoint folder, and each training step shows the student a
view and pulls it towards the teacher's vector of that same crop. ``--from-collection`` takes the
vectors of view 0 from a clipdex collection the teacher filled, and needs no teacher pass at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval.augment import AugmentConfig, apply, draw, identity_params, normalize
from retrieval.datasets import ImageSet, fashion_mnist, image_folder
from retrieval.errors import ClipdexError
from retrieval.model.torch_backend import LOCAL_DIR, TorchEncoder
from retrieval.settings import DistillSettings, ModelSettings, Settings
from retrieval.training.checkpoint import atomic_save
from retrieval.training.model import decode_range, model_config

TARGETS_NAME = "teacher-vectors.pt"


@dataclass
class Teacher:
    encoder: TorchEncoder
    settings: ModelSettings
    model_cfg: dict[str, Any]
    size: int
    mean: list[float]
    std: list[float]

    @property
    def description(self) -> str:
        return self.encoder.identity.describe()


def teacher_settings(cfg: DistillSettings) -> ModelSettings:
    if not cfg.teacher:
        raise ClipdexError("distill.teacher (--teacher) is required: an open_clip architecture or local-dir:PATH")
    local = cfg.teacher.startswith(LOCAL_DIR)
    # fp32: the targets are the teacher's exact vectors (and its text tower's weights are copied as they are)
    return ModelSettings(name=cfg.teacher, pretrained="" if local else cfg.teacher_pretrained,
                         device=cfg.device, batch_size=256, precision="fp32")


def load_teacher(cfg: DistillSettings) -> Teacher:
    """The teacher model, loaded as ``ingest`` and ``search`` load models (tag, file or folder)."""
    settings = teacher_settings(cfg)
    encoder = TorchEncoder.load(settings)
    model_cfg = model_config(settings.name, settings.pretrained, {}, "distill.teacher")
    pre = getattr(encoder.model.visual, "preprocess_cfg", {}) or {}
    mean = list(pre.get("mean") or [0.48145466, 0.4578275, 0.40821073])
    std = list(pre.get("std") or [0.26862954, 0.26130258, 0.27577711])
    return Teacher(encoder, settings, model_cfg, encoder.image_size, mean, std)


def load_images(cfg: DistillSettings) -> ImageSet:
    """The student's training images: every image below the ``data`` folders (or Fashion-MNIST's train split)."""
    if cfg.source == "fashion-mnist":
        return fashion_mnist(cfg.data[0] if cfg.data else None, "train")
    if not cfg.data:
        raise ClipdexError("distill.data (--data) needs at least one image folder (or use --from-collection)")
    paths: dict[str, None] = {}
    for folder in cfg.data:
        paths.update(dict.fromkeys(image_folder(folder).images))
    return ImageSet(sorted(paths), name=" ".join(cfg.data))


def view_params(n: int, cfg: DistillSettings) -> torch.Tensor:
    """``(n, views, 7)`` augmentation parameters: view 0 the image itself, the others drawn from the seed."""
    aug = AugmentConfig(cfg.aug_scale_min, cfg.aug_flip, cfg.aug_jitter)
    views = [identity_params(n)]
    for v in range(1, cfg.views):
        views.append(draw(n, aug, torch.Generator().manual_seed(cfg.seed * 7_919 + v)))
    return torch.stack(views, dim=1)


def data_key(data: ImageSet) -> str:
    """Identifies the images: names, sizes and modification times of files; content of in-memory arrays."""
    digest = hashlib.sha256(data.name.encode())
    for src in data.images:
        if isinstance(src, np.ndarray):
            digest.update(src.tobytes())
        else:
            st = os.stat(src)
            digest.update(f"{src}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def targets_key(teacher: Teacher, data: ImageSet, params: torch.Tensor) -> str:
    ident = teacher.encoder.identity
    blob = json.dumps([ident.name, ident.pretrained, ident.dim, teacher.size, teacher.mean, teacher.std,
                       data_key(data), hashlib.sha256(params.numpy().tobytes()).hexdigest()])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.inference_mode()
def teacher_pass(teacher: Teacher, data: ImageSet, params: torch.Tensor, batch: int = 256,
                 on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """The teacher's unit vectors ``(N, views, dim)`` of every view of every image."""
    n, views = params.shape[:2]
    out = torch.empty(n, views, teacher.encoder.dim, dtype=torch.float32)
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        pixels = decode_range(data, start, stop, teacher.size)
        for v in range(views):
            x = normalize(apply(pixels, params[start:stop, v]), teacher.mean, teacher.std)
            out[start:stop, v] = torch.from_numpy(teacher.encoder.encode_images(x))
        if on_batch:
            on_batch(stop - start)
    return out


def cached_targets(teacher: Teacher, data: ImageSet, params: torch.Tensor, folder: Path,
                   log: Callable[[str], None], progress: bool = False) -> tuple[torch.Tensor, str, bool]:
    """:func:`teacher_pass`, computed once per teacher, images and views, cached in ``folder``.

    Returns the vectors, their key and whether the teacher had to run (False: from the cache).
    """
    key = targets_key(teacher, data, params)
    file = folder / TARGETS_NAME
    if file.is_file():
        try:
            cached = torch.load(file, map_location="cpu", weights_only=True)
            if cached.get("key") == key:
                log(f"teacher vectors from the cache {file}")
                return cached["vectors"], key, False
        except Exception:  # an unreadable cache is recomputed, never trusted
            pass
    from tqdm import tqdm

    log(f"teacher pass: {len(data)} images x {params.shape[1]} views")
    with tqdm(total=len(data), disable=not progress, unit="img", dynamic_ncols=True) as bar:
        vectors = teacher_pass(teacher, data, params, on_batch=bar.update)
    atomic_save({"key": key, "vectors": vectors}, file)
    return vectors, key, True


def collection_targets(store_settings: Settings, collection: str, teacher: Teacher,
                       log: Callable[[str], None]) -> tuple[ImageSet, torch.Tensor, str]:
    """Images and teacher vectors ``(N, 1, dim)`` from a clipdex collection the teacher filled.

    Points whose file is gone or changed since it was ingested (size or mtime) are left out.
    """
    from retrieval.index import Index

    settings = store_settings.with_overrides(model=teacher.settings.model_dump(), store={"collection": collection})
    with Index.open(settings, encoder=teacher.encoder) as index:  # refuses a collection of another model
        if index.store.meta() is None:
            raise ClipdexError(f"--from-collection: collection '{collection}' is empty or missing at "
                               f"{index.store.location}")
        rows = [(pid, p) for pid, p in index.store.payloads(("path", "size", "mtime_ns")) if p.get("path")]
        fresh, stale = [], 0
        for pid, p in sorted(rows, key=lambda r: r[1]["path"]):
            try:
                st = os.stat(p["path"])
            except OSError:
                stale += 1
                continue
            if p.get("size", st.st_size) != st.st_size or p.get("mtime_ns", st.st_mtime_ns) != st.st_mtime_ns:
                stale += 1
                continue
            fresh.append((pid, p["path"]))
        vectors: dict[str, np.ndarray] = {}
        for start in range(0, len(fresh), 1024):
            got = index.store.points([pid for pid, _ in fresh[start:start + 1024]])
            vectors.update({pid: vec for pid, (vec, _) in got.items()})
    fresh = [(pid, path) for pid, path in fresh if pid in vectors]
    if stale:
        log(f"--from-collection: {stale} points left out (their files are gone or changed since ingest)")
    if len(fresh) < 2:
        raise ClipdexError(f"--from-collection: collection '{collection}' has {len(fresh)} usable images "
                           "(need at least 2 whose files are unchanged since ingest)")
    data = ImageSet([path for _, path in fresh], name=f"collection:{collection}")
    stacked = np.stack([vectors[pid] for pid, _ in fresh]).astype(np.float32)
    stacked /= np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
    key = hashlib.sha256(stacked.tobytes()).hexdigest()[:16]
    return data, torch.from_numpy(stacked)[:, None, :], key
