"""Resolve duplicates without destroying anything: move files aside with a manifest, and undo that.

``move`` renames each file into ``DIR`` under its path relative to the ingested root it came from
(``DIR/2021/img.jpg`` for ``ROOT/2021/img.jpg``), never across file systems (a rename, so no copy is
ever half-written) and never over an existing file. The manifest (``DIR/clipdex-moves-*.json``,
written atomically before the first rename and again after the last) records each file's old and
new path, size and content hash. ``undo`` puts every file back only when nothing is in its way and
its bytes are the ones recorded; otherwise it moves nothing and names the conflicts.

The store then drops the points of the files it has seen move away (proven gone: the rename
succeeded and the old path no longer exists); an undo ingests them back by path.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.decode import DecodeError, content_hash
from ingest.records import is_below, path_key
from retrieval.errors import ClipdexError

MANIFEST_PREFIX = "clipdex-moves-"
VERSION = 1


@dataclass(frozen=True)
class Move:
    source: str  # where the file was
    target: str  # where it goes
    root: str  # the ingested root it was found under ("" if none is known)
    size: int
    hash: str

    def row(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "root": self.root, "size": self.size, "hash": self.hash}


def check_destination(move_to: str, roots: Sequence[str]) -> Path:
    """``move_to`` as an absolute folder outside every ingested root (a file moved there would be indexed again)."""
    if not move_to or not move_to.strip():
        raise ClipdexError("--move-to needs a folder")
    dest = Path(os.path.abspath(os.path.expanduser(move_to)))
    real = os.path.realpath(dest)
    for root in roots:
        for candidate in {str(dest), real}:
            if is_below(path_key(candidate), path_key(root)) or is_below(path_key(os.path.realpath(root)),
                                                                        path_key(candidate)):
                raise ClipdexError(f"--move-to {move_to} is inside (or contains) the ingested folder {root}; "
                                   "pick a folder outside every ingested folder")
    if dest.exists() and not dest.is_dir():
        raise ClipdexError(f"--move-to {move_to} exists and is not a folder")
    return dest


def plan(files: Sequence[tuple[str, str]], dest: Path) -> list[Move]:
    """The moves of ``files`` (path, ingested root) into ``dest``; refuses if any is missing or would collide."""
    moves: list[Move] = []
    taken: set[str] = set()
    problems: list[str] = []
    for path, root in files:
        if not os.path.isfile(path) or os.path.islink(path):
            problems.append(f"not a regular file now: {path}")
            continue
        rel = os.path.relpath(path, root) if root and is_below(path_key(path), path_key(root)) else path.lstrip("/")
        target = str(dest / rel)
        if target in taken or os.path.lexists(target):
            problems.append(f"already there: {target}")
            continue
        taken.add(target)
        try:
            digest = content_hash(path)
        except DecodeError as exc:
            problems.append(f"cannot read {path}: {exc}")
            continue
        moves.append(Move(path, target, root, os.path.getsize(path), digest))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ClipdexError(f"nothing moved: {problems[0]}{more}")
    return moves


def _write(manifest: Path, moves: Sequence[Move], state: str) -> None:
    tmp = manifest.with_name(manifest.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump({"clipdex_moves": VERSION, "state": state, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "moves": [m.row() for m in moves]}, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, manifest)


def move(moves: Sequence[Move], dest: Path) -> tuple[Path, list[Move]]:
    """Rename every planned file into place; returns the manifest and the moves done.

    A rename that fails (another file system, a permission) stops the run: the files moved so far
    stay moved and are in the manifest, the rest stay where they are.
    """
    if not moves:
        raise ClipdexError("nothing to move")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClipdexError(f"cannot create {dest}: {exc.strerror or exc}") from None
    manifest = dest / f"{MANIFEST_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    _write(manifest, moves, "moving")
    done: list[Move] = []
    failure = ""
    for m in moves:
        try:
            os.makedirs(os.path.dirname(m.target), exist_ok=True)
            if os.path.lexists(m.target):
                raise FileExistsError(m.target)
            os.rename(m.source, m.target)
        except OSError as exc:
            reason = "another file system (pick a folder on the same disk)" if exc.errno == 18 else (
                exc.strerror or type(exc).__name__)
            failure = f"stopped at {m.source}: {reason}"
            break
        done.append(m)
    _write(manifest, done, "done" if not failure else "partial")
    if failure:
        raise ClipdexError(f"moved {len(done)} of {len(moves)} files ({manifest} lists them); {failure}")
    return manifest, done


def read_manifest(path: str) -> list[Move]:
    file = Path(os.path.expanduser(path))
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClipdexError(f"manifest not found: {path}") from None
    except IsADirectoryError:
        raise ClipdexError(f"manifest is a folder, not a file: {path}") from None
    except (OSError, ValueError) as exc:
        raise ClipdexError(f"cannot read manifest {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("clipdex_moves") != VERSION or not isinstance(data.get("moves"), list):
        raise ClipdexError(f"{path} is not a clipdex moves manifest")
    try:
        return [Move(str(r["from"]), str(r["to"]), str(r.get("root", "")), int(r["size"]), str(r["hash"]))
                for r in data["moves"]]
    except (KeyError, TypeError, ValueError):
        raise ClipdexError(f"{path}: a move in the manifest is malformed; nothing was moved") from None


def undo(moves: Sequence[Move]) -> tuple[list[Move], list[Move]]:
    """Put every moved file back; returns (restored, already back). Refuses, moving nothing, on any conflict."""
    conflicts: list[str] = []
    todo: list[Move] = []
    back: list[Move] = []
    for m in moves:
        here, there = os.path.lexists(m.target), os.path.lexists(m.source)
        if not here and there and _same(m.source, m):
            back.append(m)  # undone before
        elif not here:
            conflicts.append(f"missing: {m.target}")
        elif there:
            conflicts.append(f"something is in the way at {m.source}")
        elif not _same(m.target, m):
            conflicts.append(f"changed since the move: {m.target}")
        else:
            todo.append(m)
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ClipdexError(f"nothing moved back: {conflicts[0]}{more}")
    for m in todo:
        os.makedirs(os.path.dirname(m.source), exist_ok=True)
        if os.path.lexists(m.source):  # appeared since the check: never overwrite
            raise ClipdexError(f"stopped: something appeared at {m.source}; the files before it are back")
        os.rename(m.target, m.source)
    return todo, back


def _same(path: str, m: Move) -> bool:
    try:
        return os.path.getsize(path) == m.size and content_hash(path) == m.hash
    except (OSError, DecodeError):
        return False
