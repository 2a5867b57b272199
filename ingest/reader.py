"""The reader stage: hash, decode and preprocess files in DataLoader worker processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ingest.decode import DecodeError, content_hash, load_image, time_limit
from ingest.exif import exif_payload, upright_size
from ingest.file_result import FileResult
from ingest.scan import ScannedFile


@dataclass
class Batch:
    results: list[FileResult]
    pixels: torch.Tensor | None  # stacked pixels of the results whose status is "image", in order


class ImageFiles(Dataset[FileResult]):
    """Files to (re)index. A file whose content hash is in ``known_hashes`` is not decoded."""

    def __init__(self, files: Sequence[ScannedFile], preprocess: Callable[[Image.Image], torch.Tensor], *,
                 known_hashes: frozenset[str], max_megapixels: float, file_timeout_s: float, draft_size: int):
        self.files = list(files)
        self.preprocess = preprocess
        self.known_hashes = known_hashes
        self.max_megapixels = max_megapixels
        self.file_timeout_s = file_timeout_s
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> FileResult:
        return read_file(self.files[index], self.preprocess, known_hashes=self.known_hashes,
                         max_megapixels=self.max_megapixels, file_timeout_s=self.file_timeout_s,
                         draft_size=self.draft_size)


def read_file(file: ScannedFile, preprocess: Callable[[Image.Image], torch.Tensor], *,
              known_hashes: frozenset[str] | set[str], max_megapixels: float, file_timeout_s: float,
              draft_size: int) -> FileResult:
    """Hash one file, then (unless its hash is known) decode and preprocess it; never raises.

    The per-file work of both runners: the DataLoader workers (:class:`ImageFiles`) and the Ray tasks
    (``ingest.ray_stages``).
    """
    digest = ""
    try:
        with time_limit(file_timeout_s):
            digest = content_hash(file.path)
            if digest in known_hashes:
                return FileResult(file, "known", hash=digest)
            image = load_image(file.path, max_megapixels=max_megapixels, draft_size=draft_size)
            meta = _header_meta(file.path)
            pixels = preprocess(image)
    except DecodeError as exc:
        return FileResult(file, "failed", error=str(exc), unreadable=not digest)
    except OSError as exc:
        return FileResult(file, "failed", error=exc.strerror or str(exc), unreadable=not digest)
    except Exception as exc:  # a decoder bug must not end the run
        return FileResult(file, "failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0],
                          unreadable=not digest)
    return FileResult(file, "image", hash=digest, meta=meta, pixels=pixels)


def _header_meta(path: str) -> dict[str, Any]:
    """Upright size (after EXIF orientation), format and EXIF fields, read from the header only."""
    with Image.open(path) as raw:
        width, height = upright_size(raw)
        return {"width": width, "height": height, "format": raw.format or "", **exif_payload(raw)}


def collate(results: list[FileResult]) -> Batch:
    images = [r.pixels for r in results if r.status == "image" and r.pixels is not None]
    for r in results:
        r.pixels = None  # travel once, stacked
    return Batch(results, torch.stack(images) if images else None)


def rebatch(chunks: Iterable[Batch], size: int) -> Iterator[Batch]:
    """Merge small reader chunks into batches of at least ``size`` decoded images or ``size`` files.

    Workers hand over small chunks so the encoder starts after a few images instead of a whole
    batch per worker; the encoder still sees full batches. A run of files that need no decoding
    (known content, failures) flushes at ``size`` files too, so no batch grows without bound.
    """
    results: list[FileResult] = []
    pixels: list[torch.Tensor] = []
    count = 0
    for chunk in chunks:
        results.extend(chunk.results)
        if chunk.pixels is not None:
            pixels.append(chunk.pixels)
            count += chunk.pixels.shape[0]
        if count >= size or len(results) >= size:
            yield Batch(results, _cat(pixels) if pixels else None)
            results, pixels, count = [], [], 0
    if results:
        yield Batch(results, _cat(pixels) if pixels else None)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """The chunks as one batch; pinned chunks (a CUDA ingest) into pinned memory, so the copy to the GPU stays
    asynchronous (``torch.cat`` alone would return pageable memory)."""
    if len(parts) == 1:
        return parts[0]
    if parts[0].is_pinned():
        out = torch.empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype,
                          pin_memory=True)
        return torch.cat(parts, out=out)
    return torch.cat(parts)


def make_loader(dataset: ImageFiles, *, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader of chunks of about a quarter batch (see :func:`rebatch`)."""
    chunk = max(1, batch_size // 4) if workers else batch_size
    workers = min(workers, max(1, len(dataset) // chunk)) if workers else 0
    return DataLoader(dataset, batch_size=chunk, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, prefetch_factor=4 if workers else None,
                      persistent_workers=False, multiprocessing_context="fork" if workers and os.name == "posix"
                      else None)
