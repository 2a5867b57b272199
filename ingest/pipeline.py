"""The local runner: scan → plan → read/decode (DataLoader) → encode → bookkeeping → finish.

The stages other runners share are library functions in their own modules:
:func:`ingest.plan.plan_ingest` (compare the listing with the store, no writes),
:class:`ingest.bookkeeping.Bookkeeper` (file results + vectors → upserts) and
:func:`ingest.finish.finish` (deletions, the index build). This module only adds the local
DataLoader + encoder loop around them.

Crash safety comes from the order of work: point ids are derived from paths (a re-run
overwrites, never duplicates), every upsert is durable once acknowledged, and stale points
are deleted only after all upserts, so a vector that a moved file can reuse is never lost.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tqdm import tqdm

from ingest import failures
from ingest.bookkeeping import CONTENT_FIELDS, Bookkeeper, file_payload
from ingest.finish import Progress, finish, start_report
from ingest.plan import IngestPlan, plan_ingest
from ingest.report import IngestReport
from ingest.scan import scan_roots
from ingest.writer import AsyncUpserter
from retrieval.settings import IngestSettings, VideoSettings
from retrieval.store import VectorStore

if TYPE_CHECKING:  # the model is the caller's: loaded by Index, on torch
    from retrieval.model.torch_backend import TorchEncoder

__all__ = ["CONTENT_FIELDS", "IngestReport", "file_payload", "ingest", "plan_roots", "run_local"]


def plan_roots(roots: Sequence[str], store: VectorStore, settings: IngestSettings) -> IngestPlan:
    """Scan ``roots`` with the ``[ingest]`` filters and plan against the store."""
    listing = scan_roots([_absolute(r) for r in roots], include=settings.include, exclude=settings.exclude,
                         follow_symlinks=settings.follow_symlinks, skip_hidden=settings.skip_hidden,
                         video=settings.video)
    return plan_ingest(listing, store, videos=settings.video)


def run_local(plan: IngestPlan, book: Bookkeeper, encoder: TorchEncoder, settings: IngestSettings, *,
              batch_size: int, progress: Progress | None = None) -> None:
    """Read ``plan.todo`` in DataLoader workers, embed the decoded images, hand batches to ``book``."""
    from ingest.reader import ImageFiles, make_loader, rebatch  # torch: only when there is something to read

    dataset = ImageFiles(plan.todo, encoder.preprocess, known_hashes=frozenset(plan.known_hashes),
                         max_megapixels=settings.max_megapixels, file_timeout_s=settings.file_timeout_s,
                         draft_size=encoder.image_size)
    loader = make_loader(dataset, batch_size=batch_size, workers=settings.workers,
                         pin_memory=encoder.device.type == "cuda")
    done = 0
    for batch in rebatch(loader, batch_size):
        keep = book.mark_duplicates(batch.results)
        vectors = None
        if keep:
            pixels = batch.pixels if len(keep) == batch.pixels.shape[0] else batch.pixels[keep]
            vectors = encoder.encode_images(pixels)
        book.handle(batch.results, vectors)
        done += len(batch.results)
        if progress:
            progress("read", done, len(plan.todo))


def ingest(roots: Sequence[str], store: VectorStore, encoder: TorchEncoder, settings: IngestSettings, *,
           batch_size: int, progress: bool | Progress = False, prune: bool = False,
           index_threshold: int = 20000, video: VideoSettings | None = None, retry_failed: bool = False
           ) -> IngestReport:
    """Bring the collection in line with the image files below ``roots``.

    ``progress``: True for a progress bar on stderr, or a callback ``progress(stage, done, total)``.
    ``prune``: delete even when more than ``settings.max_delete_fraction`` of a root's points are gone.
    ``video``: how videos are sampled (``[video]``; listed only with ``settings.video``), see ingest.video.
    ``retry_failed``: also read the files that failed before and are unchanged (ingest.failures).
    """
    plan = plan_roots(roots, store, settings)
    report = start_report(plan)
    ledger = failures.start(plan, store, report, settings, retry=retry_failed)
    callback, close = _progress(progress, len(plan.todo))
    writer = AsyncUpserter(store)
    try:
        book = Bookkeeper(plan, store, writer, report, chunk=settings.upsert_batch)
        book.broken += failures.stored_before(ledger, plan)
        if plan.todo:
            run_local(plan, book, encoder, settings, batch_size=batch_size, progress=callback)
        if plan.videos:
            from ingest.video import ingest_videos  # PyAV loads only when there are videos

            ingest_videos(plan, book, encoder, video or VideoSettings(), max_megapixels=settings.max_megapixels,
                          batch_size=batch_size, progress=callback)
    finally:
        writer.close()
        close()
    finish(plan, book, store, report, prune=prune, max_delete_fraction=settings.max_delete_fraction,
           chunk=settings.upsert_batch, index_threshold=index_threshold, progress=callback)
    failures.remember(ledger, plan, book.failed_files, videos=settings.video)
    return report


def _progress(progress: bool | Progress, total: int) -> tuple[Progress | None, Callable[[], None]]:
    """A callback for ``progress``: the caller's own, a tqdm bar plus index lines, or none."""
    if callable(progress):
        return progress, lambda: None
    if not progress:
        return None, lambda: None
    bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True)

    def show(stage: str, done: int, total: int) -> None:
        if stage == "read":
            bar.update(done - bar.n)
        elif stage == "video":
            print(f"video {done}/{total}", file=sys.stderr, flush=True)
        elif stage == "index" and done == 0:
            print(f"building the search index for {total:,} new points (may take a while)…", file=sys.stderr,
                  flush=True)
        elif stage == "index":
            print(f"search index built ({total:,} points)", file=sys.stderr, flush=True)

    return show, bar.close


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))
