"""The video pass of an ingest: each new or changed video becomes its moments, stored in one request.

Per video (in the ingest's main process; FFmpeg decodes on its own threads):

1. hash the file; the same bytes as its stored version (a touched file) only update ``size``/``mtime``; the
   bytes of another complete stored version (a moved or copied video) get copies of its moments
   (:mod:`ingest.video.reuse`), stored as in step 3 without decoding anything;
2. sample segments (:class:`ingest.video.sample.VideoSampler`), embed their frames in batches, merge
   near-identical neighbours (:class:`ingest.video.moments.MomentMerger`);
3. put all the moments in ONE upsert (one write-ahead-log entry: after a kill -9 the new version is
   either whole or absent); the old version's points are deleted by :func:`ingest.finish.finish`, after
   every upsert. A kill between the two leaves both versions whole; the next plan drops the old one
   (:attr:`ingest.plan.IngestPlan.superseded`).

Each moment's payload: the file's fields (``path``, ``folder``, ``size``, ``mtime``, ``hash``, ``root``),
``media = "video"``, ``start_s``, ``end_s``, ``time_s``, ``duration_s``, ``codec``, ``width``,
``height``, ``format``, ``taken_at``/``taken_ts`` (the container's creation time), ``video_points`` (the
version's moment count: a version with fewer stored points is incomplete) and ``truncated`` (the cap that
stopped sampling, if any).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest.bookkeeping import file_payload
from ingest.decode import DecodeError, content_hash, time_limit
from ingest.plan import IngestPlan
from ingest.records import path_key, point_id
from ingest.scan import ScannedFile
from ingest.video.moments import Moment, MomentMerger, moment_key
from ingest.video.probe import VideoError
from ingest.video.reuse import copied_moments
from ingest.video.sample import VideoSampler
from ingest.video.shots import Segment
from retrieval.settings import VideoSettings

if TYPE_CHECKING:
    from ingest.bookkeeping import Bookkeeper
    from retrieval.model.torch_backend import TorchEncoder


@dataclass
class VideoResult:
    """One video read: its moments (vectors and payloads) or why it failed."""

    file: ScannedFile
    status: str  # "video" | "touched" | "known" (a stored version's bytes: ingest.video.reuse) | "failed"
    hash: str = ""
    error: str = ""
    unreadable: bool = False
    moments: list[Moment] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def read_video(file: ScannedFile, encode: Callable[[list[Segment]], np.ndarray], settings: VideoSettings, *,
               size: int, max_megapixels: float, batch_size: int, same_as: str = "",
               known: Container[str] = ()) -> VideoResult:
    """Hash, sample, embed and merge one video; never raises for a bad file.

    ``encode`` embeds the segments' frames (unit rows). ``same_as``: the stored version's hash (a file with
    these bytes is only touched). ``known``: hashes of complete stored versions (a file with those bytes is
    not decoded: its result is "known").
    """
    digest = ""
    try:
        with time_limit(settings.time_s * 2 + 30):  # hard stop; the sampler's own time cap comes first
            digest = content_hash(file.path)
            if same_as and digest == same_as:
                return VideoResult(file, "touched", hash=digest)
            if digest in known:
                return VideoResult(file, "known", hash=digest)
            sampler = VideoSampler(file.path, settings, size=size, max_megapixels=max_megapixels)
            merger = MomentMerger(settings.merge_cosine)
            pending: list[Segment] = []
            for segment in sampler:
                pending.append(segment)
                if len(pending) >= batch_size:
                    merger.add(pending, encode(pending))
                    pending = []
                if len(merger.moments) >= settings.max_moments:
                    sampler.stats.truncated = f"[video] max_moments ({settings.max_moments})"
                    break
            if pending:
                merger.add(pending, encode(pending))
            if len(merger.moments) > settings.max_moments:
                sampler.stats.truncated = f"[video] max_moments ({settings.max_moments})"
    except (VideoError, DecodeError) as exc:
        return VideoResult(file, "failed", hash=digest, error=str(exc), unreadable=not digest)
    except OSError as exc:
        return VideoResult(file, "failed", hash=digest, error=exc.strerror or str(exc), unreadable=not digest)
    except Exception as exc:  # a decoder bug must not end the run
        return VideoResult(file, "failed", hash=digest, error=f"{type(exc).__name__}: {exc}".splitlines()[0],
                           unreadable=not digest)
    moments = merger.moments[:settings.max_moments]
    if not moments:
        return VideoResult(file, "failed", hash=digest, error="no video frames")
    info, stats = sampler.info, sampler.stats
    assert info is not None
    duration = round(max(stats.end_s, 0.0) if stats.truncated or not info.duration_s else info.duration_s, 3)
    moments[-1].end_s = max(moments[-1].end_s, duration) if not stats.truncated else moments[-1].end_s
    meta: dict[str, Any] = {"media": "video", "duration_s": duration, "codec": info.codec,
                            "width": stats.width or info.width, "height": stats.height or info.height,
                            "format": info.format, "video_points": len(moments)}
    if info.taken_at:
        meta["taken_at"] = info.taken_at
        meta["taken_ts"] = datetime.fromisoformat(info.taken_at).timestamp()
    if stats.truncated:
        meta["truncated"] = stats.truncated
    return VideoResult(file, "video", hash=digest, moments=moments, meta=meta)


def moment_payloads(result: VideoResult) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """Point ids, vectors and payloads of a read video's moments."""
    key = path_key(result.file.path)
    base = file_payload(result.file, result.hash, {})
    ids, payloads = [], []
    for m in result.moments:
        ids.append(point_id(moment_key(key, result.hash, m.time_s)))
        payloads.append({**base, **result.meta, "start_s": round(m.start_s, 3), "end_s": round(m.end_s, 3),
                         "time_s": round(m.time_s, 3)})
    return ids, np.stack([m.vector for m in result.moments]), payloads


def ingest_videos(plan: IngestPlan, book: Bookkeeper, encoder: TorchEncoder, settings: VideoSettings, *,
                  max_megapixels: float, batch_size: int, progress: Callable[[str, int, int], None] | None = None
                  ) -> None:
    """Read ``plan.videos`` one by one and store each one's moments (see the module docstring)."""
    import torch  # the encoder's; this pass runs inside an ingest only

    def encode(segments: list[Segment]) -> np.ndarray:
        pixels = torch.stack([encoder.preprocess(s.image) for s in segments])
        return encoder.encode_images(pixels)

    for done, file in enumerate(plan.videos, 1):
        key = path_key(file.path)
        result = read_video(file, encode, settings, size=encoder.image_size, max_megapixels=max_megapixels,
                            batch_size=batch_size, same_as=plan.previous.get(key, ""), known=plan.video_versions)
        if result.status == "known" and not reuse_video(plan, book, result):  # its stored copy is not whole
            result = read_video(file, encode, settings, size=encoder.image_size, max_megapixels=max_megapixels,
                                batch_size=batch_size, same_as=plan.previous.get(key, ""))
        if result.status != "known":
            record_video(plan, book, result)
        if progress:
            progress("video", done, len(plan.videos))
    if plan.videos:
        book.sink.wait()


def record_video(plan: IngestPlan, book: Bookkeeper, result: VideoResult) -> None:
    """Store one read video (or record why not): see the module docstring."""
    key, report = path_key(result.file.path), book.report
    old = plan.video_ids.get(key, [])
    if result.status == "failed":
        book.failed(result.file, result.error, unreadable=result.unreadable)
        return
    plan.present.add(result.hash)
    if result.status == "touched":
        book.sink.wait()
        with book._lock:
            book.store.set_payload(old, {"size": result.file.size, "mtime": result.file.mtime_ns / 1e9,
                                         "mtime_ns": result.file.mtime_ns})
        report.unchanged += 1
        return
    ids, vectors, payloads = moment_payloads(result)
    _put_version(plan, book, key, result.hash, ids, vectors, payloads)
    report.videos += 1
    report.moments += len(ids)
    if result.meta.get("truncated"):
        report.truncated.append({"path": key, "cap": result.meta["truncated"]})


def reuse_video(plan: IngestPlan, book: Bookkeeper, result: VideoResult) -> bool:
    """Store a moved or copied video (a "known" result) from the stored moments of its bytes; False when that
    version is no longer whole (the caller reads the file instead)."""
    book.sink.wait()  # the version may have been stored by this run (a copy of a video read earlier)
    copied = copied_moments(book.store, book._lock, plan.video_versions[result.hash], result.file, result.hash)
    if copied is None:
        return False
    ids, vectors, payloads, source = copied
    key = path_key(result.file.path)
    _put_version(plan, book, key, result.hash, ids, vectors, payloads)
    if source == key:  # touched, with the bytes of another whole version of its own that a kill left behind
        book.report.unchanged += 1
    elif source in plan.on_disk:
        book.report.duplicates += 1
    else:
        book.report.moved += 1
    return True


def _put_version(plan: IngestPlan, book: Bookkeeper, key: str, digest: str, ids: list[str], vectors: np.ndarray,
                 payloads: list[dict[str, Any]]) -> None:
    """Store one version of a video in ONE store request (the whole version or nothing); its older versions
    are deleted at the end (ingest.finish)."""
    book.sink.put(ids, vectors, payloads)
    new = set(ids)
    if plan.superseded:  # an incomplete set of these very bytes is rewritten now under the same ids: keep them
        plan.superseded[:] = [pid for pid in plan.superseded if pid not in new]
    plan.superseded += [pid for pid in plan.video_ids.get(key, []) if pid not in new]
    plan.present.add(digest)
    plan.video_versions.setdefault(digest, ids)  # a later copy of these bytes in this run reuses them
