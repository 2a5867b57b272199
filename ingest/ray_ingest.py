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
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest import failures
from ingest.bookkeeping import Bookkeeper
from ingest.file_result import FileResult
from ingest.finish import Progress, finish, start_report
from ingest.pipeline import plan_roots
from ingest.ray_stages import PortablePreprocess, decode_batch, encoder_stage, file_rows, results_of
from ingest.report import IngestReport
from ingest.scan import ScannedFile
from ingest.writer import AsyncUpserter
from retrieval.errors import ClipdexError
from retrieval.settings import RaySettings, Settings
from retrieval.store import VectorStore

if TYPE_CHECKING:  # the model is the caller's: loaded by Index, on torch
    from retrieval.model.torch_backend import TorchEncoder

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


def encoded_batches(files: Sequence[ScannedFile], encoder: TorchEncoder, settings: Settings,
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
    try:
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
            yield results_of(batch)
    except ray.exceptions.RayError as exc:  # after Ray's own retries: e.g. the model missing on a node
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise ClipdexError(f"the Ray ingest failed: {lines[-1] if lines else type(exc).__name__}") from exc


def ingest_on_ray(roots: Sequence[str], store: VectorStore, encoder: TorchEncoder, settings: Settings, *,
                  address: str, progress: bool | Progress = False, prune: bool = False,
                  retry_failed: bool = False) -> IngestReport:
    """:func:`ingest.pipeline.ingest` with hash/decode/encode on a Ray cluster: the same plan, bookkeeping
    and finish, so the same points, payloads and report.

    Videos are read after the images by the local runner's video pass, in this process with the driver's
    encoder (:func:`ingest.video.ingest_videos`: FFmpeg decodes on its own threads, and each video's moments
    are one store request, which a Ray task could not keep whole).

    ``progress``: True shows Ray Data's progress bars; a callback gets ``("read", files done, total)``
    after each batch is handed to the writer, ``("video", videos done, total)``, and the deletion/index
    stages as in a local ingest. ``retry_failed``: as in :func:`ingest.pipeline.ingest`.
    """
    plan = plan_roots(roots, store, settings.ingest)
    report = start_report(plan)
    ledger = failures.start(plan, store, report, settings.ingest, retry=retry_failed)
    callback = progress if callable(progress) else None
    writer = AsyncUpserter(store)
    try:
        book = Bookkeeper(plan, store, writer, report, chunk=settings.ingest.upsert_batch)
        book.broken += failures.stored_before(ledger, plan)
        if plan.todo:
            connect(address, settings.ray)
            done = 0
            for results, vectors in encoded_batches(plan.todo, encoder, settings, frozenset(plan.known_hashes),
                                                    progress=progress is True):
                keep = book.mark_duplicates(results)  # a copy of a file embedded earlier reuses its vector
                book.handle(results, vectors[keep] if keep else None)
                done += len(results)
                if callback:
                    callback("read", done, len(plan.todo))
        if plan.videos:
            from ingest.video import ingest_videos  # PyAV loads only when there are videos

            ingest_videos(plan, book, encoder, settings.video, max_megapixels=settings.ingest.max_megapixels,
                          batch_size=settings.model.batch_size, progress=callback or _video_lines(progress))
    finally:
        writer.close()
    finish(plan, book, store, report, prune=prune, max_delete_fraction=settings.ingest.max_delete_fraction,
           chunk=settings.ingest.upsert_batch, index_threshold=settings.store.index_threshold, progress=callback)
    failures.remember(ledger, plan, book.failed_files, videos=settings.ingest.video)
    return report


def _video_lines(progress: bool | Progress) -> Progress | None:
    """With ``progress=True`` (Ray's bars for the images), one stderr line per video read."""
    if progress is not True:
        return None
    import sys

    def show(stage: str, done: int, total: int) -> None:
        print(f"video {done}/{total}", file=sys.stderr, flush=True)

    return show
