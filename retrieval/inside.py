"""Open files and folders only where they may be: the one check every file operation goes through.

Serving a file (``/api/image``), moving a duplicate aside and putting it back (``clipdex duplicates``)
open what they work on once, and decide on the *open descriptor*, never on the name again:

- :func:`open_regular` opens without blocking (a FIFO or a device at a photo's path is refused, never
  waited on) and keeps only regular files;
- :func:`open_inside` also checks, through the kernel's own record of the descriptor
  (``/proc/self/fd``, ``F_GETPATH`` on macOS), that the file really lies inside an ingested root, by
  the roots' *real* paths (an alias of a root and the root are one folder);
- :func:`open_folder_inside` walks to a folder below a root one name at a time (``openat``), each step
  checked the same way, optionally creating what is missing: nothing is ever created outside a root;
- :func:`open_folder_below` walks below a folder outside the library (a ``--move-to`` folder, a
  manifest's folder) refusing every link on the way, so nothing there leads back into a root or out.

A later operation (``renameat``) uses those descriptors: swapping a folder for a link between the
check and the use has nothing to race.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

try:
    import fcntl
except ImportError:  # pragma: no cover  (not POSIX)
    fcntl = None  # type: ignore[assignment]

_READ = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class Refused(Exception):
    """A file or folder that may not be used here; ``str()`` is the one-line reason."""


def fd_path(fd: int) -> str | None:
    """The real path of what ``fd`` has open, as the kernel knows it (None where it cannot say)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)")
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
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root == "/" else root + "/")


def real_roots(roots: Iterable[str]) -> list[str]:
    """The real paths of ``roots`` (file-system paths), each once: an alias and its folder are one root."""
    return sorted({os.path.realpath(r) for r in roots if r})


@dataclass
class OpenedFile:
    """A regular file open for reading, and what ``fstat`` said about it when it was opened.

    ``dir_fd`` and ``name``: the folder it was opened in and its name there (a walk's result, for
    ``renameat``); -1 and "" when it was opened by its whole path."""

    fd: int
    real_path: str
    st: os.stat_result
    dir_fd: int = -1
    name: str = ""
    extra: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.st.st_size

    @property
    def identity(self) -> tuple[int, int]:
        return self.st.st_dev, self.st.st_ino

    def close(self) -> None:
        for fd in (self.fd, self.dir_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.dir_fd = -1

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _os_line(exc: OSError, path: str) -> str:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return f"gone from disk: {path}"
    return f"cannot be opened ({exc.strerror or exc}): {path}"


def open_regular(path: str, *, dir_fd: int | None = None, follow: bool = True, shown: str | None = None) -> OpenedFile:
    """Open ``path`` (relative to ``dir_fd`` if given) for reading without ever blocking, and only if it is a
    regular file (a FIFO, socket or device is refused); ``follow=False`` also refuses a link."""
    shown = shown or path
    try:
        fd = os.open(path, _READ | (0 if follow else _NOFOLLOW), dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(f"a link, not a regular file: {shown}") from None
        raise Refused(_os_line(exc, shown)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"not a regular file: {shown}")
        os.set_blocking(fd, True)
        return OpenedFile(fd, "", st)
    except BaseException:
        os.close(fd)
        raise


def _check_inside(fd: int, reals: list[str], shown: str) -> str:
    real = fd_path(fd)
    if real is None:
        raise Refused(f"cannot tell where {shown} really is on this system, so it is not used")
    if not any(inside(real, r) for r in reals):
        raise Refused(f"leads outside the ingested folders: {shown}")
    return real


def open_inside(path: str, roots: Iterable[str], *, follow: bool = True) -> OpenedFile:
    """Open ``path`` once for reading; :class:`Refused` unless it is a regular file whose real path (of the
    open descriptor) is inside one of ``roots`` (file-system paths, resolved here).

    ``follow=True``: links on the way are followed (a link from one photo to another inside the library
    still works; what counts is where the descriptor lands). ``follow=False``: the folder is reached by
    :func:`open_folder_inside` and the file itself may not be a link; ``dir_fd``/``name`` are set."""
    reals = real_roots(roots)
    if follow:
        opened = open_regular(path)
        try:
            opened.real_path = _check_inside(opened.fd, reals, path)
            return opened
        except BaseException:
            opened.close()
            raise
    folder, name = os.path.split(os.path.abspath(path))
    dir_fd = open_folder_inside(folder, roots)
    try:
        opened = open_regular(name, dir_fd=dir_fd, follow=False, shown=path)
    except BaseException:
        os.close(dir_fd)
        raise
    opened.dir_fd, opened.name = dir_fd, name
    try:
        opened.real_path = _check_inside(opened.fd, reals, path)
    except BaseException:
        opened.close()
        raise
    return opened


def _parts(rel: str, shown: str) -> list[str]:
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise Refused(f"a path with '.' or '..' in it is not used: {shown}")
    return parts


def _root_of(path: str, roots: Iterable[str]) -> str | None:
    """The deepest of ``roots`` that ``path`` lies below, by name (None: below none)."""
    best = None
    for r in roots:
        r = os.path.abspath(r)
        if inside(path, r) and (best is None or len(r) > len(best)):
            best = r
    return best


def open_folder_inside(folder: str, roots: Iterable[str], *, create: bool = False,
                       created: list[str] | None = None) -> int:
    """A descriptor of ``folder`` (absolute), reached from the ingested root it lies below one name at a time,
    each step checked to be inside a root's real path; with ``create``, missing folders are made (only ever
    inside a checked folder; each one made is appended to ``created``). Raises :class:`Refused`."""
    roots = list(roots)
    reals = real_roots(roots)
    folder = os.path.abspath(folder)
    start = _root_of(folder, roots)
    if start is None:
        raise Refused(f"not below an ingested folder: {folder}")
    parts = _parts(folder[len(start):], folder)
    try:
        fd = os.open(start, _DIR)
    except OSError as exc:
        raise Refused(_os_line(exc, start)) from None
    try:
        _check_inside(fd, reals, start)
        here = start
        for part in parts:
            here = os.path.join(here, part)
            handed, fd = fd, -1  # _step closes it
            fd = _step(handed, part, here, create, created, lambda nfd, shown: _check_inside(nfd, reals, shown))
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def open_folder_below(base: str, rel: str, *, create: bool = False, created: list[str] | None = None) -> int:
    """A descriptor of ``base/rel``: ``base`` opened as given, then each name of ``rel`` with no link allowed
    (so nothing below ``base`` leads elsewhere); with ``create``, missing folders are made."""
    try:
        fd = os.open(base, _DIR)
    except OSError as exc:
        raise Refused(_os_line(exc, base)) from None
    try:
        here = base
        for part in _parts(rel, os.path.join(base, rel)):
            here = os.path.join(here, part)
            handed, fd = fd, -1  # _step closes it
            fd = _step(handed, part, here, create, created, None)
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def _step(fd: int, part: str, shown: str, create: bool, created: list[str] | None,
          check: Callable[[int, str], object] | None) -> int:
    """One name further down from ``fd`` (closed here; the new descriptor is returned). ``check``: where a
    link to a folder may be followed, the check of where it lands (None: no link is allowed)."""
    try:
        return _open_step(fd, part, shown, create, created, check)
    finally:
        os.close(fd)


def _open_step(fd: int, part: str, shown: str, create: bool, created: list[str] | None,
               check: Callable[[int, str], object] | None) -> int:
    try:
        return os.open(part, _DIR | _NOFOLLOW, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise Refused(f"gone from disk: {shown}") from None
        try:
            os.mkdir(part, dir_fd=fd)
            if created is not None:
                created.append(shown)
        except FileExistsError:
            pass  # made meanwhile: opened below without following a link, like any other
        except OSError as exc:
            raise Refused(f"cannot create {shown}: {exc.strerror or exc}") from None
        try:
            return os.open(part, _DIR | _NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            raise Refused(_os_line(exc, shown)) from None
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise Refused(_os_line(exc, shown)) from None
        if check is None:
            raise Refused(f"a link or a file where a folder should be: {shown}") from None
    try:  # a link to a folder: followed, and checked where it lands
        nfd = os.open(part, _DIR, dir_fd=fd)
    except OSError as exc:
        raise Refused(_os_line(exc, shown)) from None
    try:
        check(nfd, shown)
    except BaseException:
        os.close(nfd)
        raise
    return nfd


_RENAME_NOREPLACE = 1
_libc = None


def rename_noreplace(src: str, dst: str, *, src_dir_fd: int, dst_dir_fd: int) -> None:
    """Rename ``src`` (in folder ``src_dir_fd``) to ``dst`` (in ``dst_dir_fd``), never over an existing file
    (``renameat2(RENAME_NOREPLACE)``; where the system lacks it, a check just before a plain rename)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        call = _libc.renameat2
    except (OSError, AttributeError):
        call = None
    if call is not None:
        if call(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), dst)
    try:
        os.lstat(dst, dir_fd=dst_dir_fd)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    raise FileExistsError(errno.EEXIST, "File exists", dst)
