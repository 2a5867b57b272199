"""Which engine runs an ingest's image tower, by the CPU's flags: torch, or OpenVINO. No torch here.

``[model] ingest_engine``: ``auto`` runs the image tower of an ingest on OpenVINO where that was measured to win
(a CPU with AVX512-BF16 and no AMX, at bf16: docs/benchmarks.md, "OpenVINO for ingest"), where the ``openvino``
package is installed and the model exports to ONNX; torch everywhere else. ``openvino`` asks for it (an error
line where it cannot run); ``torch`` keeps torch. The choice is a pure function of its inputs (:func:`choose`),
the flags passed as data, as ``precision = "auto"``'s is.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable

from retrieval.errors import ClipdexError
from retrieval.model.precision import AMX_FLAGS, AVX512_BF16, cpu_flags, cpu_image_precision
from retrieval.settings import ModelSettings

ENGINES = ("auto", "torch", "openvino")
RUNS = ("bf16", "fp32")
"""The image precisions OpenVINO runs here (int8 stays on torch: OpenVINO on the int8 export measured slower
than torch at bf16, benchmarks/engines.py)."""


def available() -> bool:
    """Is the ``openvino`` package installed (found without importing it)?"""
    return importlib.util.find_spec("openvino") is not None


def auto_wins(flags: Iterable[str]) -> bool:
    """Does ``auto`` pick OpenVINO on a CPU with these flags? Where it was measured to win: AVX512-BF16 without
    AMX (with AMX, torch's bf16 is not measured against it)."""
    have = set(flags)
    return AVX512_BF16 in have and not have >= AMX_FLAGS


def choose(requested: str, precision: str, device: str, flags: Iterable[str], installed: bool) -> str:
    """The engine of an ingest's image tower: "torch" or "openvino".

    ``requested``: ``[model] ingest_engine``; ``precision``: the image tower's resolved precision; ``device``:
    "cpu" or "cuda"; ``flags``: the CPU's; ``installed``: whether openvino can be imported. Raises a one-line
    ClipdexError where ``openvino`` is asked for and cannot run."""
    if requested == "torch":
        return "torch"
    if requested == "openvino":
        if device != "cpu":
            raise ClipdexError("model.ingest_engine = 'openvino' runs on the CPU; this model runs on "
                               f"{device} (set model.device = \"cpu\", or model.ingest_engine = \"auto\")")
        if precision not in RUNS:
            raise ClipdexError(f"model.ingest_engine = 'openvino' runs bf16 or fp32 images, not {precision} "
                               "(set model.precision, or model.ingest_engine = \"auto\")")
        if not installed:
            raise ClipdexError("model.ingest_engine = 'openvino' but the openvino package is not installed "
                               "(pip install openvino, or set model.ingest_engine = \"auto\")")
        return "openvino"
    if requested != "auto":
        raise ClipdexError(f"unknown model.ingest_engine '{requested}' (auto, torch or openvino)")
    wins = device == "cpu" and precision == "bf16" and auto_wins(flags)
    return "openvino" if wins and installed else "torch"


def for_settings(settings: ModelSettings, device: str, flags: Iterable[str] | None = None,
                 installed: bool | None = None) -> str:
    """:func:`choose` for ``[model]`` settings on ``device`` ("cpu" or "cuda"), the CPU's flags and whether openvino
    is installed read here where not given."""
    if settings.ingest_engine == "torch":
        return "torch"
    have = cpu_flags() if flags is None else frozenset(flags)
    precision = settings.precision
    if precision == "auto":
        precision = "fp16" if device == "cuda" else cpu_image_precision(have)
    return choose(settings.ingest_engine, precision, device, have, available() if installed is None else installed)


def planned(settings: ModelSettings) -> str:
    """What ``clipdex status`` says runs ingest's image tower, without loading anything (a ``device = "auto"``
    model is taken to run on the CPU unless torch, already imported, sees CUDA)."""
    device = settings.device
    if device == "auto":
        torch = sys.modules.get("torch")
        device = "cuda" if torch is not None and torch.cuda.is_available() else "cpu"
    try:
        engine = for_settings(settings, device)
    except ClipdexError as exc:
        return f"torch ({exc})"
    if engine == "torch":
        return "torch"
    precision = cpu_image_precision(cpu_flags()) if settings.precision == "auto" else settings.precision
    return f"openvino {precision}"
