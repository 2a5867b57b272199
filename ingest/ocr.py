"""The OCR pass: read the text in every image the CLIP pass stored, after it (Immich's job model).

Photos are searchable by meaning as soon as the CLIP pass has stored them and by their words once this
pass has read them. Its state lives in the store's payload, so it is incremental and resumable:

* ``ocr``: the engine version that read the point (:func:`ingest.ocr_engine.engine_version`); a point
  whose ``ocr`` differs from the current version is *pending*.
* ``ocr_text``: the recognised lines (absent when the image has no text); ``ocr_error``: why it could not
  be read (a hostile file, a timeout); such a point is done too, so it is not retried on every run.

Work is by content hash: a pending point whose bytes some other point already has text for (a moved
file, a copy) gets that text without OCR; every other hash is read once and its text set on all points
holding it with one store update. A video's moments are read each on its own frame (``time_s``; at most
``[ocr] video_frames`` of them, spread over the video) and each gets its own text.
Each update is durable in the store's write-ahead log once acknowledged,
so after ``kill -9`` a re-run continues with what is still pending. The CLIP pass copies the OCR fields
when it reuses a stored vector (ingest/bookkeeping.py ``CONTENT_FIELDS``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from ingest.decode import DecodeError, content_hash, load_image, time_limit
from ingest.ocr_engine import OcrEngine, OcrTimeout, engine_version
from ingest.scan import is_video_name
from retrieval.errors import first_line
from retrieval.settings import Settings
from retrieval.store.edge_text import STATE_FIELD, TEXT_FIELD

Progress = Callable[[str, int, int], None]
OCR_FIELDS = (TEXT_FIELD, STATE_FIELD, "ocr_error")
log = logging.getLogger("clipdex.ocr")


@dataclass
class OcrReport:
    """What one OCR pass did: images read, with text found, points that reused text, failures."""

    read: int = 0
    with_text: int = 0
    reused: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "with_text": self.with_text, "reused": self.reused, "failed": self.failed,
                "seconds": round(self.seconds, 3)}


@dataclass
class _Pending:
    digest: str
    paths: list[str]


def pending(store: Any, version: str) -> dict[str, _Pending]:
    """Content hash → the paths of its points not read by ``version``."""
    found: dict[str, _Pending] = {}
    for digest, path in store.ocr_pending(version):
        found.setdefault(digest, _Pending(digest, [])).paths.append(path)
    return found


def read_file(engine: OcrEngine, path: str, digest: str, settings: Settings, *,
              time_s: float | None = None, check: bool = True, budget: float | None = None) -> dict[str, Any]:
    """The OCR fields for one file (``ocr_error`` set when it cannot be read), within ``[ocr] timeout_s``.

    ``time_s``: a video's frame at that time (else a video's middle frame). ``check``: first make sure the
    file still holds ``digest``'s bytes. ``budget``: seconds allowed, when less than ``timeout_s``.

    The budget holds in any thread (``serve --watch`` reads in its sync thread): the engine stops its ONNX
    Runtime runs at the deadline (:class:`ingest.ocr_engine.OcrTimeout`). In the main thread a ``SIGALRM``
    also interrupts a slow decode. Whatever a library raises about one picture (rapidocr wraps everything,
    a stopped run included, in its ``ONNXRuntimeError``) becomes that picture's ``ocr_error``: the pass goes on.
    """
    state: dict[str, Any] = {STATE_FIELD: engine.version, TEXT_FIELD: None, "ocr_error": None}
    budget = settings.ocr.timeout_s if budget is None else min(budget, settings.ocr.timeout_s)
    deadline = time.monotonic() + budget
    too_slow = f"OCR took longer than {settings.ocr.timeout_s:g} s ([ocr] timeout_s)"
    try:
        with time_limit(budget):
            if check and content_hash(path) != digest:
                raise DecodeError("changed since it was indexed (run ingest again)")
            image = _video_frame(path, settings, time_s) if is_video_name(path) else load_image(
                path, max_megapixels=settings.ingest.max_megapixels, draft_size=settings.ocr.rec_max_side)
            text = engine.read(image, deadline=deadline)
    except OcrTimeout:
        state["ocr_error"] = too_slow
        return state
    except DecodeError as exc:
        state["ocr_error"] = too_slow if str(exc).startswith("decode took") else str(exc)
        return state
    except MemoryError:
        state["ocr_error"] = "out of memory during OCR"
        return state
    except Exception as exc:  # a library's error about this one picture: recorded, and the pass goes on
        if time.monotonic() >= deadline:  # e.g. the SIGALRM's error, wrapped by rapidocr
            state["ocr_error"] = too_slow
        else:
            log.warning("OCR failed on %s", path, exc_info=True)
            state["ocr_error"] = f"OCR failed: {first_line(exc)[:200]}"
        return state
    state[TEXT_FIELD] = text or None
    return state


def _video_frame(path: str, settings: Settings, time_s: float | None = None) -> Any:
    """A video's frame at ``time_s`` for OCR (default: the one in its middle)."""
    from ingest.video.frame import frame_at
    from ingest.video.probe import VideoError, open_video

    try:
        if time_s is None:
            with open_video(path) as container:
                time_s = (container.duration or 0) / 2e6
        return frame_at(path, time_s, max_side=settings.ocr.rec_max_side,
                        max_megapixels=settings.ingest.max_megapixels)
    except VideoError as exc:
        raise DecodeError(str(exc)) from None


VIDEO_BUDGET_FACTOR = 4
"""A video's frames are read within this many times ``[ocr] timeout_s`` in all."""


def spread(times: list[float], most: int) -> list[float]:
    """At most ``most`` of the sorted ``times``, evenly spread over them (the first and the last included)."""
    if len(times) <= most:
        return list(times)
    if most == 1:
        return [times[len(times) // 2]]
    return [times[round(i * (len(times) - 1) / (most - 1))] for i in range(most)]


def read_video(engine: OcrEngine, item: _Pending, store: Any, settings: Settings) -> list[dict[str, Any]]:
    """OCR each moment of a video on its own frame (``time_s``) and set each moment's fields; returns the
    fields of the frames read (at most ``[ocr] video_frames``, all within :data:`VIDEO_BUDGET_FACTOR` ×
    ``timeout_s``). A moment whose frame is not read gets this engine's state and no text."""
    moments = store.hash_points(item.digest, ["time_s"])
    by_time: dict[float, list[str]] = {}
    for point_id, payload in moments:
        t = payload.get("time_s")
        by_time.setdefault(round(float(t), 3) if isinstance(t, int | float) else -1.0, []).append(point_id)
    done: dict[float, dict[str, Any]] = {}
    path = next((p for p in item.paths if _holds(p, item.digest)), None)
    stop = time.monotonic() + VIDEO_BUDGET_FACTOR * settings.ocr.timeout_s
    if path is None:
        gone = {STATE_FIELD: engine.version, TEXT_FIELD: None, "ocr_error": "file vanished or changed since it "
                "was indexed (run ingest again)"}
        done = {t: gone for t in by_time}
    else:
        for t in spread(sorted(by_time), settings.ocr.video_frames):
            left = stop - time.monotonic()
            if left <= 0:
                break
            done[t] = read_file(engine, path, item.digest, settings, time_s=None if t < 0 else t, check=False,
                                budget=left)
    unread = {STATE_FIELD: engine.version, TEXT_FIELD: None, "ocr_error": None}
    for t, ids in by_time.items():
        store.set_payload(ids, done.get(t, unread))
    return list(done.values())


def _holds(path: str, digest: str) -> bool:
    try:
        return content_hash(path) == digest
    except (OSError, DecodeError):
        return False


def run_ocr(store: Any, settings: Settings, *, progress: bool | Progress = False,
            engine: OcrEngine | None = None) -> OcrReport:
    """Read every pending image of ``store`` (see the module docstring); ``engine`` is loaded if not given."""
    started = time.monotonic()
    version = engine_version(settings.ocr)
    report = OcrReport()
    todo = pending(store, version)
    videos = {d for d, item in todo.items() if any(is_video_name(p) for p in item.paths)}
    known = store.ocr_done(sorted(set(todo) - videos), version, OCR_FIELDS)  # a video's moments differ
    for digest, fields in known.items():
        store.set_hash_payload(digest, fields)
        report.reused += len(todo.pop(digest).paths)
    callback, close = _progress(progress, len(todo))
    try:
        if todo and engine is None:
            engine = engine_for(settings)
        for done, item in enumerate(_ordered(todo), 1):
            if item.digest in videos:
                frames = read_video(engine, item, store, settings)  # type: ignore[arg-type]
            else:
                frames = [_read_any(engine, item, settings)]  # type: ignore[arg-type]
                store.set_hash_payload(item.digest, frames[0])
            report.read += 1
            if any(fields[TEXT_FIELD] for fields in frames):
                report.with_text += 1
            if errors := [fields["ocr_error"] for fields in frames if fields["ocr_error"]]:
                report.failed.append({"path": item.paths[0], "error": errors[0]})
            if callback:
                callback("ocr", done, len(todo))
    finally:
        close()
        store.flush()
    report.seconds = time.monotonic() - started
    return report


_engines: dict[str, OcrEngine] = {}


def engine_for(settings: Settings) -> OcrEngine:
    """The process's OCR engine for these ``[ocr]`` settings, loaded on first use (serve reuses it)."""
    key = settings.ocr.model_dump_json()
    if key not in _engines:
        _engines.clear()
        _engines[key] = OcrEngine(settings.ocr)
    return _engines[key]


def _ordered(todo: dict[str, _Pending]) -> Iterator[_Pending]:
    """Pending hashes in path order (a folder's images one after another: friendlier to the disk)."""
    for item in sorted(todo.values(), key=lambda p: min(p.paths)):
        item.paths.sort()
        yield item


def _read_any(engine: OcrEngine, item: _Pending, settings: Settings) -> dict[str, Any]:
    """Read the first of a hash's files that still holds those bytes."""
    fields: dict[str, Any] = {}
    for path in item.paths:
        fields = read_file(engine, path, item.digest, settings)
        if not (fields["ocr_error"] or "").startswith(("file vanished", "changed since")):
            return fields
    return fields


def _progress(progress: bool | Progress, total: int) -> tuple[Progress | None, Callable[[], None]]:
    if callable(progress):
        return progress, lambda: None
    if not progress or not total:
        return None, lambda: None
    bar = tqdm(total=total, unit="img", desc="ocr", file=sys.stderr, dynamic_ncols=True)
    return (lambda stage, done, total: bar.update(done - bar.n)), bar.close


def counts(store: Any, settings: Settings) -> dict[str, int]:
    """``{"text": points with recognised text, "pending": points not yet read by this engine version}``."""
    if not hasattr(store, "ocr_counts"):
        return {"text": 0, "pending": 0}
    c = store.ocr_counts(engine_version(settings.ocr))
    return {"text": c["text"], "pending": max(0, store.count() - c["done"])}
