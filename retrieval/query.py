"""Turning text, image and negative-prompt vectors into one query vector."""

from __future__ import annotations

import numpy as np

from retrieval.errors import ClipdexError


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
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
