"""Make ``import torchvision`` (and so ``import open_clip``) work on CPU-only torch.

The torchvision wheel that matches torch 2.13.0 on PyPI is a CUDA build: its compiled
operators fail to load against the CPU torch wheel, and ``import torchvision`` then dies on
``operator torchvision::nms does not exist``. clipdex uses none of those operators (only
transforms), so when the extension cannot load we declare the two schemas torchvision's
Python code looks up at import time. Where the extension does load (CUDA torch), nothing
is changed.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_DONE = False


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision: nothing to patch, let the real import error speak
    import torch

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
    import torch

    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - must stay alive
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    globals()["_LIBRARY"] = lib


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs the shim the first time anything imports torchvision, then lets the normal import go on.

    So ``import retrieval`` stays cheap (no torch) for commands that never embed anything.
    """

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "torchvision" and not _DONE:
            ensure_torchvision_importable()
        return None


def install_hook() -> None:
    """Arrange for :func:`ensure_torchvision_importable` to run before torchvision first loads."""
    if "torchvision" in sys.modules:
        ensure_torchvision_importable()
    elif not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


install_hook()
