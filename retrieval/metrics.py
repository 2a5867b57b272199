"""Retrieval metrics as small pure numpy functions (CLIP_benchmark definitions).

Each function takes a block of query rows of a score matrix (higher = more similar) and returns
one value per query, so callers can process large sets in chunks and average at the end.
Ties are counted against the query: a positive only ranks above a negative that scores less.
"""

from __future__ import annotations

import numpy as np


def hits_at_k(scores: np.ndarray, positives: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1.0 if any positive is in the top ``k``, else 0.0.

    ``positives`` is a boolean mask shaped like ``scores``. A query hits when fewer than ``k``
    negatives score at least as high as its best positive (CLIP_benchmark's recall@K).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    best = np.where(positives, scores, -np.inf).max(axis=1, keepdims=True)
    above = ((scores >= best) & ~positives).sum(axis=1)
    return ((above < k) & positives.any(axis=1)).astype(np.float64)


def t2i_positives(text_image: np.ndarray, n_images: int) -> np.ndarray:
    """Mask ``(n_texts, n_images)``: text ``t`` is a caption of image ``text_image[t]``."""
    return np.asarray(text_image)[:, None] == np.arange(n_images)[None, :]


def i2t_positives(text_image: np.ndarray, n_images: int) -> np.ndarray:
    """Mask ``(n_images, n_texts)``: image ``i`` is captioned by every text with ``text_image == i``."""
    return t2i_positives(text_image, n_images).T


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` best gallery items per query (stable order on ties).

    ``exclude`` gives, per query, one gallery index to leave out (the query itself), or -1.
    """
    scores = np.array(scores, dtype=np.float64)
    if exclude is not None:
        rows = np.nonzero(np.asarray(exclude) >= 0)[0]
        scores[rows, np.asarray(exclude)[rows]] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def precision_at_k(scores: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, k: int,
                   exclude: np.ndarray | None = None) -> np.ndarray:
    """Per query: the fraction of its top ``k`` gallery items that share its label.

    With fewer than ``k`` candidates (gallery minus the excluded query) all of them are the top.
    """
    k = min(k, np.shape(scores)[1] - (1 if exclude is not None else 0))
    top = top_k(scores, k, exclude)
    same = np.asarray(gallery_labels)[top] == np.asarray(query_labels)[:, None]
    return same.mean(axis=1)


def average_precision(scores: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                      exclude: np.ndarray | None = None) -> np.ndarray:
    """Per query: average precision over the full ranking; relevant = same label, self excluded."""
    scores = np.array(scores, dtype=np.float64)
    n_gallery = scores.shape[1]
    relevant = np.asarray(gallery_labels)[None, :] == np.asarray(query_labels)[:, None]
    if exclude is not None:
        rows = np.nonzero(np.asarray(exclude) >= 0)[0]
        cols = np.asarray(exclude)[rows]
        relevant[rows, cols] = False
        scores[rows, cols] = -np.inf  # ranked last and never relevant: no effect on AP
    order = np.argsort(-scores, axis=1, kind="stable")
    rel = np.take_along_axis(relevant, order, axis=1)
    cum = np.cumsum(rel, axis=1)
    precision = cum / np.arange(1, n_gallery + 1)[None, :]
    n_rel = rel.sum(axis=1)
    ap = (precision * rel).sum(axis=1) / np.maximum(n_rel, 1)
    return np.where(n_rel > 0, ap, 0.0)


def class_vectors(prompt_vectors: np.ndarray) -> np.ndarray:
    """Prompt ensembling: ``(classes, templates, dim)`` unit vectors -> ``(classes, dim)`` unit means."""
    mean = np.asarray(prompt_vectors, dtype=np.float64).mean(axis=1)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def zero_shot_correct(image_vectors: np.ndarray, class_vecs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image: 1.0 if its most similar class vector is its own label."""
    predicted = np.argmax(np.asarray(image_vectors) @ np.asarray(class_vecs).T, axis=1)
    return (predicted == np.asarray(labels)).astype(np.float64)
