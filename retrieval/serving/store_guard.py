"""Notice an embedded store deleted or replaced under a running server (it would answer from a ghost)."""

from __future__ import annotations

import os
from pathlib import Path

from retrieval import hints
from retrieval.store.base import VectorStore


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class StoreGuard:
    """Remembers the shard folder the server opened; :meth:`problem` says when it is no longer there.

    Only an embedded store that existed at start-up is watched: a Qdrant server reports its own errors,
    and a store created after start-up is not the one this process has open anyway.
    """

    def __init__(self, store: VectorStore):
        from retrieval.store.edge import SHARD_DIR, EdgeStore

        self.folder: Path | None = store.folder if isinstance(store, EdgeStore) else None
        self._shard = self.folder / SHARD_DIR if self.folder is not None else None
        self._opened = _identity(self._shard) if self._shard is not None else None

    def problem(self) -> str | None:
        """One line if the store this server opened was deleted or replaced since, else None."""
        if self._opened is None or self._shard is None:
            return None
        now = _identity(self._shard)
        if now == self._opened:
            return None
        what = "deleted" if now is None else "replaced by another one"
        return (f"the store {self.folder} was {what} while the server was running; "
                f"restart {hints.command('serve')} (after {hints.command('ingest DIR')})")
