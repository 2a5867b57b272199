"""The Ray Data stages of a distributed ingest: rows of files → decoded pixels → vectors.

Each stage is a plain function or class over numpy batches (``dict[str, np.ndarray]``), so the
runner (``ingest.ray_ingest``) only wires them together. The per-file work is the same
:func:`ingest.reader.read_file` the local DataLoader runs, so both paths produce the same results.

Columns crossing the object store: ``path`` and ``root`` (file system bytes: paths need not be
UTF-8, Arrow strings must be), ``size``, ``mtime_ns``, ``status`` ("image" | "known" | "failed"),
``info`` (JSON: hash, error, unreadable, header metadata), ``pixels`` (the preprocessed float32 tensor as raw
bytes, empty unless the status is "image"), and after the encoder ``vector`` (zeros unless "image").
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ingest.reader import FileResult, read_file
from ingest.scan import ScannedFile


def file_rows(files: Sequence[ScannedFile]) -> list[dict[str, Any]]:
    """The file listing as rows for ``ray.data.from_items``."""
    return [{"path": os.fsencode(f.path), "root": os.fsencode(f.root), "size": f.size, "mtime_ns": f.mtime_ns}
            for f in files]


def _files(batch: dict[str, np.ndarray]) -> list[ScannedFile]:
    return [ScannedFile(os.fsdecode(bytes(p)), int(s), int(m), os.fsdecode(bytes(r)))
            for p, r, s, m in zip(batch["path"], batch["root"], batch["size"], batch["mtime_ns"], strict=True)]


class PortablePreprocess:
    """The encoder's preprocessing, shipped to Ray workers as bytes.

    A torchvision transform unpickled by a fresh worker would import torchvision before clipdex's shim
    (``retrieval._torchvision_shim``) ran; this wrapper unpickles it on first use, after running the shim.
    """

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]):
        from ray import cloudpickle

        self.blob = cloudpickle.dumps(transform)
        self._transform: Callable[[Image.Image], torch.Tensor] | None = transform

    def __getstate__(self) -> dict[str, Any]:
        return {"blob": self.blob, "_transform": None}

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if self._transform is None:
            from retrieval._torchvision_shim import ensure_torchvision_importable

            ensure_torchvision_importable()
            self._transform = pickle.loads(self.blob)
        return self._transform(image)


def decode_batch(batch: dict[str, np.ndarray], *, preprocess: Callable[[Image.Image], torch.Tensor],
                 known_hashes: frozenset[str], max_megapixels: float, file_timeout_s: float,
                 draft_size: int) -> dict[str, np.ndarray]:
    """CPU stage: hash, decode and preprocess every file of the batch (never raises for a bad file)."""
    results = [read_file(f, preprocess, known_hashes=known_hashes, max_megapixels=max_megapixels,
                         file_timeout_s=file_timeout_s, draft_size=draft_size) for f in _files(batch)]
    pixels = [r.pixels.numpy().astype(np.float32, copy=False).tobytes() if r.pixels is not None else b""
              for r in results]
    return {
        "path": batch["path"], "root": batch["root"], "size": batch["size"], "mtime_ns": batch["mtime_ns"],
        "status": np.array([r.status for r in results], dtype=object),
        "info": np.array([json.dumps({"hash": r.hash, "error": r.error, "meta": r.meta, "unreadable": r.unreadable})
                          for r in results], dtype=object),
        "pixels": np.array(pixels, dtype=object),
    }


class EncodeBatch:
    """Encoder stage: one model per actor (a GPU with fp16 autocast where Ray gave it one, else CPU).

    Ray Data builds it without arguments: :func:`encoder_stage` bakes the model settings into a subclass,
    so nothing the constructor needs lives in the object store (a restarted actor can always rebuild).
    """

    model: dict[str, Any] = {}
    threads: int = 1

    def __init__(self) -> None:
        from retrieval.model.torch_backend import TorchEncoder
        from retrieval.settings import ModelSettings

        self.encoder = TorchEncoder.load(ModelSettings.model_validate(self.model))
        if self.encoder.device.type == "cpu":
            torch.set_num_threads(max(1, self.threads))
        size = self.encoder.image_size
        self.shape = (3, size, size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [i for i, s in enumerate(batch["status"]) if s == "image"]
        vectors = np.zeros((len(batch["status"]), self.encoder.dim), dtype=np.float32)
        if rows:
            pixels = np.stack([np.frombuffer(batch["pixels"][i], dtype=np.float32).reshape(self.shape)
                               for i in rows])
            vectors[rows] = self.encoder.encode_images(torch.from_numpy(pixels))
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["vector"] = vectors
        return out


def encoder_stage(model: dict[str, Any], threads: int) -> type[EncodeBatch]:
    """An :class:`EncodeBatch` for this model, constructible without arguments."""
    return type("EncodeBatch", (EncodeBatch,), {"model": model, "threads": threads})


def results_of(batch: dict[str, np.ndarray]) -> tuple[list[FileResult], np.ndarray]:
    """An encoded batch back as the runner's file results, plus the vectors of the "image" ones, in order."""
    results = []
    for file, status, info in zip(_files(batch), batch["status"], batch["info"], strict=True):
        data = json.loads(info)
        results.append(FileResult(file, str(status), hash=data["hash"], error=data["error"], meta=data["meta"],
                                  unreadable=data["unreadable"]))
    images = [i for i, r in enumerate(results) if r.status == "image"]
    return results, np.asarray(batch["vector"], dtype=np.float32)[images]
