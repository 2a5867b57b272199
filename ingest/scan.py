"""Walk image folders: which files to ingest, with their size and mtime.

Rules (the contract ``clipdex ingest`` relies on):

* Image files only, chosen by extension (:data:`IMAGE_EXTENSIONS`, case-insensitive).
* Globs: a pattern matches a file when it matches the file's path relative to its root
  (POSIX ``/`` separators) **or** its basename. ``*`` and ``?`` never cross ``/``; ``**`` matches
  any number of whole path components (``**/x.jpg``, ``a/**``, ``a/**/b``); ``[abc]``/``[!abc]`` are
  character classes. Matching is case-insensitive. With ``include`` given, a file must match one
  of them; a file or folder matching an ``exclude`` pattern is skipped (an excluded folder is not
  entered at all).
* Hidden: with ``skip_hidden``, any file or folder below a root whose name starts with ``.`` is
  skipped (the root's own path may contain dots).
* Symlinks: without ``follow_symlinks`` every symlink below a root (to a file or a folder) is
  ignored. With it they are followed; each folder (by ``st_dev, st_ino``) is walked at most once, so
  loops terminate, and real paths are walked before symlinked ones so a file reached both ways keeps
  its real path. A root itself is always followed.
* Each file (by ``st_dev, st_ino``) is listed once, even if reached through several roots, symlinks
  or hard links: the first path found, real paths before symlinked ones.
* Paths are absolute (``os.path.abspath``, not resolved through symlinks) ``str`` with
  ``os.fsdecode`` semantics: non-UTF-8 names keep their bytes as surrogate escapes.
* A root that is an image file is listed as itself (globs match its basename; hidden is not
  applied). :func:`scan_roots` reports a root that is missing, cannot be listed, or is neither a
  folder nor an image file in :attr:`RootListing.error` (an offline drive is not an error to the
  ingest that finds it); :func:`scan` raises :class:`ClipdexError` for it. Unreadable folders, and
  (when following symlinks) broken or looping symlinks, become :class:`ScanProblem` entries; nothing
  below a root raises. Non-regular files (FIFOs, devices) named like images are skipped.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from retrieval.errors import ClipdexError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)
"""Lower-case file extensions, with the dot, that ``scan`` treats as images."""

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".3gp", ".mts", ".m2ts"})
"""Lower-case file extensions, with the dot, that ``scan`` also lists with ``video=True`` (ingest.video)."""


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """An image file found by :func:`scan`, with the root (absolute path) it was found under."""

    path: str
    size: int
    mtime_ns: int
    root: str = ""


@dataclass(frozen=True, slots=True)
class ScanProblem:
    """A path below a root that could not be walked, with a one-line reason."""

    path: str
    error: str


@dataclass(frozen=True)
class RootListing:
    """One root as :func:`scan_roots` found it: ``error`` is "" when it could be listed."""

    path: str
    error: str = ""
    is_file: bool = False  # the root is an image file, not a folder


@dataclass
class Listing:
    """What :func:`scan_roots` found: files and problems sorted by path, and each root's state."""

    files: list[ScannedFile]
    problems: list[ScanProblem]
    roots: list[RootListing]


def is_image_name(name: str) -> bool:
    """Whether a file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_video_name(name: str) -> bool:
    """Whether a file name has one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def is_media_name(name: str, video: bool = False) -> bool:
    """An image name, or (with ``video``) a video name."""
    return is_image_name(name) or (video and is_video_name(name))


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob (see the module docstring) to a case-insensitive full-match regex."""
    pat = pattern.replace(os.sep, "/").lstrip("/")
    while pat.startswith("./"):
        pat = pat[2:]
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if pat.startswith("**", i):
            j = i + 2
            while j < n and pat[j] == "*":
                j += 1
            at_start = i == 0 or pat[i - 1] == "/"
            if at_start and j < n and pat[j] == "/":  # "**/": zero or more whole components
                out.append("(?:.*/)?")
                j += 1
            elif at_start and j == n and i > 0:  # "a/**": everything below a (and a itself)
                out[-1] = "(?:/.*)?"
            else:
                out.append(".*")
            i = j
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pat[j] in "!^":
                j += 1
            if j < n and pat[j] == "]":
                j += 1
            while j < n and pat[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal "["
                out.append(re.escape(c))
            else:
                body = pat[i + 1 : j]
                negate = body[:1] in ("!", "^")
                body = body[1:] if negate else body
                body = body.replace("\\", "\\\\")
                out.append(f"[{'^/' if negate else ''}{body}]")
                i = j + 1
                continue
        elif c == "/":
            out.append("/")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def glob_match(rel_path: str, patterns: Sequence[str]) -> bool:
    """Whether a POSIX relative path (or its basename) matches any of the globs."""
    base = rel_path.rsplit("/", 1)[-1]
    return any(glob_regex(p).fullmatch(rel_path) or glob_regex(p).fullmatch(base) for p in patterns)


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(exc, FileNotFoundError):
        return "vanished during scan"
    return (exc.strerror or str(exc) or type(exc).__name__).splitlines()[0]


def scan(
    roots: Sequence[str | os.PathLike[str]],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    follow_symlinks: bool = False,
    skip_hidden: bool = True,
    video: bool = False,
) -> tuple[list[ScannedFile], list[ScanProblem]]:
    """Find image files below ``roots``; returns files and problems, both sorted by path.

    A root that is missing, unlistable or not a folder/image file raises :class:`ClipdexError`.
    """
    listing = scan_roots(roots, include=include, exclude=exclude, follow_symlinks=follow_symlinks,
                         skip_hidden=skip_hidden, video=video)
    for root in listing.roots:
        if root.error:
            raise ClipdexError(root_message(root))
    return listing.files, listing.problems


def root_message(root: RootListing) -> str:
    if root.error == MISSING:
        return f"no such file or folder: {root.path}"
    if root.error == NOT_A_FOLDER:
        return f"not a folder or an image file: {root.path}"
    return f"cannot read {root.path}: {root.error}"


MISSING = "missing (not mounted?)"
NOT_A_FOLDER = "not a folder or an image file"
EMPTY = "empty (not mounted?)"


def root_error(top: str) -> str:
    """Why the root ``top`` looks offline ("" when it does not): missing, not a folder, empty, or the OS reason."""
    try:
        st = os.stat(top)
    except FileNotFoundError:
        return MISSING
    except OSError as exc:
        return _reason(exc)
    if stat.S_ISREG(st.st_mode) and is_media_name(top, True):
        return ""
    if not stat.S_ISDIR(st.st_mode):
        return NOT_A_FOLDER
    try:
        with os.scandir(top) as it:
            first = next(it, None)
    except OSError as exc:
        return _reason(exc)
    return EMPTY if first is None else ""


def scan_roots(
    roots: Sequence[str | os.PathLike[str]],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    follow_symlinks: bool = False,
    skip_hidden: bool = True,
    video: bool = False,
) -> Listing:
    """Find image files (and with ``video`` video files) below ``roots``; a root that cannot be listed is
    reported, never raised."""
    include, exclude = tuple(include), tuple(exclude)
    files: dict[tuple[int, int], ScannedFile] = {}
    problems: list[ScanProblem] = []
    listed: dict[str, RootListing] = {}
    seen_dirs: set[tuple[int, int]] = set()
    # (absolute folder path, its root, (st_dev, st_ino)): real folders are walked first, symlinked ones
    # after, and a folder is marked seen when walked, so a folder reached both ways keeps its real path
    real: deque[tuple[str, str, tuple[int, int]]] = deque()
    linked: deque[tuple[str, str, tuple[int, int]]] = deque()
    linked_files: list[tuple[str, os.stat_result, str]] = []  # symlinks to files: added after real paths

    def add_file(path: str, st: os.stat_result, top: str) -> None:
        files.setdefault((st.st_dev, st.st_ino), ScannedFile(path, st.st_size, st.st_mtime_ns, top))

    for root in roots:
        top = os.path.abspath(os.fsdecode(root))
        listed[top] = RootListing(top)
        try:
            st = os.stat(top)
        except OSError as exc:
            listed[top] = RootListing(top, MISSING if isinstance(exc, FileNotFoundError) else _reason(exc))
            continue
        if stat.S_ISDIR(st.st_mode):
            real.append((top, top, (st.st_dev, st.st_ino)))
        elif stat.S_ISREG(st.st_mode) and is_media_name(top, video):
            listed[top] = RootListing(top, is_file=True)
            name = os.path.basename(top)
            if (not include or glob_match(name, include)) and not glob_match(name, exclude):
                add_file(top, st, top)
        else:
            listed[top] = RootListing(top, NOT_A_FOLDER)

    while real or linked:
        folder, top, key = real.popleft() if real else linked.popleft()
        if key in seen_dirs:
            continue
        seen_dirs.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if folder == top:
                listed[top] = RootListing(top, _reason(exc))
            else:
                problems.append(ScanProblem(folder, _reason(exc)))
            continue
        prefix = "" if folder == top else os.path.relpath(folder, top).replace(os.sep, "/") + "/"
        for entry in entries:
            if skip_hidden and entry.name.startswith("."):
                continue
            path, rel = entry.path, prefix + entry.name
            is_link = entry.is_symlink()
            if is_link and not follow_symlinks:
                continue
            try:
                is_dir = entry.is_dir()  # no system call for plain entries (d_type)
            except OSError:
                is_dir = False
            if not is_dir and not is_link and not is_media_name(entry.name, video):
                continue  # (a followed symlink is checked: a broken one may be an unmounted folder)
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                problems.append(ScanProblem(path, _link_reason(path, exc) if is_link else _reason(exc)))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key not in seen_dirs and not glob_match(rel, exclude):
                    (linked if is_link else real).append((path, top, key))
            elif (stat.S_ISREG(st.st_mode) and is_media_name(entry.name, video)
                  and (not include or glob_match(rel, include)) and not glob_match(rel, exclude)):
                if is_link:
                    linked_files.append((path, st, top))
                else:
                    add_file(path, st, top)
    for path, st, top in linked_files:
        add_file(path, st, top)
    return Listing(sorted(files.values(), key=lambda f: f.path), sorted(problems, key=lambda p: p.path),
                   list(listed.values()))


def _link_reason(path: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        return "broken symlink"
    return _reason(exc)
