"""Building the model to train: an open_clip architecture, a saved folder or a ``model_cfg`` table."""

from __future__ import annotations

import importlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval import _torchvision_shim  # noqa: F401  (before open_clip)
from retrieval.augment import to_uint8
from retrieval.datasets import ImageSet
from retrieval.errors import ClipdexError, first_line
from retrieval.model.torch_backend import CONFIG_NAME, LOCAL_DIR, quiet_open_clip

open_clip = importlib.import_module("open_clip")  # only after the torchvision shim above


def model_config(arch: str, pretrained: str, model_cfg: dict[str, Any], what: str) -> dict[str, Any]:
    """The open_clip ``model_cfg`` of ``arch`` (a name or ``local-dir:PATH``), or of the table ``model_cfg``.

    ``what`` names the settings in messages (``train.arch``, ``distill.student``).
    """
    if arch.startswith(LOCAL_DIR):
        folder = Path(arch[len(LOCAL_DIR):]).expanduser()
        if not (folder / CONFIG_NAME).is_file():
            raise ClipdexError(f"{what}: {folder} has no {CONFIG_NAME}")
        try:
            return json.loads((folder / CONFIG_NAME).read_text())["model_cfg"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ClipdexError(f"{what}: {folder / CONFIG_NAME} is not a model config ({exc})") from None
    if arch:
        cfg = open_clip.get_model_config(arch)
        if cfg is None:
            raise ClipdexError(f"unknown open_clip architecture '{arch}'")
        if pretrained and not (pretrained in open_clip.list_pretrained_tags_by_model(arch)
                               or Path(pretrained).is_file()):
            raise ClipdexError(f"{what} pretrained '{pretrained}' is neither a tag of {arch} nor a checkpoint file")
        return cfg
    if not model_cfg:
        raise ClipdexError(f"set {what} (an open_clip architecture) or its model_cfg table")
    return json.loads(json.dumps(model_cfg))


def create(model_cfg: dict[str, Any], arch: str = "", pretrained: str = "") -> torch.nn.Module:
    """An open_clip model: ``arch`` with its weights (tag, file or folder), else ``model_cfg`` at random."""
    try:
        with quiet_open_clip():
            if arch.startswith(LOCAL_DIR):
                return open_clip.create_model(f"{LOCAL_DIR}{Path(arch[len(LOCAL_DIR):]).expanduser()}")
            if arch and model_cfg == open_clip.get_model_config(arch):
                return open_clip.create_model(arch, pretrained=pretrained or None)
            return open_clip.create_model(f"{LOCAL_DIR}{cfg_dir(model_cfg)}")
    except ClipdexError:
        raise
    except Exception as exc:  # open_clip raises many types for bad configs
        msg = first_line(exc)
        raise ClipdexError(f"cannot build the model: {msg}") from None


def build_model(arch: str, pretrained: str, model_cfg: dict[str, Any],
                what: str = "train.arch") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Create the model to train and its architecture config (for the saved folder)."""
    cfg = model_config(arch, pretrained, model_cfg, what)
    return create(cfg, arch, pretrained), cfg


def decode_range(data: ImageSet, start: int, stop: int, size: int) -> torch.Tensor:
    """Images ``start:stop`` of ``data`` as one ``(n, 3, size, size)`` uint8 tensor."""
    out = np.empty((stop - start, 3, size, size), dtype=np.uint8)
    for i in range(start, stop):
        src = data.images[i]
        if isinstance(src, np.ndarray) and src.shape == (size, size):
            out[i - start] = src[None]  # grayscale at model size: no resampling
        else:
            out[i - start] = to_uint8(data.load(i), size)
    return torch.from_numpy(out)


def decode_all(data: ImageSet, size: int) -> torch.Tensor:
    """Every image of ``data`` as one ``(N, 3, size, size)`` uint8 tensor."""
    return decode_range(data, 0, len(data), size)


_CFG_DIRS: dict[str, str] = {}


def cfg_dir(model_cfg: dict[str, Any]) -> str:
    """A folder holding only ``model_cfg`` (open_clip reads models and tokenizer settings from it)."""
    key = json.dumps(model_cfg, sort_keys=True)
    if key not in _CFG_DIRS or not Path(_CFG_DIRS[key]).is_dir():
        folder = tempfile.mkdtemp(prefix="clipdex-cfg-")
        Path(folder, CONFIG_NAME).write_text(json.dumps({"model_cfg": model_cfg}))
        _CFG_DIRS[key] = folder
    return _CFG_DIRS[key]


def tokenizer_for(model_cfg: dict[str, Any]) -> Any:
    return open_clip.get_tokenizer(f"{LOCAL_DIR}{cfg_dir(model_cfg)}")
