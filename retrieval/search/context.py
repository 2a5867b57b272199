"""What the search path needs of an open collection (``retrieval.index.Index`` is one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from retrieval.model.encoder import Encoder
    from retrieval.settings import Settings
    from retrieval.store import VectorStore


class SearchContext(Protocol):
    """An open store, the settings it was opened with, and the model that embeds queries."""

    settings: Settings
    store: VectorStore

    @property
    def encoder(self) -> Encoder: ...
