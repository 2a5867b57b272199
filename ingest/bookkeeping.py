"""Per-batch bookkeeping: file results plus vectors of decoded images become upserts.

This is the part of an ingest every runner shares (the local DataLoader runner in
:mod:`ingest.pipeline`, a distributed one on Ray Data): a runner reads files into
:class:`~ingest.reader.FileResult` objects and embeds the ones whose status is ``"image"``; the
bookkeeper decides what each file's point gets and hands the upserts to a sink::

    plan = plan_ingest(scan_roots(roots, ...), store)          # ingest.plan: no writes
    report = start_report(plan)
    with AsyncUpserter(store) as sink:                            # or any object with put()/wait()
        book = Bookkeeper(plan, store, sink, report, chunk=settings.upsert_batch)
        for results, vectors in runner_batches:                   # batches of at most a few hundred
            book.handle(results, vectors)                         # vectors: one row per "image" result
    finish(plan, book, store, report, prune=..., ...)             # ingest.finish: deletes, HNSW build

Rules of :meth:`Bookkeeper.handle`:

* ``"image"``: a newly embedded file; its row of ``vectors`` is stored with the file's payload.
* ``"known"``: content (by hash) the store already holds, or that this run embedded earlier; the
  stored vector is looked up by hash (a keyword-indexed payload field) in chunks and reused.
  Moved files, touched files and byte-identical copies never reach the encoder.
* ``"failed"``: reported, and remembered in :attr:`Bookkeeper.failed_files` (the runner writes them to the
  collection's failure ledger, :mod:`ingest.failures`). If the file's bytes were read but are no longer an
  image its old point is dropped at the end; if they could not be read (``unreadable``) the old point is kept.

What the bookkeeper keeps per file is one hash in a set; vectors live only for one batch.
Runners that can skip encoding in-run duplicates call :meth:`Bookkeeper.mark_duplicates` first.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import numpy as np

from ingest.file_result import FileResult
from ingest.plan import IngestPlan
from ingest.records import path_key, point_id
from ingest.report import IngestReport
from ingest.scan import ScannedFile
from retrieval.store import VectorStore

# Payload fields that describe the bytes (copied when a vector is reused), as opposed to the path.
CONTENT_FIELDS = ("hash", "width", "height", "format", "taken_at", "taken_ts", "camera_make", "camera_model",
                  "gps_lat", "gps_lon", "ocr", "ocr_text", "ocr_error")  # ocr*: the OCR pass's (ingest/ocr.py)


class Sink(Protocol):
    """Where upserts go: :class:`ingest.writer.AsyncUpserter`, or the store itself with a no-op wait."""

    def put(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None: ...

    def wait(self) -> None:
        """Return once everything put so far is stored (and readable by look-ups)."""


def file_payload(file: ScannedFile, digest: str, content: dict[str, Any]) -> dict[str, Any]:
    """The payload of a file's point: path fields from the listing, content fields from its bytes.

    ``media`` is "image" (a video's moments set "video", ingest.video; points stored before it count as images).
    """
    key = path_key(file.path)
    payload = {k: v for k, v in content.items() if k in CONTENT_FIELDS}
    # no ``ancestors`` list: ``--folder`` is a prefix match on ``path`` (a layout-1 store adds the list itself)
    payload.update(path=key, folder=posixpath.dirname(key), media="image", size=file.size,
                   mtime=file.mtime_ns / 1e9, mtime_ns=file.mtime_ns, hash=digest)
    if file.root and file.root != file.path:  # a file given as its own root: finish() tags it
        payload["root"] = path_key(file.root)
    return payload


class Bookkeeper:
    """Turns batches of file results into upserts; see the module docstring for the rules."""

    def __init__(self, plan: IngestPlan, store: VectorStore, sink: Sink, report: IngestReport, *,
                 chunk: int = 256):
        self.plan = plan
        self.store = store
        self.sink = sink
        self.report = report
        self.chunk = max(1, chunk)
        self.embedded: set[str] = set()  # hashes embedded by this run
        self.broken: list[str] = []  # keys of stored files whose bytes are no longer an image
        self.failed_files: list[tuple[ScannedFile, str, bool]] = []  # (file, reason, unreadable): ingest.failures
        self._unflushed = False  # something this run embedded may not be stored yet
        # a sink that writes on another thread exposes the lock that serialises store calls
        self._lock: AbstractContextManager[Any] = getattr(sink, "lock", None) or nullcontext()

    def mark_duplicates(self, results: Sequence[FileResult]) -> list[int]:
        """Turn "image" results whose hash was embedded before (this run) into "known" ones.

        Returns the rows (among the "image" results, in order) that still need a vector.
        """
        keep: list[int] = []
        seen = set(self.embedded)
        row = 0
        for result in results:
            if result.status != "image":
                continue
            if result.hash in seen:
                result.status = "known"
            else:
                seen.add(result.hash)
                keep.append(row)
            row += 1
        return keep

    def handle(self, results: Sequence[FileResult], vectors: np.ndarray | None) -> None:
        """Record one batch: ``vectors`` has one row per result whose status is ``"image"``."""
        ids: list[str] = []
        rows: list[np.ndarray] = []
        payloads: list[dict[str, Any]] = []
        batch_vectors: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}  # hash -> embedded in this batch
        row = 0
        for result in results:
            if result.status == "image":
                assert vectors is not None, "an image result needs a vector"
                vector = vectors[row]
                row += 1
                if result.hash in self.embedded or result.hash in batch_vectors:
                    self.report.duplicates += 1
                else:
                    self.report.indexed += 1
                batch_vectors.setdefault(result.hash, (vector, result.meta))
                self._add(ids, rows, payloads, result, vector, result.meta)
        known = [r for r in results if r.status == "known"]
        for start in range(0, len(known), self.chunk):
            self._reuse(known[start:start + self.chunk], batch_vectors, ids, rows, payloads)
        for result in results:
            if result.status == "failed":
                self._failed(result)
        self.embedded.update(batch_vectors)
        self.plan.present.update(batch_vectors)
        if ids:
            self.sink.put(ids, np.stack(rows), payloads)
            self._unflushed = True

    def _add(self, ids: list[str], rows: list[np.ndarray], payloads: list[dict[str, Any]], result: FileResult,
             vector: np.ndarray, content: dict[str, Any]) -> None:
        ids.append(point_id(path_key(result.file.path)))
        rows.append(vector)
        payloads.append(file_payload(result.file, result.hash, content))

    def _reuse(self, known: list[FileResult], batch_vectors: dict[str, tuple[np.ndarray, dict[str, Any]]],
               ids: list[str], rows: list[np.ndarray], payloads: list[dict[str, Any]]) -> None:
        wanted = {r.hash for r in known if r.hash not in batch_vectors}
        if self._unflushed and not wanted.isdisjoint(self.embedded):
            self.sink.wait()  # a copy of something embedded in an earlier batch: make it visible first
            self._unflushed = False
        stored: dict[str, tuple[str, np.ndarray, dict[str, Any]]] = {}
        if wanted:
            with self._lock:
                stored = self.store.by_hash(sorted(wanted))
        for result in known:
            key = path_key(result.file.path)
            if result.hash in batch_vectors:
                self._add(ids, rows, payloads, result, *batch_vectors[result.hash])
                self.report.duplicates += 1
                continue
            found = stored.get(result.hash)
            if found is None:
                self.report.failed.append({"path": key, "error": "its stored copy vanished during the run; "
                                                                 "run ingest again"})
                continue
            source_id, vector, content = found
            self._add(ids, rows, payloads, result, vector, content)
            self.plan.present.add(result.hash)
            source_key = content.get("path")
            if source_id == point_id(key) or self.plan.previous.get(key) == result.hash:
                self.report.unchanged += 1  # touched, same bytes
            elif result.hash in self.embedded or source_key in self.plan.on_disk:
                self.report.duplicates += 1
            else:
                self.report.moved += 1

    def _failed(self, result: FileResult) -> None:
        self.failed(result.file, result.error, unreadable=result.unreadable)

    def failed(self, file: ScannedFile, error: str, *, unreadable: bool) -> None:
        """A file that could not be stored: reported, remembered (ingest.failures), its old point dropped at the
        end unless its bytes could not be read at all."""
        key = path_key(file.path)
        self.report.failed.append({"path": key, "error": error})
        self.failed_files.append((file, error, unreadable))
        if key in self.plan.previous and not unreadable:
            self.broken.append(key)
