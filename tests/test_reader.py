"""The reader stage on real files: decode results, and how chunks are merged for the encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ingest.reader import ImageFiles, collate, make_loader, rebatch
from ingest.scan import scan
from tests.images import pattern


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.resize((8, 8)))).permute(2, 0, 1)


def _dataset(tmp_path: Path, n: int, known: frozenset[str] = frozenset()) -> ImageFiles:
    for i in range(n):
        pattern(i).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "bad.png").write_text("not a picture")
    files, _ = scan([tmp_path])
    return ImageFiles(files, _to_tensor, known_hashes=known, max_megapixels=1.0, file_timeout_s=5.0, draft_size=8)


def test_chunks_are_merged_into_full_batches_in_order(tmp_path: Path):
    dataset = _dataset(tmp_path, 21)
    loader = make_loader(dataset, batch_size=8, workers=2, pin_memory=False)
    assert loader.batch_size == 2  # a quarter batch per worker hand-over
    batches = list(rebatch(loader, 8))
    images = [b.pixels.shape[0] if b.pixels is not None else 0 for b in batches]
    assert all(n >= 8 or len(b.results) >= 8 for n, b in zip(images[:-1], batches, strict=False))
    assert sum(images) == 21
    paths = [r.file.path for b in batches for r in b.results]
    assert paths == [f.path for f in dataset.files]  # every file once, in scan order
    failed = [r for b in batches for r in b.results if r.status == "failed"]
    assert [Path(r.file.path).name for r in failed] == ["bad.png"] and "not an image" in failed[0].error


def test_known_content_is_not_decoded(tmp_path: Path):
    first = _dataset(tmp_path, 3)
    digest = first[0].hash
    again = ImageFiles(first.files, first.preprocess, known_hashes=frozenset({digest}), max_megapixels=1.0,
                       file_timeout_s=5.0, draft_size=8)
    batch = collate([again[i] for i in range(len(again))])
    assert [r.status for r in batch.results].count("known") == 1
    assert batch.pixels is not None and batch.pixels.shape[0] == 2  # the two unknown images only


def test_runs_of_known_and_failed_files_flush_at_the_batch_size(tmp_path: Path):
    """Moved or copied files (known content) and failures never pile up into one giant batch."""
    first = _dataset(tmp_path, 30)
    for i in range(12):
        (tmp_path / f"zz-bad-{i:02d}.png").write_text("not a picture")
    files, _ = scan([tmp_path])
    known = frozenset(first[i].hash for i in range(len(first)) if first[i].status == "image")
    again = ImageFiles(files, first.preprocess, known_hashes=known, max_megapixels=1.0, file_timeout_s=5.0,
                       draft_size=8)
    for workers in (0, 2):
        batches = list(rebatch(make_loader(again, batch_size=8, workers=workers, pin_memory=False), 8))
        sizes = [len(b.results) for b in batches]
        assert sum(sizes) == 43 and all(8 <= n < 8 + 2 for n in sizes[:-1]), sizes
        assert all(b.pixels is None for b in batches)  # nothing decoded: 30 known, 13 failed
        statuses = [r.status for b in batches for r in b.results]
        assert (statuses.count("known"), statuses.count("failed")) == (30, 13)
