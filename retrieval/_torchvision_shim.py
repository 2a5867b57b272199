"""Make ``import torchvision`` (and so ``import open_clip``) work on CPU-only torch.

The torchvision wheel that matches torch 2.13.0 on PyPI is a CUDA build: its compiled
operators fail to load against the CPU torch wheel, and ``import torchvision`` then dies on
``operator torchvision::nms does not exist``. clipdex uses none of those operators (only
transforms), so when the extension cannot load we declare the two schemas torchvision's
Python code looks up at import time. Where the extension does load (CUDA torch), nothing
is changed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_DONE = False


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision: nothing to patch, let the real import error speak
    for location in spec.submodule_search_locations:
        for lib in Path(location).glob("_C*.so"):
            try:
                torch.ops.load_library(str(lib))
                return True
            except (OSError, RuntimeError):
                return False
    return True


def ensure_torchvision_importable() -> None:
    """Define ``torchvision::nms``/``qnms`` schemas if torchvision's compiled ops cannot load."""
    global _DONE
    if _DONE:
        return
    _DONE = True
    if _extension_loads():
        return
    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - must stay alive
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    globals()["_LIBRARY"] = lib


ensure_torchvision_importable()
