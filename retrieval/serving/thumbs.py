"""A bounded, thread-safe LRU of thumbnails, keyed by what makes a thumbnail stale."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

ThumbKey = tuple[str, int, int, int, int]


def thumb_key(path: str, size: int, st: os.stat_result) -> ThumbKey:
    """Path, requested size, and the file's mtime, byte size and inode (a replaced file is a new key)."""
    return path, size, st.st_mtime_ns, st.st_size, st.st_ino


class ThumbnailCache:
    """At most ``max_bytes`` of JPEG thumbnails; the least recently used go first."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[ThumbKey, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: ThumbKey) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: ThumbKey, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes += len(data) - (len(old) if old is not None else 0)
            self._items[key] = data
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted)
