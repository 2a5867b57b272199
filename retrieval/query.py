"""Turning text, image and negative-prompt vectors into one query vector."""

from __future__ import annotations

import numpy as np

from retrieval.errors import ClipdexError


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm):
        raise ClipdexError("the query vector is not finite (a damaged model or stored vector)")
    if norm < 1e-12:
        raise ClipdexError("the query vectors cancel out; use fewer or weaker negative prompts")
    return (vector / norm).astype(np.float32)


def combine(text: np.ndarray | None = None, image: np.ndarray | None = None,
            negatives: np.ndarray | None = None, *, text_weight: float = 1.0, image_weight: float = 1.0,
            negative_weight: float = 0.5) -> np.ndarray:
    """``unit(unit(wt*t + wi*i) - wn*mean(negatives))`` for unit input vectors.

    The positive part is the normalised weighted sum of the unit text and image vectors; each
    negative prompt pulls the query away from itself, their mean scaled by ``negative_weight``.
    """
    parts = [w * v for v, w in ((text, text_weight), (image, image_weight)) if v is not None]
    if not parts:
        raise ClipdexError("a search needs a text, an --image, or both")
    query = unit(np.sum(parts, axis=0))
    if negatives is not None and len(negatives):
        query = unit(query - negative_weight * np.mean(negatives, axis=0))
    return query


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
