"""Inference precision: which numeric path each tower runs on, chosen per machine by what its CPU has.

``[model] precision``:

* ``fp32``: full precision everywhere.
* ``fp16``: fp16 autocast (CUDA only; fp16/bf16 matmuls are many times slower on CPUs without native support).
* ``int8``: dynamic int8 quantization of every Linear layer of both towers (CPU only), the attention
  projections included (retrieval.model.quantize).
* ``bf16``: both towers' weights cast to bfloat16 (``model.to(torch.bfloat16)``), bf16 inputs. Fast where
  the CPU has native bf16 dot products (AMX tiles, or AVX512-BF16); correct (but slow) on any CPU.
* ``auto``: fp16 on CUDA; on a CPU the image tower at :func:`cpu_image_precision` of the CPU's flags
  (bf16 with AMX or AVX512-BF16, int8 elsewhere) and the text tower at int8 (short query texts: int8 beats bf16 even
  with AMX). Measured in docs/benchmarks.md, "Engine: precision and ingest".

A collection records the precision of its image vectors (the image tower's); queries of another precision
may search it where :data:`MIXABLE` says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from retrieval.errors import ClipdexError

if TYPE_CHECKING:  # this module is read by `clipdex status`, which never imports torch
    import torch

Precision = Literal["auto", "fp32", "int8", "fp16", "bf16"]
PRECISIONS = ("fp32", "int8", "bf16", "fp16")

CPU_AUTO: str = "int8"
"""``auto``'s choice on a CPU without native bf16 (AVX2 only): int8 lost at most 0.3 points on any eval
metric (quality table); bf16 there is about 25x slower than int8 for a ViT-B-32 image tower."""
AMX_FLAGS = frozenset({"amx_bf16", "amx_tile"})
"""/proc/cpuinfo flags under which bf16 weights are ``auto``'s image precision: 2.3-2.7x int8 with AMX."""
AVX512_BF16 = "avx512_bf16"
"""The other such flag (e.g. AMD Zen 4/5): bf16 1.12-1.56x int8 on a 2-core EPYC with it and no AMX."""
TEXT_AUTO: str = "int8"
"""``auto``'s text tower on any CPU: a one-query text is 2-5x slower in bf16 than in int8, even with AMX."""

MIXABLE: frozenset[frozenset[str]] = frozenset({
    frozenset({"fp32", "int8"}), frozenset({"fp32", "fp16"}), frozenset({"fp32", "bf16"}),
    frozenset({"int8", "bf16"})})
"""Pairs of precisions whose vectors may share a collection. fp32/int8, fp32/bf16 and int8/bf16: measured
(benchmarks/precision_drift.py: cosine to fp32 >= 0.99 per vector, every eval metric of queries at one
precision against a collection built at the other within 0.5 points; the ONNX Runtime fp32/int8 query
encoders are the same numeric paths). fp32/fp16: what clipdex always did (ingest on a GPU, search on a
CPU); fp16 autocast keeps fp32 accumulation, but its drift is not measured here (no GPU). fp16 with int8
or bf16: not measured."""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (or of ``cpuinfo``'s text); empty where it cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_image_precision(flags: Iterable[str]) -> str:
    """``auto``'s image-tower precision for a CPU with these flags: bf16 where it has native bf16 dot products
    (AMX tiles, or AVX512-BF16), int8 otherwise."""
    have = set(flags)
    return "bf16" if have >= AMX_FLAGS or AVX512_BF16 in have else CPU_AUTO


def resolve(precision: str, device: torch.device, flags: Iterable[str] | None = None) -> str:
    """The concrete image-tower precision (what a collection records) for ``precision`` on ``device``."""
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return cpu_image_precision(cpu_flags() if flags is None else flags)
    _check(precision, device)
    return precision


def resolve_text(precision: str, device: torch.device) -> str:
    """The concrete text-tower precision for ``precision`` on ``device``."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else TEXT_AUTO
    _check(precision, device)
    return precision


def _check(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ClipdexError(f"unknown model.precision '{precision}' (auto, fp32, int8, bf16 or fp16)")
    if precision == "fp16" and device.type != "cuda":
        raise ClipdexError("model.precision = 'fp16' needs a CUDA device (on a CPU use 'int8', 'bf16' or 'fp32')")
    if precision == "int8" and device.type != "cpu":
        raise ClipdexError("model.precision = 'int8' runs on the CPU only (on CUDA use 'fp16' or 'fp32')")


def mixable(built: str, now: str) -> bool:
    """May vectors encoded at precision ``now`` meet a collection built at ``built``?"""
    return built == now or frozenset({built, now}) in MIXABLE


def mixes_with(built: str) -> list[str]:
    """The precisions whose queries may search a collection built at ``built``."""
    return [p for p in PRECISIONS if mixable(built, p)]

