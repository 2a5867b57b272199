"""The runner: scan → compare with the store → read/decode → encode → upsert → delete stale.

Crash safety comes from the order of work: point ids are derived from paths (a re-run
overwrites, never duplicates), every upsert is durable once acknowledged, and stale points
are deleted only after all upserts, so a vector that a moved file can reuse is never lost.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from ingest.reader import Batch, FileResult, ImageFiles, make_loader, rebatch
from ingest.records import ancestors, is_below, path_key, point_id
from ingest.scan import ScannedFile, scan
from ingest.writer import AsyncUpserter
from retrieval.encoder import Encoder
from retrieval.errors import ClipdexError
from retrieval.settings import IngestSettings
from retrieval.store import VectorStore

STORED_FIELDS = ("path", "size", "mtime_ns", "hash")
# Payload fields that describe the bytes (copied when a vector is reused), as opposed to the path.
CONTENT_FIELDS = ("hash", "width", "height", "format", "taken_at", "taken_ts", "camera_make", "camera_model",
                  "gps_lat", "gps_lon")


@dataclass
class IngestReport:
    indexed: int = 0
    unchanged: int = 0
    deleted: int = 0
    moved: int = 0
    duplicates: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"indexed": self.indexed, "unchanged": self.unchanged, "deleted": self.deleted,
                "moved": self.moved, "duplicates": self.duplicates, "failed": self.failed}


def file_payload(file: ScannedFile, digest: str, content: dict[str, Any]) -> dict[str, Any]:
    key = path_key(file.path)
    folders = ancestors(key)
    payload = {k: v for k, v in content.items() if k in CONTENT_FIELDS}
    payload.update(path=key, folder=folders[-1], ancestors=folders, size=file.size,
                   mtime=file.mtime_ns / 1e9, mtime_ns=file.mtime_ns, hash=digest)
    return payload


class _Run:
    """State of one ingest: what the store holds and what this run has embedded."""

    def __init__(self, store: VectorStore, on_disk: set[str], stored: dict[str, tuple[str, dict[str, Any]]],
                 report: IngestReport):
        self.store = store
        self.on_disk = on_disk
        self.stored = stored
        self.report = report
        self.by_hash: dict[str, str] = {p["hash"]: pid for pid, p in stored.values() if p.get("hash")}
        self.key_of_id = {pid: key for key, (pid, _) in stored.items()}
        self.fresh: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}  # hash -> vector, content (this run)
        self.broken: list[str] = []  # stored ids whose file is now unreadable

    def handle(self, batch: Batch, encoder: Encoder, writer: AsyncUpserter) -> None:
        ids: list[str] = []
        vectors: list[np.ndarray] = []
        payloads: list[dict[str, Any]] = []

        def add(result: FileResult, vector: np.ndarray, content: dict[str, Any]) -> None:
            key = path_key(result.file.path)
            ids.append(point_id(key))
            vectors.append(vector)
            payloads.append(file_payload(result.file, result.hash, content))

        embedded = encoder.encode_images(batch.pixels) if batch.pixels is not None else None
        row = 0
        known = [r for r in batch.results if r.status == "known" and r.hash not in self.fresh]
        with writer.lock:
            reused = self.store.points([self.by_hash[r.hash] for r in known])
        for result in batch.results:
            key = path_key(result.file.path)
            if result.status == "failed":
                self.report.failed.append({"path": key, "error": result.error})
                if key in self.stored:
                    self.broken.append(self.stored[key][0])
            elif result.status == "image" and result.hash in self.fresh:
                row += 1  # byte-identical to a file embedded earlier in this run
                add(result, *self.fresh[result.hash])
                self.report.duplicates += 1
            elif result.status == "image":
                vector = embedded[row]
                row += 1
                self.fresh[result.hash] = (vector, result.meta)
                add(result, vector, result.meta)
                self.report.indexed += 1
            else:  # known content: reuse the stored vector
                if result.hash in self.fresh:
                    add(result, *self.fresh[result.hash])
                    self.report.duplicates += 1
                    continue
                source = self.by_hash[result.hash]
                vector, content = reused[source]
                self.fresh[result.hash] = (vector, content)
                add(result, vector, content)
                source_key = self.key_of_id.get(source)
                if source_key == key:
                    self.report.unchanged += 1  # touched, same bytes
                elif source_key not in self.on_disk:
                    self.report.moved += 1
                else:
                    self.report.duplicates += 1
        if ids:
            writer.put(ids, np.stack(vectors), payloads)


def ingest(roots: Sequence[str], store: VectorStore, encoder: Encoder, settings: IngestSettings, *,
           batch_size: int, progress: bool = False) -> IngestReport:
    """Bring the collection in line with the image files below ``roots``."""
    files, problems = scan(roots, include=settings.include, exclude=settings.exclude,
                           follow_symlinks=settings.follow_symlinks, skip_hidden=settings.skip_hidden)
    report = IngestReport(failed=[{"path": path_key(p.path), "error": p.error} for p in problems])
    root_keys = [path_key(_absolute(r)) for r in roots]
    stored = {p["path"]: (pid, p) for pid, p in store.payloads(STORED_FIELDS) if "path" in p}
    on_disk = {path_key(f.path) for f in files}
    under_roots = [key for key in stored if any(is_below(key, root) for root in root_keys)]
    if not files and not under_roots:
        where = ", ".join(roots)
        raise ClipdexError(f"no image files found in {where}" + (f" ({len(problems)} unreadable)" if problems else ""))
    todo: list[ScannedFile] = []
    for file in files:
        old = stored.get(path_key(file.path))
        if old and old[1].get("size") == file.size and old[1].get("mtime_ns") == file.mtime_ns:
            report.unchanged += 1
        else:
            todo.append(file)
    run = _Run(store, on_disk, stored, report)
    if todo:
        dataset = ImageFiles(todo, encoder.preprocess, known_hashes=frozenset(run.by_hash),
                             max_megapixels=settings.max_megapixels, file_timeout_s=settings.file_timeout_s,
                             draft_size=encoder.image_size)
        loader = make_loader(dataset, batch_size=batch_size, workers=settings.workers,
                             pin_memory=encoder.device.type == "cuda")
        writer = AsyncUpserter(store)
        bar = tqdm(total=len(todo), unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True)
        try:
            for batch in rebatch(loader, batch_size):
                run.handle(batch, encoder, writer)
                bar.update(len(batch.results))
        finally:
            bar.close()
            writer.close()
    stale = [stored[key][0] for key in under_roots if key not in on_disk]
    store.delete(stale + run.broken)
    report.deleted = len(stale) + len(run.broken)
    if report.indexed or report.moved or report.deleted:
        store.optimize()
    return report


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))
