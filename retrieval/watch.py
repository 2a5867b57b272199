"""File-system events of watched folders (watchdog), reduced to the paths that changed.

Which events matter: a created, modified, closed-after-writing, moved (both ends) or deleted path
below a watched root. Each one only *names* a path; what happened to it is decided later by looking
at the disk (``retrieval.sync.apply_changes``), so a burst of events for one file costs one look.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from ingest.scan import glob_match, is_media_name
from retrieval.settings import IngestSettings

EVENTS = frozenset({"created", "modified", "moved", "deleted", "closed"})
"""watchdog event types that may change what a folder holds ("opened" and "closed_no_write" do not)."""


def relative(root: str, path: str) -> str | None:
    """``path`` relative to ``root`` with ``/`` separators, or None if it is not below it."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return None
    if rel == "." or rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        return None
    return rel.replace(os.sep, "/")


def selected(root: str, path: str, settings: IngestSettings, *, is_dir: bool) -> bool:
    """Whether a full scan of ``root`` would look at ``path`` (the rules of ``ingest.scan``).

    Hidden parts (with ``skip_hidden``), excluded folders above it and, for a file, its extension,
    ``include`` and ``exclude``; a symlink only with ``follow_symlinks``.
    """
    rel = relative(root, path)
    if rel is None:
        return False
    parts = rel.split("/")
    if settings.skip_hidden and any(p.startswith(".") for p in parts):
        return False
    if any(glob_match("/".join(parts[:i]), settings.exclude) for i in range(1, len(parts))):
        return False  # below an excluded folder, which a scan never enters
    if not settings.follow_symlinks and os.path.islink(path):
        return False
    if is_dir:
        return not glob_match(rel, settings.exclude)
    return (is_media_name(parts[-1], settings.video) and (not settings.include or glob_match(rel, settings.include))
            and not glob_match(rel, settings.exclude))


class _Collector(FileSystemEventHandler):
    """Hands every relevant path of one root's events to ``notify(root, paths)``."""

    def __init__(self, root: str, notify: Callable[[str, list[str]], None]):
        self.root = root
        self.notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in EVENTS or (event.is_directory and event.event_type in ("modified", "closed")):
            return  # a folder's "modified" only says its entries changed; they have events of their own
        paths = [os.fsdecode(event.src_path)]
        if event.event_type == "moved" and event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        below = [p for p in paths if relative(self.root, p) is not None]
        if below:
            self.notify(self.root, below)


class _Appearing(FileSystemEventHandler):
    """On the nearest existing folder above a missing root: calls ``appeared(root)`` when the root, or a
    folder on the way to it, is created or moved in."""

    def __init__(self, root: str, appeared: Callable[[str], None]):
        self.root = root
        self.appeared = appeared

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("created", "moved"):
            return
        path = os.fsdecode(event.dest_path if event.event_type == "moved" and event.dest_path else event.src_path)
        if path == self.root or self.root.startswith(path.rstrip("/") + "/"):
            self.appeared(self.root)


def nearest_existing(path: str) -> str:
    """The nearest folder at or above ``path`` that exists (``/`` at worst)."""
    current = path
    while not os.path.isdir(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of a folder, or None when it is missing or no folder: a watch follows an inode, so a
    root renamed away, replaced, or covered by a mount needs a new one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


@dataclass
class WatchState:
    """How one root is watched: ``watching`` (the folder itself, recursively), ``waiting`` (it is missing:
    its nearest existing parent is watched for it to appear) or ``failed`` (``error`` says why)."""

    state: str = "failed"
    parent: str = ""
    error: str = "not started"
    identity: tuple[int, int] | None = None


class FolderWatcher:
    """One watchdog observer over several roots. A root that is missing is waited for (its nearest existing
    parent is watched, not recursively); one that cannot be watched (the inotify limit) is retried later."""

    def __init__(self, roots: Sequence[str], notify: Callable[[str, list[str]], None],
                 appeared: Callable[[str], None] | None = None):
        self.roots = list(roots)
        self.notify = notify
        self.appeared = appeared or (lambda root: None)
        self.states: dict[str, WatchState] = {root: WatchState() for root in self.roots}
        self._watches: dict[str, ObservedWatch] = {}
        self._observer: BaseObserver = Observer()
        self._lock = threading.Lock()

    @property
    def errors(self) -> dict[str, str]:
        """Why each root that cannot be watched is not (roots being watched or waited for are not here)."""
        return {root: st.error for root, st in self.states.items() if st.state == "failed"}

    def start(self) -> None:
        self._observer.start()
        for root in self.roots:
            self.ensure(root)

    def ensure(self, root: str) -> bool:
        """Watch ``root`` (or wait for it, when missing) unless that is done already and the folder is still
        the one watched; True when the root itself is watched."""
        with self._lock:
            state = self.states.setdefault(root, WatchState())
            now = identity(root)
            wanted = "watching" if now is not None else "waiting"
            fresh = state.state == wanted and state.identity == now and root in self._watches
            if fresh and (wanted == "watching" or identity(state.parent) is not None) and self._observer.is_alive():
                return wanted == "watching"
            self._unschedule(root)
            try:
                if now is not None:
                    self._watches[root] = self._observer.schedule(_Collector(root, self.notify), root, recursive=True)
                    self.states[root] = WatchState("watching", identity=now, error="")
                else:
                    parent = nearest_existing(os.path.dirname(root))
                    self._watches[root] = self._observer.schedule(_Appearing(root, self.appeared), parent,
                                                                  recursive=False)
                    self.states[root] = WatchState("waiting", parent=parent, error="")
            except OSError as exc:  # unreadable, or the inotify watch limit reached
                reason = exc.strerror or str(exc)
                if exc.errno == errno.ENOSPC:
                    reason = "the inotify watch limit is reached (raise fs.inotify.max_user_watches)"
                self.states[root] = WatchState("failed", error=reason)
                return False
            return wanted == "watching"

    def changed(self, root: str) -> bool:
        """Whether the folder at ``root`` is no longer the one watched (renamed away, back, replaced, mounted)."""
        state = self.states.get(root)
        if state is None:
            return True
        now = identity(root)
        if state.state == "waiting":
            return now is not None or identity(state.parent) is None
        return now != state.identity

    def _unschedule(self, root: str) -> None:
        watch = self._watches.pop(root, None)
        if watch is not None:
            with contextlib.suppress(KeyError, OSError):
                self._observer.unschedule(watch)

    def forget(self, root: str) -> None:
        """Stop watching a root (:meth:`ensure` watches it again)."""
        with self._lock:
            self._unschedule(root)
            self.states[root] = WatchState("failed", error="not watched")

    def watched(self, root: str) -> bool:
        """True when changes below ``root`` are picked up now (the folder watched, or waited for)."""
        state = self.states.get(root)
        return state is not None and state.state in ("watching", "waiting")

    def stop(self) -> None:
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(10)
