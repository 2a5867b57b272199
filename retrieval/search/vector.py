"""The query vector: a request's text, example image and negative prompts turned into one unit vector."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.errors import ClipdexError
from retrieval.search.request import SearchRequest
from retrieval.vectors import unit

if TYPE_CHECKING:
    from retrieval.search.context import SearchContext


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


def query_vector(ctx: SearchContext, req: SearchRequest) -> np.ndarray:
    """The unit vector of ``req``'s text, example image and negative prompts (:func:`combine`)."""
    if not req.has_query:
        raise ClipdexError("a search needs a text, an example image, or both")
    if req.image is not None:
        check_query_image(os.fspath(req.image))  # before the model loads (a first search exports it)
    encoder = ctx.encoder
    texts = ([req.text] if req.text is not None else []) + list(req.negative)
    text_vectors = encoder.encode_texts(texts) if texts else np.zeros((0, encoder.dim), np.float32)
    text_vec = text_vectors[0] if req.text is not None else None
    negatives = text_vectors[1:] if req.text is not None else text_vectors
    image_vec = encoder.encode_pil([query_image(ctx, req.image)])[0] if req.image is not None else None
    return combine(text_vec, image_vec, negatives, text_weight=req.text_weight, image_weight=req.image_weight,
                   negative_weight=req.negative_weight)


def query_image(ctx: SearchContext, image: str | os.PathLike[str]) -> Any:
    """The decoded, bounded query image (a PIL image) of a path, with one line for what cannot be read."""
    from ingest.decode import DecodeError
    from ingest.query_image import query_image as decoded

    path = os.fspath(image)
    check_query_image(path)
    try:
        return decoded(path, size=ctx.encoder.image_size, max_megapixels=ctx.settings.ingest.max_megapixels)
    except DecodeError as exc:
        raise ClipdexError(f"cannot read query image {path}: {exc}") from None


def check_query_image(path: str) -> None:
    """One line for a query image that is missing, not a regular file (a FIFO would block: never opened) or not
    an image at all (its header alone says so), before any model loads."""
    from pathlib import Path

    from PIL import Image, UnidentifiedImageError

    from ingest.decode import _sniff  # also registers the HEIC/AVIF openers

    if not Path(path).exists():
        raise ClipdexError(f"query image not found: {path}")
    if not Path(path).is_file():
        raise ClipdexError(f"query image is not a regular file: {path}")
    try:
        with Image.open(path):  # the header only; the real decode, with its limits, comes later
            pass
    except UnidentifiedImageError:
        raise ClipdexError(f"cannot read query image {path}: {_sniff(path)}") from None
    except Exception:  # noqa: BLE001  anything else (a bomb, a truncated header): the full decode names it
        pass
