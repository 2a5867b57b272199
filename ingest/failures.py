"""The failure ledger: the files an ingest could not read, remembered per collection (``failed.jsonl``).

``clipdex status`` counts them (images and videos) and ``status --failed`` lists them with their reasons. An
ingest does not read again a file that failed before while it is unchanged: the same size and ``mtime_ns``
(the rule that makes any file unchanged), and the same decoders and limits (:func:`decoder_env`: Pillow,
PyAV and plugin versions, ``max_megapixels``, ``file_timeout_s``); ``--retry-failed`` reads them all again.
A file whose bytes could not be read at all (permission denied, an I/O error) is always tried again: that
is often fixed without touching the file.

Every ingest updates the ledger: a file that fails gets (or keeps) its entry; an entry goes when its file is
stored (or found unchanged with a stored point), when it is gone from an ingested folder that could be
listed, and, oldest first, past :data:`MAX_ENTRIES`. Entries of folders the run did not list, could not list
(offline, unreadable), and of videos while videos are not listed (``--no-video``) are kept as they are.

The file lives in the embedded store's collection folder, beside ``clipdex.json``, ``points.json`` and
``concepts.json``, and is replaced atomically like them (a temporary file, fsync, rename): a crash leaves the
old or the new one. Its first line holds the counts (all ``status`` reads), then one JSON line per file. A
Qdrant server store has no such folder: its failures are only in each ingest's report.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ingest.records import ancestors, path_key
from ingest.scan import ScannedFile, is_video_name
from retrieval.atomic import replace_text

if TYPE_CHECKING:
    from ingest.plan import IngestPlan
    from ingest.report import IngestReport
    from retrieval.settings import IngestSettings
    from retrieval.store import VectorStore

FILE = "failed.jsonl"
VERSION = 1
MAX_ENTRIES = 100_000
"""Entries kept at most (the oldest failures are dropped first)."""
MAX_ERROR_CHARS = 300
MAX_FILE_BYTES = 64 << 20
"""A larger ledger is not read (it cannot be one clipdex wrote): it is started again."""
_DECODERS = ("clipdex", "pillow", "av", "pillow-heif", "pillow-avif-plugin")

log = logging.getLogger("clipdex.ingest")

Failure = tuple[ScannedFile, str, bool]
"""One file that failed in a run: the file, the one-line reason, and whether its bytes were unreadable."""


def folder_of(store: VectorStore) -> Path | None:
    """The collection folder of an embedded store; None for a Qdrant server store (no local folder)."""
    folder = getattr(store, "folder", None)
    return Path(folder) if folder is not None else None


def decoder_env(max_megapixels: float, file_timeout_s: float) -> str:
    """A short fingerprint of what decides whether a file can be read: decoder versions and the limits."""
    parts = [f"{max_megapixels:g}", f"{file_timeout_s:g}"]
    for name in _DECODERS:
        try:
            parts.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name}=")
    return f"{zlib.crc32('|'.join(parts).encode()):08x}"


def media_of(key: str) -> str:
    return "video" if is_video_name(key) else "image"


def counts(folder: Path) -> dict[str, int]:
    """``{"images": n, "videos": m}`` failed files, from the ledger's first line only (zeros without a ledger)."""
    try:
        with (folder / FILE).open("rb") as fh:
            head = json.loads(fh.readline(4096))
        return {"images": max(0, int(head["images"])), "videos": max(0, int(head["videos"]))}
    except (OSError, ValueError, KeyError, TypeError):
        return {"images": 0, "videos": 0}


def read(folder: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """Every entry by path key, and whether the file was damaged (then whatever lines could be read)."""
    file = folder / FILE
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            return {}, True
        lines = file.read_bytes().splitlines()
    except FileNotFoundError:
        return {}, False
    except OSError:
        return {}, True
    entries: dict[str, dict[str, Any]] = {}
    try:
        damaged = json.loads(lines[0]).get("version") != VERSION if lines else True
    except (ValueError, AttributeError):
        damaged = True
    for line in lines[1:]:
        try:
            entry = _entry(json.loads(line))
        except (ValueError, KeyError, TypeError):
            damaged = True
            continue
        entries[entry["path"]] = entry
    return entries, damaged


def _entry(data: dict[str, Any]) -> dict[str, Any]:
    path, error = data["path"], data["error"]
    if not isinstance(path, str) or not isinstance(error, str):
        raise TypeError("path and error must be text")
    return {"path": path, "media": media_of(path), "size": int(data["size"]), "mtime_ns": int(data["mtime_ns"]),
            "error": error[:MAX_ERROR_CHARS], "at": float(data["at"]), "unreadable": bool(data.get("unreadable")),
            "env": str(data.get("env", ""))}


def write(folder: Path, entries: Iterable[dict[str, Any]]) -> None:
    """Replace the ledger atomically with ``entries`` (the newest :data:`MAX_ENTRIES`, in path order)."""
    rows = sorted(entries, key=lambda e: e["at"], reverse=True)[:MAX_ENTRIES]
    rows.sort(key=lambda e: e["path"])
    videos = sum(1 for e in rows if e["media"] == "video")
    head = {"version": VERSION, "images": len(rows) - videos, "videos": videos, "at": time.time()}

    def lines(fh: TextIO) -> None:
        fh.write(json.dumps(head) + "\n")
        for entry in rows:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")

    replace_text(folder / FILE, lines, prefix=".failed-")


class Ledger:
    """The ledger of one embedded collection during one ingest: read at the start, written at the end."""

    def __init__(self, folder: Path, env: str):
        self.folder = folder
        self.env = env
        self.entries, self._damaged = read(folder)
        self._before = {k: _signature(e) for k, e in self.entries.items()}
        self.skipped: set[str] = set()

    def skip_unchanged(self, plan: IngestPlan) -> list[dict[str, str]]:
        """Take the files that failed before and are unchanged out of ``plan.todo`` and ``plan.videos``;
        ``[{"path", "error"}]`` of each (the reason it failed with)."""
        out: list[dict[str, str]] = []

        def keep(file: ScannedFile) -> bool:
            key = path_key(file.path)
            entry = self.entries.get(key)
            if (entry is None or entry["unreadable"] or entry["env"] != self.env or entry["size"] != file.size
                    or entry["mtime_ns"] != file.mtime_ns):
                return True
            self.skipped.add(key)
            out.append({"path": key, "error": entry["error"]})
            return False

        plan.todo = [f for f in plan.todo if keep(f)]
        plan.videos = [f for f in plan.videos if keep(f)]
        return out

    def update(self, plan: IngestPlan, failed: Iterable[Failure], *, videos: bool) -> None:
        """This run's failures in; entries of files stored, unchanged or gone out (see the module docstring)."""
        now = time.time()
        fresh: set[str] = set()
        for file, error, unreadable in failed:
            key = path_key(file.path)
            fresh.add(key)
            old = self.entries.get(key)
            same = old is not None and (old["size"], old["mtime_ns"], old["error"]) == (file.size, file.mtime_ns,
                                                                                        error[:MAX_ERROR_CHARS])
            self.entries[key] = {"path": key, "media": media_of(key), "size": file.size, "mtime_ns": file.mtime_ns,
                                 "error": error[:MAX_ERROR_CHARS], "at": old["at"] if same else now,
                                 "unreadable": unreadable, "env": self.env}
        problems = {path_key(p.path) for p in plan.problems}
        for key in [k for k in self.entries if k not in fresh and k not in self.skipped]:
            if key in plan.on_disk or _gone(plan, key, problems, videos):
                del self.entries[key]

    def save(self) -> None:
        """Write the ledger when it changed (or was damaged); a collection that never failed gets no file."""
        if not self._damaged and {k: _signature(e) for k, e in self.entries.items()} == self._before:
            return
        try:
            write(self.folder, self.entries.values())
        except OSError as exc:  # a full disk must not fail the ingest that stored the files
            log.warning("the list of failed files was not updated: %s", exc.strerror or exc)


def _signature(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What a rewrite of an entry changes (its ``at`` stays while the failure is the same)."""
    return entry["size"], entry["mtime_ns"], entry["error"], entry["unreadable"], entry["env"]


def _gone(plan: IngestPlan, key: str, problems: set[str], videos: bool) -> bool:
    """Whether this run listed the folder ``key`` lies in and did not find it (not offline, not unreadable)."""
    if not videos and is_video_name(key):
        return False
    root = plan.root_of(key)
    if root is None or root.offline:
        return False
    return not problems or (key not in problems and problems.isdisjoint(ancestors(key)))


def entries_in_order(folder: Path) -> Iterator[dict[str, Any]]:
    """The ledger's entries in path order (``status --failed``)."""
    entries, _ = read(folder)
    for key in sorted(entries):
        yield entries[key]


def start(plan: IngestPlan, store: VectorStore, report: IngestReport, settings: IngestSettings, *,
          retry: bool) -> Ledger | None:
    """The runners' first step: the collection's ledger (None on a server store), with the files that failed
    before and are unchanged taken out of ``plan`` into ``report.skipped`` (unless ``retry``)."""
    folder = folder_of(store)
    if folder is None or not folder.is_dir():
        return None
    ledger = Ledger(folder, decoder_env(settings.max_megapixels, settings.file_timeout_s))
    if not retry:
        report.skipped = ledger.skip_unchanged(plan)
    return ledger


def stored_before(ledger: Ledger | None, plan: IngestPlan) -> list[str]:
    """Skipped files that still have a stored point: dropped at the end, as a failing read of them would."""
    return [key for key in sorted(ledger.skipped) if key in plan.previous] if ledger else []


def remember(ledger: Ledger | None, plan: IngestPlan, failed: Iterable[Failure], *, videos: bool) -> None:
    """The runners' last step: this run's failures into the ledger, which is written if it changed."""
    if ledger is not None:
        ledger.update(plan, failed, videos=videos)
        ledger.save()


def forget_gone(store: VectorStore, gone_keys: Iterable[str]) -> int:
    """Drop the entries of files proven gone (``gone_keys``: path keys of files or folders, everything below a
    folder included), as ``serve --watch`` learns of them from change events; returns how many went."""
    folder = folder_of(store)
    keys = set(gone_keys)
    if folder is None or not keys or not (folder / FILE).is_file():
        return 0
    entries, damaged = read(folder)
    kept = [e for e in entries.values() if not ({e["path"], *ancestors(e["path"])} & keys)]
    if len(kept) == len(entries) and not damaged:
        return 0
    write(folder, kept)
    return len(entries) - len(kept)
