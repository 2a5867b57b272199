"""One clipdex process per embedded store folder: an flock'd file that says who holds it.

The lock is taken before anything in the folder is created or read, and held until the store is
closed (the kernel drops it when the process dies, so a crash never leaves a stale lock). The file
records the holder (pid, command line, and an ``owner`` text such as ``clipdex serve at URL``) so a
second opener can say who is in the way.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

from retrieval import hints
from retrieval.errors import ClipdexError

LOCK_FILE = "clipdex.lock"
SERVE_OWNER = "clipdex serve"
_MAX_RECORD = 4096


def serve_owner(url: str) -> str:
    """The ``owner`` text ``clipdex serve`` passes to ``Index.open``: other openers then point at it."""
    return f"{SERVE_OWNER} at {url}"


class StoreLock:
    """An exclusive lock on ``folder/clipdex.lock``; :meth:`release` (or process exit) frees it."""

    def __init__(self, folder: Path, owner: str | None = None):
        self.path = folder / LOCK_FILE
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ClipdexError(f"cannot lock store {folder}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise ClipdexError(in_use_message(folder, read_holder(self.path))) from None
        record = {"pid": os.getpid(), "command": " ".join(sys.argv)[:1000], "owner": owner or ""}
        data = json.dumps(record).encode()
        try:  # over the old record, then cut to length: no new block is needed when one is there (a full disk)
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
        except OSError:  # no space for the record: the flock alone is the lock; who holds it stays unknown
            pass

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # the holder record is stale from now on
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def read_holder(path: Path) -> dict[str, object]:
    """The holder record in a lock file ({} when unreadable or not written yet)."""
    try:
        with path.open("rb") as fh:
            data = json.loads(fh.read(_MAX_RECORD) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def in_use_message(folder: Path, holder: dict[str, object]) -> str:
    """One line naming the process that holds ``folder``; for a server, how to ingest while it serves."""
    owner = str(holder.get("owner") or "")
    pid = holder.get("pid")
    if owner.startswith(SERVE_OWNER):
        return (f"store {folder} is in use by {owner} (pid {pid}); `clipdex search`, `status`, `duplicates` and "
                f"`ingest` of a folder it watches ({hints.command('serve --watch DIR')}) go through it; for anything "
                "else, stop the server first")
    detail = f" (pid {pid}: {owner or holder.get('command') or '?'})" if pid else ""
    return f"store {folder} is in use by another clipdex process{detail}; try again when it has finished"
