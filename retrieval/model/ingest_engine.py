"""Which engine runs an ingest's image tower: torch, or OpenVINO where asked for. No torch here.

``[model] ingest_engine``: ``auto`` (the default) and ``torch`` run it on torch; ``openvino`` runs it on OpenVINO
from the model's ONNX export (retrieval.model.openvino_backend), at bf16 or fp32, or is an error line where it
cannot. ``auto`` does not pick OpenVINO on any CPU yet: on the 2-core EPYC with AVX512-BF16 (no AMX) it was
1.3-3.0x torch's bf16 under load but only 1.07-1.19x on a quieter machine, and a whole 300-image ingest process
was no faster (its start-up is a second longer): docs/benchmarks.md, "OpenVINO for ingest". :func:`auto_wins`
is where a CPU kind goes once it is measured to win there. The choice is a pure function of its inputs
(:func:`choose`), the CPU's flags passed as data, as ``precision = "auto"``'s is.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable

from retrieval.errors import ClipdexError
from retrieval.model.precision import AMX_FLAGS, cpu_flags, cpu_image_precision
from retrieval.settings import ModelSettings

ENGINES = ("auto", "torch", "openvino")
WINS_ON: tuple[frozenset[str], ...] = ()
"""CPU flag sets on which ``auto`` picks OpenVINO at bf16 (AMX excluded: torch's bf16 is not measured against it
there). None yet: ``frozenset({AVX512_BF16})`` is the candidate, measured in docs/benchmarks.md, "OpenVINO for
ingest"; it missed the bar of 1.2x torch in every round on a quieter machine."""
RUNS = ("bf16", "fp32")
"""The image precisions OpenVINO runs here (int8 stays on torch: OpenVINO on the int8 export measured slower
than torch at bf16, benchmarks/engines.py)."""


def available() -> bool:
    """Is the ``openvino`` package installed (found without importing it)?"""
    return importlib.util.find_spec("openvino") is not None


def auto_wins(flags: Iterable[str], wins_on: tuple[frozenset[str], ...] = WINS_ON) -> bool:
    """Does ``auto`` pick OpenVINO on a CPU with these flags (one of ``wins_on``, without AMX)?"""
    have = set(flags)
    return not have >= AMX_FLAGS and any(have >= need for need in wins_on)


def choose(requested: str, precision: str, device: str, flags: Iterable[str], installed: bool,
           wins_on: tuple[frozenset[str], ...] = WINS_ON) -> str:
    """The engine of an ingest's image tower: "torch" or "openvino".

    ``requested``: ``[model] ingest_engine``; ``precision``: the image tower's resolved precision; ``device``:
    "cpu" or "cuda"; ``flags``: the CPU's; ``installed``: whether openvino can be imported; ``wins_on``: where
    ``auto`` picks it (:data:`WINS_ON`). Raises a one-line
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
                               "(pip install 'clipdex[openvino]', or set model.ingest_engine = \"auto\")")
        return "openvino"
    if requested != "auto":
        raise ClipdexError(f"unknown model.ingest_engine '{requested}' (auto, torch or openvino)")
    wins = device == "cpu" and precision == "bf16" and auto_wins(flags, wins_on)
    return "openvino" if wins and installed else "torch"


def for_settings(settings: ModelSettings, device: str, flags: Iterable[str] | None = None,
                 installed: bool | None = None, wins_on: tuple[frozenset[str], ...] = WINS_ON) -> str:
    """:func:`choose` for ``[model]`` settings on ``device`` ("cpu" or "cuda"), the CPU's flags and whether openvino
    is installed read here where not given."""
    if settings.ingest_engine == "torch":
        return "torch"
    have = cpu_flags() if flags is None else frozenset(flags)
    precision = settings.precision
    if precision == "auto":
        precision = "fp16" if device == "cuda" else cpu_image_precision(have)
    return choose(settings.ingest_engine, precision, device, have, available() if installed is None else installed,
                  wins_on)


def _torch_sees_cuda() -> bool:
    """Whether torch, where this process has imported it, sees CUDA. Another thread may be importing torch
    right now (a server's sync loading its model while a status request comes in): a module that is not
    whole yet answers False."""
    torch = sys.modules.get("torch")
    try:
        return torch is not None and bool(torch.cuda.is_available())
    except (AttributeError, ImportError, RuntimeError):
        return False


def planned(settings: ModelSettings) -> str:
    """What ``clipdex status`` says runs ingest's image tower, without loading anything (a ``device = "auto"``
    model is taken to run on the CPU unless torch, already imported, sees CUDA)."""
    device = settings.device
    if device == "auto":
        device = "cuda" if _torch_sees_cuda() else "cpu"
    try:
        engine = for_settings(settings, device)
    except ClipdexError as exc:
        return f"torch ({exc})"
    if engine == "torch":
        return "torch"
    precision = cpu_image_precision(cpu_flags()) if settings.precision == "auto" else settings.precision
    return f"openvino {precision}"
