"""The encoder interface: what ``Index`` (and every other caller that embeds queries) relies on.

A backend (torch, ONNX Runtime) subclasses :class:`Encoder` and implements ``_encode_texts`` and
``encode_pil``; the LRU cache of recent texts lives here, so every backend has it. No torch here.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # a text search loads no PIL
    from PIL import Image


@dataclass(frozen=True)
class ModelIdentity:
    """What a collection records about the model that filled it."""

    name: str
    pretrained: str
    dim: int
    weights: str = ""
    """Content hash of the weights file (``xxh3:…``), "" for tags and random weights: see
    :func:`retrieval.model.weights.weights_fingerprint`."""
    student_of: str = ""
    """For a model folder written by ``clipdex distill``: the teacher whose vector space (and text
    tower) it shares, as its config records it; "" otherwise."""

    def describe(self) -> str:
        return f"{self.name} ({self.pretrained or 'random init'}, dim {self.dim})"


class Encoder(ABC):
    """A model's image and text towers: unit float32 vectors for texts and PIL images."""

    TEXT_CACHE_SIZE = 1024
    """How many recent texts keep their vectors (about 2 MB at 512 dimensions)."""

    identity: ModelIdentity
    precision: str
    """The numeric path the towers run on (fp32, fp16, int8, ...)."""
    image_size: int
    """The side of the square images the image tower takes."""
    context_length: int
    ingests: bool = False
    """Can it embed ingest batches (``encode_images`` of preprocessed tensors)? The torch backend can."""

    def __init__(self) -> None:
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_cache_lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.identity.dim

    @property
    def engines(self) -> dict[str, str]:
        """Which engine runs each tower (``{"image": "torch int8", "text": ...}``), as ``clipdex status`` shows."""
        return dict.fromkeys(("image", "text"), f"{type(self).__name__} {self.precision}")

    @abstractmethod
    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed already-decoded PIL images into unit vectors ``(N, dim)``."""

    @abstractmethod
    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """Embed texts (no cache) into unit vectors ``(N, dim)``."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts into unit vectors ``(N, dim)``; recent texts come from the LRU cache."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._text_cache_lock:
            cached = {t: v for t in texts if (v := self._text_cache.get(t)) is not None}
            for text in cached:
                self._text_cache.move_to_end(text)
        missing = list(dict.fromkeys(t for t in texts if t not in cached))
        if missing:
            fresh = dict(zip(missing, self._encode_texts(missing), strict=True))
            with self._text_cache_lock:
                for text, vector in fresh.items():
                    self._text_cache[text] = vector.copy()
                while len(self._text_cache) > self.TEXT_CACHE_SIZE:
                    self._text_cache.popitem(last=False)
            cached.update(fresh)
        return np.stack([cached[t] for t in texts])
