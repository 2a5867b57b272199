"""Inference precision: which numeric path the encoders run on, and int8 quantization for CPUs.

``[model] precision``:

* ``fp32``: full precision everywhere.
* ``fp16``: fp16 autocast (CUDA only; fp16/bf16 matmuls are many times slower on CPUs without native support).
* ``int8``: dynamic int8 quantization of every Linear layer of both towers (CPU only), the attention
  projections included (retrieval.model.quantize).
* ``auto``: fp16 on CUDA, :data:`CPU_AUTO` on CPU (chosen by the quality table in the README).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from retrieval.errors import ClipdexError

if TYPE_CHECKING:  # this module is read by `clipdex status`, which never imports torch
    import torch

Precision = Literal["auto", "fp32", "int8", "fp16"]

CPU_AUTO: str = "int8"
"""What ``auto`` means on a CPU: int8 lost at most 0.3 points on any eval metric (README, Performance)."""

MIXABLE: frozenset[frozenset[str]] = frozenset({frozenset({"fp32", "int8"}), frozenset({"fp32", "fp16"})})
"""Pairs of precisions whose vectors may share a collection. fp32/int8: measured (benchmarks/precision_drift.py:
cosine to fp32 >= 0.99 per vector, every eval metric of int8 queries against an fp32 collection within
0.5 points). fp32/fp16: what clipdex always did (ingest on a GPU, search on a CPU); fp16 autocast keeps
fp32 accumulation, but its drift is not measured here (no GPU). int8/fp16: neither measured nor needed."""


def resolve(precision: str, device: torch.device) -> str:
    """The concrete precision (``fp32``/``fp16``/``int8``) for ``precision`` on ``device``."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else CPU_AUTO
    if precision == "fp16" and device.type != "cuda":
        raise ClipdexError("model.precision = 'fp16' needs a CUDA device (on a CPU use 'int8' or 'fp32')")
    if precision == "int8" and device.type != "cpu":
        raise ClipdexError("model.precision = 'int8' runs on the CPU only (on CUDA use 'fp16' or 'fp32')")
    if precision not in ("fp32", "fp16", "int8"):
        raise ClipdexError(f"unknown model.precision '{precision}' (auto, fp32, int8 or fp16)")
    return precision


def mixable(built: str, now: str) -> bool:
    """May vectors encoded at precision ``now`` meet a collection built at ``built``?"""
    return built == now or frozenset({built, now}) in MIXABLE


def mixes_with(built: str) -> list[str]:
    """The precisions whose queries may search a collection built at ``built``."""
    return [p for p in ("fp32", "int8", "fp16") if mixable(built, p)]

