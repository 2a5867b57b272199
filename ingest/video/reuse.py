"""A moved or copied video reuses its stored moments: the same content hash, no decoding.

A video whose bytes (by content hash) are those of a complete stored version (every one of its
``video_points`` moments there, each vector sound) gets copies of those moments: the vectors and the
content fields as stored, the path fields of the new file, and the point ids of the new path
(:func:`ingest.video.moments.moment_key`). The caller stores them in one request, like a video read afresh.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from ingest.bookkeeping import CONTENT_FIELDS, file_payload
from ingest.records import path_key, point_id
from ingest.scan import ScannedFile
from ingest.video.moments import moment_key
from retrieval.store import VectorStore
from retrieval.store.health import sane_vector

MOMENT_FIELDS = (*CONTENT_FIELDS, "media", "start_s", "end_s", "time_s", "duration_s", "codec", "video_points",
                 "truncated")
"""What a moment's payload says about the video's bytes (copied), as opposed to its path (the new file's)."""


def copied_moments(store: VectorStore, lock: AbstractContextManager[Any], source: list[str], file: ScannedFile,
                   digest: str) -> tuple[list[str], np.ndarray, list[dict[str, Any]], str] | None:
    """Ids, vectors and payloads of ``file``'s moments copied from the stored version ``source`` (its ids), and
    the path they were copied from; None when that version is no longer whole and sound (read the file then)."""
    with lock:
        found = store.points(source)
    if len(found) != len(source):
        return None
    rows = sorted(found.values(), key=lambda row: float(row[1].get("time_s", 0.0)))
    if not all(p.get("media") == "video" and p.get("hash") == digest and p.get("video_points") == len(source)
               and isinstance(p.get("time_s"), (int, float)) and sane_vector(v) for v, p in rows):
        return None
    key = path_key(file.path)
    base = file_payload(file, digest, {})
    ids, payloads = [], []
    for _, stored in rows:
        ids.append(point_id(moment_key(key, digest, float(stored["time_s"]))))
        payloads.append({**base, **{k: stored[k] for k in MOMENT_FIELDS if k in stored}})
    if len(set(ids)) != len(ids):
        return None
    return ids, np.stack([v for v, _ in rows]).astype(np.float32), payloads, str(rows[0][1].get("path", ""))
