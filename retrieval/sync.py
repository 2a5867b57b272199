"""Keep watched folders in sync from inside ``clipdex serve``: one sync thread, its queue and status.

Work comes from three places: a full sync of every root at start, ``POST /api/ingest`` and the
periodic rescan (``Index.ingest`` of the root: the ingest pipeline's own rules decide what is gone),
and debounced file-system events (``retrieval.changes.apply_changes``: changed files are ingested by
path; a path is dropped only when the disk proves it gone). One sync runs at a time; searches go on
meanwhile, because the sync's store calls take the server's lock one call at a time (``LockedStore``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from retrieval.changes import MAX_EVENT_FILES, apply_changes, full_sync, root_problem
from retrieval.errors import ClipdexError, first_line, library_error_line
from retrieval.index import Index
from retrieval.settings import ServeSettings
from retrieval.store import VectorStore
from retrieval.store.shared import LockedStore, SyncCancelled
from retrieval.watch import FolderWatcher

WATCH_POLL_S = 2.0
"""How often each root's folder is looked at (one stat): renamed away or back, replaced, mounted over, or
created, it gets a new watch and a sync within this long."""
MAX_EVENT_WAIT_S = 30.0
"""A burst that never goes quiet (a long copy) is still handled after this long."""
KEPT_ERRORS = 20


@dataclass
class Changes:
    """A debounced burst of changed paths below one root."""

    paths: set[str] = field(default_factory=set)
    first: float = 0.0
    last: float = 0.0
    overflow: bool = False
    """More than MAX_EVENT_FILES paths: the paths are dropped and the root gets a full sync instead."""


class Syncer:
    """The sync thread of a watching server, its queue and its status (``GET /api/status``)."""

    def __init__(self, index: Index, roots: Sequence[str], settings: ServeSettings, lock: threading.Lock):
        self.roots = [os.path.abspath(os.path.expanduser(r)) for r in roots]
        self.settings = settings
        self._cancel = threading.Event()
        store = cast(VectorStore, LockedStore(index.store, lock, self._cancel))
        self.index = Index(index.settings, store, encoders=index.encoders)  # the server's models, loaded once
        self.watcher = FolderWatcher(self.roots, self.notify, self.appeared)
        self._cond = threading.Condition()
        self._queued: list[str] = list(self.roots)  # the initial sync
        self._prune: set[str] = set()  # roots whose next full sync confirms a mass deletion
        self._pending: dict[str, Changes] = {}
        self._next_rescan = dict.fromkeys(self.roots, float("inf"))
        self._running: dict[str, Any] | None = None
        self._last: dict[str, Any] | None = None
        self._errors: list[dict[str, Any]] = []
        self._syncs = 0
        self._next_poll = 0.0
        self._root_syncs = dict.fromkeys(self.roots, 0)
        self._root_last: dict[str, dict[str, Any]] = {}
        self._thread = threading.Thread(target=self._run, name="clipdex-sync", daemon=True)

    # -- control -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.watcher.start()
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching; a running sync ends at its next store call (what it stored stays)."""
        self._cancel.set()
        with self._cond:
            self._cond.notify_all()
        self.watcher.stop()
        self._thread.join(timeout)

    def notify(self, root: str, paths: Iterable[str]) -> None:
        """Paths below ``root`` changed (called from watchdog's thread)."""
        now = time.monotonic()
        with self._cond:
            changes = self._pending.setdefault(root, Changes(first=now))
            if not changes.overflow:
                changes.paths.update(paths)
                if len(changes.paths) > MAX_EVENT_FILES:  # memory stays bounded under an event storm
                    changes.paths.clear()
                    changes.overflow = True
            changes.last = now
            self._cond.notify_all()

    def appeared(self, root: str) -> None:
        """A missing root (or a folder on its way) was created (called from watchdog's thread): sync it, which
        also moves the watch from its parent onto it."""
        with self._cond:
            running = self._running["root"] if self._running else None
            if root not in self._queued and root != running:
                self._queued.append(root)
            self._cond.notify_all()

    def request(self, root: str | None, *, prune: bool = False) -> tuple[bool, dict[str, Any]]:
        """Queue a full sync of a watched ``root`` (None: every root); (started, status).

        A root already syncing or queued is not queued again: the answer is the status of that sync.
        ``prune``: the sync deletes even more than ``[ingest] max_delete_fraction`` of a root's points.
        """
        wanted = self.roots if root is None else [self._watched(root)]
        with self._cond:
            if prune:
                self._prune.update(wanted)
            running = self._running["root"] if self._running else None
            busy = set(self._queued) | ({running} if running and not prune else set())  # prune: once more
            new = [r for r in wanted if r not in busy]
            self._queued.extend(new)
            self._cond.notify_all()
        return bool(new), self.status()

    def _watched(self, root: str) -> str:
        path = os.path.abspath(os.path.expanduser(root))
        if path not in self.roots:
            raise ClipdexError(f"not a watched folder: {root} (watched: {', '.join(self.roots)})")
        return path

    # -- status ------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._cond:
            running = dict(self._running) if self._running else None
            return {
                "state": "syncing" if running else "idle", "root": running and running["root"],
                "kind": running and running["kind"], "stage": running and running.get("stage"),
                "done": running["done"] if running else 0,
                "total": running["total"] if running else 0, "queued": list(self._queued),
                "pending_changes": sum(len(c.paths) for c in self._pending.values()),
                "syncs": self._syncs, "last": self._last, "errors": list(self._errors),
                "roots": [self._root_status(r) for r in self.roots],
                "rescan_interval_s": self.settings.rescan_interval_s,
            }

    def _root_status(self, root: str) -> dict[str, Any]:
        """One watched folder (``GET /api/status``'s ``sync.roots[]``): ``watched`` (new files are picked up as
        they arrive), ``state`` (watching, waiting, not watched), ``reason`` in plain words ("" when there is
        nothing to say), ``error`` (the reason, only when not watched) and its own ``syncs`` and ``last`` sync."""
        state = self.watcher.states.get(root)
        kind = state.state if state is not None else "failed"
        if kind == "waiting":
            reason = (f"the folder does not exist (not mounted, or not made yet): watching {state.parent} for it "
                      "to appear; its points are kept")
        elif kind == "watching":
            problem = root_problem(root)
            reason = ("the folder is empty: new files are ingested as they arrive (if it is a disk that is not "
                      "mounted, its points are kept until it is back)" if problem.startswith("empty") else problem)
        else:
            interval = self.settings.rescan_interval_s
            retry = f"; rescanned every {interval:g} s" if interval > 0 else ""
            reason = f"not watched: {state.error if state else 'not started'}{retry}"
        return {"path": root, "watched": kind in ("watching", "waiting"),
                "state": {"failed": "not watched"}.get(kind, kind), "reason": reason,
                "error": reason if kind == "failed" else "",
                "syncs": self._root_syncs.get(root, 0), "last": self._root_last.get(root)}

    # -- the sync thread ---------------------------------------------------------------------------
    def _next_job(self) -> tuple[str, str, set[str]] | None:
        """Block until there is work: (kind, root, paths), or None when stopping."""
        debounce = self.settings.debounce_s
        with self._cond:
            while not self._cancel.is_set():
                now = time.monotonic()
                if self._queued:
                    return "full", self._queued.pop(0), set()
                deadlines = []
                for root, changes in list(self._pending.items()):
                    due = min(changes.last + debounce, changes.first + MAX_EVENT_WAIT_S)
                    if due <= now:
                        del self._pending[root]
                        return ("full" if changes.overflow else "changes"), root, changes.paths
                    deadlines.append(due)
                for root, due in self._next_rescan.items():
                    if due <= now:
                        return "full", root, set()
                    deadlines.append(due)
                if now >= self._next_poll:  # a root renamed away or back, replaced, mounted: watch it anew
                    self._next_poll = now + WATCH_POLL_S
                    for root in self.roots:
                        state = self.watcher.states.get(root)
                        if state is not None and state.state != "failed" and self.watcher.changed(root):
                            return "full", root, set()
                deadlines.append(self._next_poll)
                self._cond.wait(min([*deadlines, now + 3600]) - now)  # (a rescan that is off is due at inf)
        return None

    def _run(self) -> None:
        while (job := self._next_job()) is not None:
            kind, root, paths = job
            with self._cond:
                self._running = {"root": root, "kind": kind, "stage": "scan", "done": 0, "total": len(paths),
                                 "started": time.time()}
            started = time.monotonic()
            summary: dict[str, Any] = {}
            error = ""
            try:
                if kind == "full":
                    self.watcher.ensure(root)  # the folder itself, or (missing) its parent until it appears
                    with self._cond:
                        prune = root in self._prune
                        self._prune.discard(root)
                    summary = full_sync(self.index, root, self._progress, prune=prune)
                else:
                    summary = apply_changes(self.index, root, paths, self._progress)
            except SyncCancelled:
                return
            except ClipdexError as exc:
                error = str(exc).splitlines()[0] if str(exc) else "error"
            except BaseException as exc:  # keep serving: the next event or rescan tries again
                if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                    raise  # (a Rust panic of the store's engine is an error like any other here)
                error = library_error_line(exc) or f"{type(exc).__name__}: {first_line(exc)}"
            self._finish(root, kind, summary, error, time.monotonic() - started)

    def _progress(self, stage: str, done: int, total: int) -> None:
        """The pipeline's progress callback: shown in the status; a stopping server ends the sync here."""
        if self._cancel.is_set():
            raise SyncCancelled("sync cancelled: the server is stopping")
        with self._cond:
            if self._running is not None:
                self._running.update(stage=stage, done=done, total=total)

    def _finish(self, root: str, kind: str, summary: dict[str, Any], error: str, seconds: float) -> None:
        problems = [error] if error else list(summary.get("notices", []))
        with self._cond:
            self._running = None
            self._syncs += 1
            self._last = {"root": root, "kind": summary.get("kind", kind), "finished": time.time(),
                          "seconds": round(seconds, 3), "result": summary, "error": error}
            self._root_syncs[root] = self._root_syncs.get(root, 0) + 1
            self._root_last[root] = self._last
            if problems:  # errors, and the pipeline's notices (offline roots, points kept, held-back deletions)
                stamped = [{"root": root, "at": time.time(), "error": p} for p in problems]
                self._errors = [*self._errors, *stamped][-KEPT_ERRORS:]
            if summary.get("kind", kind) == "full":
                interval = self.settings.rescan_interval_s
                self._next_rescan[root] = time.monotonic() + interval if interval > 0 else float("inf")
            self._cond.notify_all()
