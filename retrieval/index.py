"""The library API the CLI (and any other front end) is a thin shell over.

    from retrieval import Index, load_settings
    with Index.open(load_settings("configs/demo.toml")) as index:
        index.ingest(["samples/"])
        hits = index.search(text="a sneaker", limit=5)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ingest.decode import DecodeError, load_image
from ingest.pipeline import IngestReport, ingest
from ingest.records import path_key
from retrieval.encoder import Encoder
from retrieval.errors import ClipdexError
from retrieval.query import combine
from retrieval.settings import Settings
from retrieval.store import CollectionMeta, Hit, SearchFilter, VectorStore, open_store


class Index:
    """One collection and the model that fills it. The model loads on first use."""

    def __init__(self, settings: Settings, store: VectorStore, encoder: Encoder | None = None):
        self.settings = settings
        self.store = store
        self._encoder: Encoder | None = None
        self._check_model(self.store.meta())
        if encoder is not None:
            self._encoder = self._checked(encoder)

    @classmethod
    def open(cls, settings: Settings, *, create: bool = False, encoder: Encoder | None = None) -> Index:
        """Open the collection ``settings.store`` names (``create``: allow making it).

        ``encoder``: an already loaded model for these settings, to share it instead of loading it again.
        """
        return cls(settings, open_store(settings, create=create), encoder)

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # -- model ---------------------------------------------------------------------------------
    def _check_model(self, meta: CollectionMeta | None) -> None:
        model = self.settings.model
        if meta is not None and meta.model != model.name:
            raise ClipdexError(f"collection '{self.settings.store.collection}' was built with model {meta.model}, "
                               f"but the settings name {model.name}; use the same model or another --collection")

    def _checked(self, encoder: Encoder) -> Encoder:
        meta = self.store.meta()
        if meta is not None and (meta.pretrained, meta.dim) != (encoder.identity.pretrained, encoder.dim):
            raise ClipdexError(
                f"collection '{self.settings.store.collection}' holds vectors of {meta.model} with weights "
                f"{meta.pretrained or 'random init'} (dim {meta.dim}); the model now configured has weights "
                f"{encoder.identity.pretrained or 'random init'} (dim {encoder.dim}); use another --collection")
        return encoder

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = self._checked(Encoder.load(self.settings.model))
        return self._encoder

    # -- ingest --------------------------------------------------------------------------------
    def ingest(self, roots: Sequence[str | os.PathLike[str]], *, progress: bool = False,
               ray: str | None = None) -> IngestReport:
        """Embed new and changed images below ``roots``; drop points of files gone from them.

        ``ray``: run the stages on a Ray cluster at this address (``auto``, ``local``, ``HOST:PORT``;
        default ``[ray] address``, "" = in this process), see ``ingest.ray_ingest``.
        """
        if not roots:
            raise ClipdexError("ingest needs at least one folder")
        address = self.settings.ray.address if ray is None else ray
        if address:
            from ingest.ray_ingest import check_address, ingest_on_ray

            check_address(address)
        encoder = self.encoder
        if self.store.meta() is None:
            self.store.create(CollectionMeta(encoder.identity.name, encoder.identity.pretrained, encoder.dim))
        if address:
            return ingest_on_ray([os.fspath(r) for r in roots], self.store, encoder, self.settings,
                                 address=address, progress=progress)
        return ingest([os.fspath(r) for r in roots], self.store, encoder, self.settings.ingest,
                      batch_size=self.settings.model.batch_size, progress=progress)

    # -- search --------------------------------------------------------------------------------
    def query_vector(self, text: str | None = None, image: str | os.PathLike[str] | None = None,
                     negative: Sequence[str] = (), *, text_weight: float = 1.0, image_weight: float = 1.0,
                     negative_weight: float = 0.5) -> np.ndarray:
        """The unit vector a search compares against (see retrieval.query.combine)."""
        if text is not None and not text.strip():
            raise ClipdexError("the search text is empty")
        if text is None and image is None:
            raise ClipdexError("a search needs a text, an --image, or both")
        encoder = self.encoder
        texts = ([text] if text is not None else []) + [n for n in negative if n.strip()]
        text_vectors = encoder.encode_texts(texts) if texts else np.zeros((0, encoder.dim), np.float32)
        text_vec = text_vectors[0] if text is not None else None
        negatives = text_vectors[1:] if text is not None else text_vectors
        image_vec = encoder.encode_pil([self._query_image(image)])[0] if image is not None else None
        return combine(text_vec, image_vec, negatives, text_weight=text_weight, image_weight=image_weight,
                       negative_weight=negative_weight)

    def _query_image(self, image: str | os.PathLike[str]) -> Any:
        path = os.fspath(image)
        if not Path(path).is_file():
            raise ClipdexError(f"query image not found: {path}")
        try:
            return load_image(path, max_megapixels=self.settings.ingest.max_megapixels,
                              draft_size=self.encoder.image_size)
        except DecodeError as exc:
            raise ClipdexError(f"cannot read query image {path}: {exc}") from None

    def search(self, text: str | None = None, image: str | os.PathLike[str] | None = None,
               negative: Sequence[str] = (), *, limit: int | None = None, folder: str | None = None,
               min_score: float | None = None, after: float | None = None, before: float | None = None,
               camera: str | None = None, text_weight: float = 1.0, image_weight: float = 1.0,
               negative_weight: float = 0.5) -> list[Hit]:
        """Ranked hits, best first. ``folder`` restricts to a subtree inside Qdrant."""
        limit = self.settings.search.limit if limit is None else limit
        if limit < 1:
            raise ClipdexError(f"limit must be at least 1 (got {limit})")
        if self.store.meta() is None:
            raise ClipdexError(f"collection '{self.settings.store.collection}' is empty or missing at "
                               f"{self.store.location} (run `clipdex ingest DIR` first)")
        where = SearchFilter(folder=_folder_key(folder) if folder else None, after=after, before=before,
                             camera=camera)
        vector = self.query_vector(text, image, negative, text_weight=text_weight, image_weight=image_weight,
                                   negative_weight=negative_weight)
        return self.store.query(vector, limit, where, min_score)

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        meta = self.store.meta()
        return {"collection": self.settings.store.collection, "points": self.store.count(),
                "model": meta.model if meta else self.settings.model.name,
                "dim": meta.dim if meta else 0, "pretrained": meta.pretrained if meta else "",
                "store": self.store.location, "label": self.settings.model.label}


STATUS_KEYS = ("collection", "points", "model", "dim", "store")
"""What ``clipdex status --json`` prints (``Index.status`` has a few more fields)."""


def hit_row(hit: Hit) -> dict[str, Any]:
    """One search result as ``clipdex search --json`` and ``GET /api/search`` return it."""
    return {"path": hit.payload.get("path", ""), "score": round(hit.score, 6),
            **{k: v for k, v in hit.payload.items() if k not in ("path", "ancestors")}}


def _folder_key(folder: str) -> str:
    return path_key(os.path.abspath(os.path.expanduser(folder))).rstrip("/") or "/"
