"""File-system events of watched folders (watchdog), reduced to the paths that changed.

Which events matter: a created, modified, closed-after-writing, moved (both ends) or deleted path
below a watched root. Each one only *names* a path; what happened to it is decided later by looking
at the disk (``retrieval.sync.apply_changes``), so a burst of events for one file costs one look.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence

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


class FolderWatcher:
    """One watchdog observer over several roots; a root that cannot be watched now is retried later."""

    def __init__(self, roots: Sequence[str], notify: Callable[[str, list[str]], None]):
        self.roots = list(roots)
        self.notify = notify
        self.errors: dict[str, str] = {}
        self._watches: dict[str, ObservedWatch] = {}
        self._observer: BaseObserver = Observer()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._observer.start()
        for root in self.roots:
            self.ensure(root)

    def ensure(self, root: str) -> bool:
        """Watch ``root`` if it is not watched yet (it may have come back online); True if watched."""
        with self._lock:
            if root in self._watches and self._observer.is_alive():
                return True
            try:
                self._watches[root] = self._observer.schedule(_Collector(root, self.notify), root, recursive=True)
            except OSError as exc:  # missing, unreadable, or the inotify watch limit reached
                self.errors[root] = f"not watched: {exc.strerror or exc}"
                return False
            self.errors.pop(root, None)
            return True

    def forget(self, root: str) -> None:
        """Stop watching a root that went away (it is re-watched by :meth:`ensure` when it is back)."""
        with self._lock:
            watch = self._watches.pop(root, None)
            if watch is not None:
                with contextlib.suppress(KeyError, OSError):
                    self._observer.unschedule(watch)

    def watched(self, root: str) -> bool:
        return root in self._watches

    def stop(self) -> None:
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(10)
