"""The writer stage: upsert batches on a background thread so encoding never waits on the store."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from retrieval.store import VectorStore


class AsyncUpserter:
    """Upserts in order on one thread; ``lock`` serialises every other use of the store meanwhile.

    Every ``flush_every`` points the store is flushed, so its write-ahead log can be truncated during a
    long ingest instead of growing with it (disk and mapped memory).
    """

    def __init__(self, store: VectorStore, depth: int = 8, flush_every: int = 50_000):
        self.store = store
        self.lock = threading.Lock()
        self.points = 0  # points upserted so far
        self.flush_every = flush_every
        self._since_flush = 0
        self._queue: queue.Queue[tuple[list[str], np.ndarray, list[dict[str, Any]]] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="clipdex-upsert", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    with self.lock:
                        self.store.upsert(*item)
                        self.points += len(item[0])
                        self._since_flush += len(item[0])
                        if self._since_flush >= self.flush_every:
                            self.store.flush()
                            self._since_flush = 0
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc
            self._queue.task_done()
        self._queue.task_done()

    def put(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        self._raise()
        if ids:
            self._queue.put((list(ids), vectors, list(payloads)))

    def wait(self) -> None:
        """Block until everything put so far is stored; raise the first upsert error, if any."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Wait until everything queued is stored; raise the first upsert error, if any."""
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
