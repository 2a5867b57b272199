"""Unit-vector arithmetic shared by the stores and the search path (numpy only)."""

from __future__ import annotations

import numpy as np

from retrieval.errors import ClipdexError


def unit(vector: np.ndarray) -> np.ndarray:
    """``vector`` scaled to length 1 (float32); a clear error for a non-finite or vanishing vector."""
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm):
        raise ClipdexError("the query vector is not finite (a damaged model or stored vector)")
    if norm < 1e-12:
        raise ClipdexError("the query vectors cancel out; use fewer or weaker negative prompts")
    return (vector / norm).astype(np.float32)


def recommend_vector(positives: np.ndarray, negatives: np.ndarray | None = None) -> np.ndarray:
    """Qdrant's ``average_vector`` recommendation: ``unit(2*mean(positives) - mean(negatives))``.

    With no negatives it is ``unit(mean(positives))``. The server store asks Qdrant for exactly this
    (``RecommendStrategy.AVERAGE_VECTOR``); the embedded engine has no such query, so it searches
    this vector (tests/test_like.py checks that both give the same ranking).
    """
    if positives is None or not len(positives):
        raise ClipdexError("a like search needs at least one positive example (--like, a text or an image)")
    mean_positive = np.mean(positives, axis=0)
    if negatives is None or not len(negatives):
        return unit(mean_positive)
    return unit(2 * mean_positive - np.mean(negatives, axis=0))
