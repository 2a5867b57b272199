"""A store shared between threads: every call takes one lock, for that call only.

``clipdex serve --watch`` runs searches on the request threads and an ingest on a sync thread against
one opened store (the embedded engine allows one opener per process). Wrapping the ingest's view of
the store in :class:`LockedStore` makes each of its calls (one batch upsert, one scroll page, one
delete) atomic with respect to the searches, which take the same lock for one search at a time; no
one holds the lock for a whole sync. A ``cancel`` event stops the ingest at its next store call.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

from retrieval.errors import ClipdexError
from retrieval.store.base import VectorStore


class SyncCancelled(ClipdexError):
    """The server is stopping: the sync using this store ends at its next store call."""


class LockedStore:
    """``store`` with each method call made under ``lock`` (generators: each item under it)."""

    def __init__(self, store: VectorStore, lock: threading.Lock | threading.RLock,
                 cancel: threading.Event | None = None):
        self._store = store
        self._lock = lock
        self._cancel = cancel

    def _check(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise SyncCancelled("sync cancelled: the server is stopping")

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def locked(*args: Any, **kwargs: Any) -> Any:
            self._check()
            with self._lock:
                result = attr(*args, **kwargs)
            return self._items(result) if inspect.isgenerator(result) else result

        return locked

    def _items(self, generator: Iterator[Any]) -> Iterator[Any]:
        step: Callable[[], Any] = functools.partial(next, generator)
        while True:
            self._check()
            with self._lock:
                try:
                    item = step()
                except StopIteration:
                    return
            yield item
