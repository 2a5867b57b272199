"""``clipdex ingest --ray``: the local ingest's stages on Ray Data, across one machine or many.

file listing (``from_items``, split into blocks) → hash/decode/preprocess tasks on CPUs
(``map_batches``) → a pool of encoder actors (one per GPU, fp16; or N CPU actors) → the driver, which
streams the vectors (``iter_batches``) through the same bookkeeping and writer as a local ingest into
the store (embedded, or a Qdrant server / cluster URL). Planning (what changed, what is gone, offline
roots) is the local runner's too, so ids, payloads and the report are the same.

Every node must see the image files and the model at the same paths (shared storage), as with any
distributed batch job.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ingest.pipeline import STORED_FIELDS, IngestReport, _Run
from ingest.ray_stages import PortablePreprocess, decode_batch, encoder_stage, file_rows, results_of
from ingest.reader import Batch, FileResult
from ingest.records import is_below, path_key
from ingest.scan import ScannedFile, scan
from ingest.writer import AsyncUpserter
from retrieval.encoder import Encoder
from retrieval.errors import ClipdexError
from retrieval.settings import RaySettings, Settings
from retrieval.store import VectorStore

ROWS_PER_BLOCK = 256


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ClipdexError("--ray needs Ray Data: pip install 'clipdex[ray]' (make setup installs it)") from None
    return ray


_ADDRESS = re.compile(r"auto|local|ray://\S+|[A-Za-z0-9_.\-]+:\d{1,5}|\[[0-9A-Fa-f:]+\]:\d{1,5}")


def check_address(address: str) -> str:
    """``address`` if it is one Ray understands, else a one-line :class:`ClipdexError`."""
    if not _ADDRESS.fullmatch(address):
        raise ClipdexError(f"--ray: '{address}' is not a Ray address (auto, local, HOST:PORT or ray://HOST:PORT); "
                           "folders go before --ray")
    return address


def connect(address: str, settings: RaySettings) -> None:
    """Join (``auto`` or an address) or start (``local``) a Ray cluster; reuse one this process already has."""
    check_address(address)
    ray = _import_ray()
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "log_to_driver": True}
    if address == "local" and settings.object_store_mb:
        kwargs["object_store_memory"] = settings.object_store_mb * 1024 * 1024
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        hint = "start one with `ray start --head`, or use --ray local" if address == "auto" else "check the address"
        raise ClipdexError(f"cannot reach a Ray cluster at '{address}' ({hint}): "
                           f"{str(exc).splitlines()[0]}") from None
    except (ValueError, RuntimeError) as exc:
        raise ClipdexError(f"cannot start Ray with address '{address}': {str(exc).splitlines()[0]}") from None


def encoder_pool(settings: Settings) -> dict[str, Any]:
    """``map_batches`` arguments of the encoder stage: pool size and the resources of each actor."""
    ray = _import_ray()
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if settings.model.device != "cpu" else 0
    cpus = float(resources.get("CPU", 1))
    cfg = settings.ray
    if gpus:
        count = cfg.encoders or gpus
        return {"compute": ray.data.ActorPoolStrategy(size=count), "num_gpus": 1, "num_cpus": 1, "threads": 1}
    count = cfg.encoders or max(1, int(cpus // (2 * cfg.encoder_cpus)))
    return {"compute": ray.data.ActorPoolStrategy(size=count), "num_cpus": cfg.encoder_cpus,
            "threads": math.ceil(cfg.encoder_cpus)}


def encoded_batches(files: Sequence[ScannedFile], encoder: Encoder, settings: Settings,
                    known_hashes: frozenset[str], *, progress: bool) -> Iterator[tuple[list[FileResult], np.ndarray]]:
    """Run the Ray stages over ``files``; yield (file results, vectors of the "image" results) per batch."""
    ray = _import_ray()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.verbose_progress = False
    logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.ERROR)
    cfg, batch_size = settings.ray, settings.model.batch_size
    pool = encoder_pool(settings)
    blocks = max(1, min(len(files) // min(ROWS_PER_BLOCK, cfg.decode_batch * 4) or 1, 10_000))
    dataset = ray.data.from_items(file_rows(files), override_num_blocks=blocks)
    dataset = dataset.map_batches(
        decode_batch, batch_size=cfg.decode_batch, batch_format="numpy", num_cpus=cfg.decode_cpus,
        fn_kwargs={"preprocess": PortablePreprocess(encoder.preprocess), "known_hashes": known_hashes,
                   "max_megapixels": settings.ingest.max_megapixels,
                   "file_timeout_s": settings.ingest.file_timeout_s, "draft_size": encoder.image_size})
    with warnings.catch_warnings():  # Ray 2.60 has no named parameter for actor restarts yet
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = dataset.map_batches(
            encoder_stage(settings.model.model_dump(), max(1, int(pool.pop("threads")))),
            batch_size=batch_size, batch_format="numpy", **pool,
            max_restarts=cfg.max_restarts, max_task_retries=cfg.max_restarts)
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
        yield results_of(batch)


class _Encoded:
    """The vectors the Ray encoders already computed, handed to the bookkeeping in place of a model."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors

    def encode_images(self, pixels: object) -> np.ndarray:
        return self.vectors


def ingest_on_ray(roots: Sequence[str], store: VectorStore, encoder: Encoder, settings: Settings, *,
                  address: str, progress: bool = False,
                  on_batch: Callable[[int], None] | None = None) -> IngestReport:
    """Like :func:`ingest.pipeline.ingest`, with hash/decode/encode on a Ray cluster.

    ``on_batch(files)`` is called after each batch of files is stored.
    """
    ingest_settings = settings.ingest
    files, problems = scan(roots, include=ingest_settings.include, exclude=ingest_settings.exclude,
                           follow_symlinks=ingest_settings.follow_symlinks, skip_hidden=ingest_settings.skip_hidden)
    report = IngestReport(failed=[{"path": path_key(p.path), "error": p.error} for p in problems])
    root_keys = [path_key(os.path.abspath(os.path.expanduser(r))) for r in roots]
    stored = {p["path"]: (pid, p) for pid, p in store.payloads(STORED_FIELDS) if "path" in p}
    on_disk = {path_key(f.path) for f in files}
    under_roots = [key for key in stored if any(is_below(key, root) for root in root_keys)]
    if not files and not under_roots:
        raise ClipdexError(f"no image files found in {', '.join(roots)}")
    todo = []
    for file in files:
        old = stored.get(path_key(file.path))
        if old and old[1].get("size") == file.size and old[1].get("mtime_ns") == file.mtime_ns:
            report.unchanged += 1
        else:
            todo.append(file)
    run = _Run(store, on_disk, stored, report)
    if todo:
        connect(address, settings.ray)
        writer = AsyncUpserter(store)
        try:
            for results, vectors in encoded_batches(todo, encoder, settings, frozenset(run.by_hash),
                                                    progress=progress):
                run.handle(Batch(results, torch.empty(0) if len(vectors) else None), _Encoded(vectors), writer)
                if on_batch is not None:
                    on_batch(len(results))
        finally:
            writer.close()
    stale = [stored[key][0] for key in under_roots if key not in on_disk]
    store.delete(stale + run.broken)
    report.deleted = len(stale) + len(run.broken)
    if report.indexed or report.moved or report.deleted:
        store.optimize()
    return report
