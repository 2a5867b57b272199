"""The objectives: CLIP's image-text InfoNCE, SimCLR's NT-Xent and the distillation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """How far the student's unit vectors are from the teacher's: mean ``1 - cos`` or mean squared error."""
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    if kind == "mse":
        return ((s - t) ** 2).sum(-1).mean()
    return (1 - (s * t).sum(-1)).mean()


def relational_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between student and teacher vectors of a batch: each student vector must be
    nearer its own teacher vector than the teacher vectors of the other images, and vice versa."""
    logits = F.normalize(student, dim=-1) @ F.normalize(teacher, dim=-1).T / temperature
    target = torch.arange(len(student), device=student.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, *, kind: str = "cosine", feature_weight: float = 1.0,
                 contrastive_weight: float = 1.0, temperature: float = 0.05) -> torch.Tensor:
    """``feature_weight`` x :func:`feature_loss` + ``contrastive_weight`` x :func:`relational_loss`."""
    loss = feature_weight * feature_loss(student, teacher, kind)
    if contrastive_weight > 0:
        loss = loss + contrastive_weight * relational_loss(student, teacher, temperature)
    return loss
