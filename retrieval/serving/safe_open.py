"""Open an indexed file exactly once, and only if what was opened lies inside an ingested root.

The file is opened by its stored path (links are followed, so a link from one photo to another inside
the library still works), then the *open descriptor's* real path is read from the kernel
(``/proc/self/fd``, or ``F_GETPATH`` on macOS) and must lie inside an ingested root. Everything after
that (content type, thumbnail, the bytes sent) reads from that descriptor, never from the name again:
swapping the name for a link to ``/etc/shadow`` between the check and the read has nothing to race.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

try:
    import fcntl
except ImportError:  # pragma: no cover  (not POSIX)
    fcntl = None  # type: ignore[assignment]

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
"""Non-blocking, so a FIFO put in a photo's place cannot hang the open (it is then refused as not regular)."""


class NotServable(Exception):
    """The indexed path cannot be served; ``str()`` is the one-line reason (answered 404)."""


def fd_path(fd: int) -> str | None:
    """The real path of what ``fd`` has open, as the kernel knows it (None where it cannot say)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
    getpath = getattr(fcntl, "F_GETPATH", None)
    if getpath is not None:
        try:
            return os.fsdecode(fcntl.fcntl(fd, getpath, b"\0" * 1024).rstrip(b"\0"))
        except OSError:
            return None
    return None


def inside(path: str, root: str) -> bool:
    """True if ``path`` is ``root`` or below it (both absolute and resolved)."""
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/")


@dataclass
class OpenedFile:
    """A regular file open for reading, and what ``fstat`` said about it when it was opened."""

    fd: int
    real_path: str
    st: os.stat_result

    @property
    def size(self) -> int:
        return self.st.st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_inside(path: str, roots: Iterable[str]) -> OpenedFile:
    """Open ``path`` once for reading; raise :class:`NotServable` unless it is a regular file whose real
    path (of the open descriptor) is inside one of ``roots`` (given as stored; resolved here)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        raise NotServable(f"indexed file is gone from disk: {path}") from None
    except OSError as exc:
        raise NotServable(f"indexed file cannot be opened ({exc.strerror or exc}): {path}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotServable(f"indexed path is not a regular file: {path}")
        real = fd_path(fd)
        if real is None:
            raise NotServable(f"cannot tell where {path} really is on this system, so it is not served")
        real = real.removesuffix(" (deleted)")
        if not any(inside(real, os.path.realpath(root)) for root in roots):
            raise NotServable(f"indexed path now leads outside the ingested folders, not served: {path}")
        os.set_blocking(fd, True)
        return OpenedFile(fd, real, st)
    except BaseException:
        os.close(fd)
        raise
