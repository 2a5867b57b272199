"""Examples named by the client: an indexed path or a point id, and their stored vectors."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ingest.records import path_key, point_id
from ingest.scan import is_video_name
from retrieval.errors import ClipdexError
from retrieval.search import moments
from retrieval.search.request import UnknownPointError

if TYPE_CHECKING:
    from retrieval.search.context import SearchContext


def stored_vectors(ctx: SearchContext, refs: Sequence[str]) -> np.ndarray:
    """The stored vectors of indexed paths or point ids (rows, in order), read from the store as they are.

    Raises :class:`retrieval.search.request.UnknownPointError` naming what is not in the collection.
    """
    if not refs:
        meta = ctx.store.meta()
        return np.zeros((0, meta.dim if meta else 0), np.float32)
    wanted = [moment_ref(ctx, ref) or point_ref(ref) for ref in refs]
    found = ctx.store.points([pid for pid, _ in wanted])
    missing = [ref for ref, (pid, key) in zip(refs, wanted, strict=True)
               if pid not in found or (key is not None and found[pid][1].get("path") != key)]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UnknownPointError(f"not in the collection: {', '.join(missing[:3])}{more}")
    vectors = np.stack([found[pid][0] for pid, _ in wanted]).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    for ref, norm in zip(refs, norms, strict=True):
        if not np.isfinite(norm) or abs(norm - 1.0) > 1e-2:
            raise ClipdexError(f"the stored vector of {ref} is damaged (norm {norm:.3g}); ingest that file again")
    return vectors


def moment_ref(ctx: SearchContext, ref: str) -> tuple[str, str] | None:
    """(point id, path key) of the moment a ``path#t=SECONDS`` example names (or a video's first moment for its
    plain path); None when ``ref`` names no stored video."""
    path, seconds = moments.split_fragment(ref)
    try:
        uuid.UUID(path)
        return None
    except ValueError:
        pass
    key = path_key(os.path.abspath(os.path.expanduser(path)))
    if seconds is None and not is_video_name(key):
        return None
    hit = moments.moment_at(ctx.store, key, seconds)
    return (hit.id, key) if hit is not None else None


def point_ref(ref: str) -> tuple[str, str | None]:
    """(point id, path key or None) of a like/unlike example: a point id, or an indexed file's path."""
    try:
        return str(uuid.UUID(ref)), None
    except ValueError:
        key = path_key(os.path.abspath(os.path.expanduser(ref)))
        return point_id(key), key
