"""``clipdex distill``: a small student image tower learns a teacher's image vectors; no labels, no captions.

The student is built inside a model whose text tower (and temperature) are the teacher's, frozen:
only the image tower trains, so the saved folder answers text queries with the teacher's text
tower and image queries with the student. The loss pulls each student vector to the teacher's
vector of the same crop (cosine or MSE) and adds an InfoNCE term between student and teacher
vectors of the batch, which keeps the teacher's neighbourhoods. Loop, schedule, checkpoints and
``--resume`` are :mod:`retrieval.training.loop`'s, exactly as for ``train``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retrieval.augment import apply, normalize
from retrieval.errors import ClipdexError
from retrieval.model.torch_backend import image_size_of
from retrieval.settings import DistillSettings, Settings
from retrieval.training.checkpoint import CHECKPOINT_NAME, check_output, checkpoint_folder, fingerprint, publish
from retrieval.training.loop import RunOptions, prepare, run_loop
from retrieval.training.losses import distill_loss
from retrieval.training.model import create, decode_all, model_config
from retrieval.training.targets import (
    Teacher,
    cached_targets,
    collection_targets,
    load_images,
    load_teacher,
    view_params,
)

RESUME_FREE = {"output", "checkpoint_dir", "checkpoint_every", "threads", "device"}


@dataclass
class DistillResult:
    output: Path | None
    steps: int
    total_steps: int
    loss: float
    seconds: float
    teacher_pass: bool
    """Whether this run embedded images with the teacher (False: cache or collection)."""


def student_config(teacher_cfg: dict[str, Any], student_cfg: dict[str, Any], project: bool,
                   teacher_dim: int, student_name: str) -> dict[str, Any]:
    """The distilled model's architecture: the student's image tower, everything else the teacher's."""
    if "vision_cfg" not in student_cfg:
        raise ClipdexError(f"distill.student: {student_name} has no vision_cfg")
    student_dim = int(student_cfg.get("embed_dim", 0))
    if student_dim != teacher_dim and not project:
        raise ClipdexError(f"the student {student_name} outputs {student_dim}-d vectors and the teacher "
                           f"{teacher_dim}-d: give the student embed_dim = {teacher_dim} or add --project "
                           "(distill.project) to learn a projection")
    return {**teacher_cfg, "embed_dim": teacher_dim, "vision_cfg": student_cfg["vision_cfg"]}


def build_student(cfg: DistillSettings, teacher: Teacher, combined_cfg: dict[str, Any],
                  student_cfg: dict[str, Any], log: Callable[[str], None]) -> torch.nn.Module:
    """The combined model: a (random or given) student image tower and the teacher's other weights."""
    model = create(combined_cfg)
    teacher_state = teacher.encoder.model.state_dict()
    rest = {k: v for k, v in teacher_state.items() if not k.startswith("visual.")}
    missing, unexpected = model.load_state_dict(rest, strict=False)
    missing = [k for k in missing if not k.startswith("visual.")]
    if missing or unexpected:
        raise ClipdexError(f"cannot put the teacher's text tower beside the student ({(missing + unexpected)[0]})")
    if cfg.student and (cfg.student_pretrained or cfg.student.startswith("local-dir:")):
        given = create(student_cfg, cfg.student, cfg.student_pretrained).visual.state_dict()
        own = model.visual.state_dict()
        same = {k: v for k, v in given.items() if k in own and own[k].shape == v.shape}
        model.visual.load_state_dict(same, strict=False)
        log(f"student starts from {cfg.student} ({len(same)} of {len(own)} image-tower tensors)")
    return model


def distill(cfg: DistillSettings, store_settings: Settings | None = None, *, resume: bool = False,
            stop_after: int | None = None, progress: bool = True,
            log: Callable[[str], None] | None = None) -> DistillResult:
    """Distil the teacher's image tower into the student as ``cfg`` says; write ``cfg.output``.

    ``store_settings``: where ``cfg.from_collection`` lives (the ``[store]`` of the run's config).
    """
    start_time = time.perf_counter()
    opts = RunOptions(resume, stop_after, False, progress, log or (lambda _msg: None))
    output = Path(cfg.output).expanduser()
    check_output(output)
    ckpt_dir = checkpoint_folder(cfg.output, cfg.checkpoint_dir)
    if resume and not (ckpt_dir / CHECKPOINT_NAME).is_file():
        raise ClipdexError(f"--resume: no checkpoint at {ckpt_dir / CHECKPOINT_NAME}")
    if cfg.from_collection and cfg.data:
        raise ClipdexError("give --data or --from-collection, not both")
    if (cfg.image_mean or cfg.image_std) and (len(cfg.image_mean) != 3 or len(cfg.image_std) != 3
                                             or min(cfg.image_std) <= 0):
        raise ClipdexError("distill.image_mean and distill.image_std need three values (std > 0)")
    teacher = load_teacher(cfg)
    device = prepare(cfg)  # threads and seeds; after the teacher's load, which sets all cores
    student_cfg = model_config(cfg.student, cfg.student_pretrained, cfg.student_cfg, "distill.student")
    combined_cfg = student_config(teacher.model_cfg, student_cfg, cfg.project, teacher.encoder.dim,
                                  cfg.student or "distill.student_cfg")
    if cfg.from_collection:
        data, targets, targets_id = collection_targets(store_settings or Settings(), cfg.from_collection, teacher,
                                                       opts.log)
        params, passed = view_params(len(data), cfg.model_copy(update={"views": 1})), False
    else:
        data = load_images(cfg)
        if len(data) < 2:
            raise ClipdexError(f"need at least 2 training images, found {len(data)}")
        params = view_params(len(data), cfg)
        targets, targets_id, passed = cached_targets(teacher, data, params, ckpt_dir, opts.log, progress)
    model = build_student(cfg, teacher, combined_cfg, student_cfg, opts.log).to(device)
    model.eval()
    model.visual.train()  # only the image tower learns; the teacher's text tower stays as it was
    mean, std = list(cfg.image_mean or teacher.mean), list(cfg.image_std or teacher.std)
    size = image_size_of(model)
    opts.log(f"decoding {len(data)} images at {size}px")
    pixels = decode_all(data, size)
    views = params.shape[1]
    trainable = [(n, p) for n, p in model.named_parameters() if n.startswith("visual.")]

    def distill_step(idx: torch.Tensor, gen: torch.Generator, step: int) -> torch.Tensor:
        view = torch.randint(views, (len(idx),), generator=gen)
        x = normalize(apply(pixels[idx], params[idx, view]), mean, std).to(device)
        student = model.encode_image(x).float()
        return distill_loss(student, targets[idx, view].to(device), kind=cfg.feature_loss,
                            feature_weight=cfg.feature_weight, contrastive_weight=cfg.contrastive_weight,
                            temperature=cfg.temperature)

    print_ = fingerprint(cfg.model_dump(), RESUME_FREE, n_items=len(data), targets=targets_id)
    run = run_loop(model, trainable, distill_step, len(data), cfg, device, ckpt_dir, print_, opts)
    seconds = time.perf_counter() - start_time
    if run.steps < run.total_steps:
        return DistillResult(None, run.steps, run.total_steps, run.loss, seconds, passed)
    ident = teacher.encoder.identity
    preprocess_cfg = {"size": size, "mode": "RGB", "mean": mean, "std": std, "interpolation": "bicubic",
                      "resize_mode": "shortest"}
    extra = {"objective": "distill", "student_of": teacher.description,
             "teacher": {"name": ident.name, "pretrained": ident.pretrained, "dim": ident.dim},
             "data": data.name, "images": len(data), "views": views, "steps": run.steps,
             "final_loss": round(run.loss, 5), "train_seconds": round(seconds, 1),
             "settings": cfg.model_dump(exclude={"student_cfg"})}
    publish(model.eval().cpu(), combined_cfg, preprocess_cfg, extra, output)
    return DistillResult(output, run.steps, run.total_steps, run.loss, seconds, passed)
