"""Disk space for the embedded store: checked before every write, so no mapped file grows on a full disk.

qdrant-edge keeps its files memory-mapped. A mapped file that grows on a disk with no space left does not
fail a system call: the kernel sends SIGBUS and the process dies with no message (Python cannot catch
that reliably). So clipdex prevents it: before each write it compares the free space (``os.statvfs``)
with an estimate of what the write needs, and refuses with one line (:class:`NoSpace`) when it does not
fit. Reads need no space on a disk file system (a hole in a file reads as zeros).

On a memory-backed file system (tmpfs) even *reading* a hole of a mapped file allocates a page, and
opening a store reads its vector and payload-index files whole. There, before an open, those files are
allocated with ``fallocate`` (which fails with ENOSPC instead of SIGBUS), every write keeps room for the
holes the next open would fill, and a store that was written is allocated again when it is closed, so
it opens, and is searched, on a full disk.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import math
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from retrieval.errors import ClipdexError

MIB = 1 << 20
SLACK = 8 * MIB
"""Room every write keeps besides its estimate: a page for each mapped file it may touch, a new
write-ahead-log segment's header, the metadata files."""
CREATE_BYTES = 20 * MIB
"""What an empty collection takes (measured: 15.2 MiB on tmpfs, its payload indexes' first pages)."""
NEW_STORE_HOLES = 72 * MIB
"""tmpfs: what the first open of a new collection allocates (measured: 65.2 MiB, its first vector chunk
and its payload indexes' pages)."""
CHUNK_BYTES = 32 * MIB
"""tmpfs: a write may start a new vector chunk, which the next open allocates whole."""
SEGMENT_BYTES = 48 * MIB
"""The fixed part of a new segment an index build writes (measured: 31-35 MiB for 2,048 points)."""
_TMPFS_MAGIC = 0x01021994


class NoSpace(ClipdexError):
    """A write (or an open, on tmpfs) would not fit in the free space of the store's file system."""


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path`` (or its parent)."""
    st = os.statvfs(_existing(path))
    return st.f_bavail * st.f_frsize


def memory_backed(path: Path) -> bool:
    """Whether ``path`` lies on tmpfs, where reading a hole of a mapped file allocates memory."""
    return _fs_type(os.fsencode(_existing(path))) == _TMPFS_MAGIC


def upsert_bytes(points: int, dim: int, payload_bytes: int) -> int:
    """An estimate (twice what was measured) of what storing ``points`` vectors with their payloads takes:
    each vector twice (its storage and the write-ahead log), each payload three times (storage, log,
    keyword indexes), and per point a little bookkeeping."""
    return 2 * (points * (8 * dim + 512) + 3 * payload_bytes) + SLACK


def small_write_bytes(points: int) -> int:
    """A delete or a payload update of ``points`` points: log entries and payload copies."""
    return points * 4096 + SLACK


def optimize_bytes(points: int, dim: int, m: int) -> int:
    """An index build writes a new segment beside the old ones: vectors, payloads, indexes and the graph."""
    return SEGMENT_BYTES + points * (8 * dim + 16 * m + 4096) + SLACK


def rebuild_bytes(points: int, dim: int, payload_bytes: int, m: int, segment_points: int) -> int:
    """``clipdex rebuild`` writes a whole new shard beside the old one before it switches: a new collection,
    every point stored again, and the index build of each full segment (one at a time)."""
    return CREATE_BYTES + upsert_bytes(points, dim, payload_bytes) + optimize_bytes(min(points, segment_points), dim, m)


def require(folder: Path, needed: int, what: str, *, new: bool = False) -> None:
    """Raise :class:`NoSpace` unless ``needed`` bytes, and what the next open of the store in ``folder``
    needs (tmpfs: its unallocated holes, and those a write may add), are free. ``new``: a collection is
    being created."""
    free = free_bytes(folder)
    total = needed
    if memory_backed(folder):
        total += sum(missing for _, missing in _holes(folder)) + (NEW_STORE_HOLES if new else CHUNK_BYTES)
    if free < total:
        raise NoSpace(message(folder, free, total, what))


def message(folder: Path, free: int, needed: int, what: str) -> str:
    return (f"no space left on {_mount_point(folder)} ({free // MIB} MB free, about {math.ceil(needed / MIB)} MB "
            f"needed to {what} in store {folder}); free some space, or use a store on a larger disk")


def allocate_for_open(folder: Path, *, strict: bool = True) -> None:
    """On tmpfs, allocate the files an open reads whole, so reading them can never hit a full disk.

    ``strict``: raise :class:`NoSpace` when they do not fit (before an open); else leave it to the next open.
    """
    if not memory_backed(folder):
        return
    holes = list(_holes(folder))
    for path, _ in holes:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # gone or unreadable: the engine reports it when it opens the store
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or not strict:
                continue
            needed = sum(missing for _, missing in _holes(folder))
            raise NoSpace(message(folder, free_bytes(folder), needed, "open the store")) from None
        finally:
            os.close(fd)


def _holes(folder: Path) -> Iterator[tuple[str, int]]:
    """(file, unallocated bytes) of each file below ``folder/shard/segments`` that an open maps and reads
    whole: every one but the payload storage (read point by point)."""
    top = folder / "shard" / "segments"
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d != "payload_storage"]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            missing = st.st_size - st.st_blocks * 512
            if missing > 0 and os.path.isfile(path):
                yield path, missing


def _existing(path: Path) -> Path:
    """``path`` or the nearest folder above it that exists (a store folder may not be made yet)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _mount_point(path: Path) -> str:
    path = _existing(path)
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return str(path)


class _StatFs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 120)]


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


def _fs_type(path: bytes) -> int:
    """The file system's magic number (``statfs(2)``'s ``f_type``; 0 where that call is not available)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "statfs") or os.uname().sysname != "Linux":
        return 0
    buf = _StatFs()
    return int(buf.f_type) if libc.statfs(path, ctypes.byref(buf)) == 0 else 0
