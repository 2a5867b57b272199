"""Resolve duplicates without destroying anything: move files aside with a manifest, and undo that.

What is guaranteed, and how (docs/duplicates.md says it for users):

- **One copy always stays.** Each group is moved only when its keeper is there, is a regular file
  inside an ingested root, has the bytes the group was built from, and is not the same file (device
  and inode) as anything moved; every duplicate is hashed again and moved only when its bytes are the
  ones the group was built from. What fails these checks is skipped and named, never moved.
- **Only files inside the ingested roots are moved**, and only into the ``--move-to`` folder: every
  file and folder is reached through :mod:`retrieval.inside` (descriptor checks, ``openat`` walks, no
  link followed below the destination), and the rename uses those descriptors.
- **Every move is in a manifest nothing overwrites**: a new file per run, created with ``O_EXCL``
  under a name no other run can take, written (every planned move) before the first rename; the
  renames never replace a file (``RENAME_NOREPLACE``). Moves in one process run one at a time.
- **Undo only puts files back where they came from**: from below the manifest's own folder, to below a
  root the collection knows, never over a file, and only bytes the manifest recorded.
- **Nothing is written when a move is refused** (another file system, a name taken, nothing left to
  move): no folder, no manifest.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import xxhash

from ingest.records import fs_path, is_below, path_key
from retrieval.errors import ClipdexError
from retrieval.inside import (
    Refused,
    fd_path,
    inside,
    open_folder_below,
    open_folder_inside,
    open_inside,
    open_regular,
    real_roots,
    rename_noreplace,
)

MANIFEST_PREFIX = "clipdex-moves-"
VERSION = 2  # paths are path keys (ingest.records): any file name, as valid UTF-8 text
MAX_MANIFEST_BYTES = 256 << 20
_SERIAL = threading.Lock()
"""Moves and undos of one process run one at a time (a server's resolves)."""


@dataclass(frozen=True)
class Move:
    source: str  # where the file was (a path key)
    target: str  # where it went (a path key)
    root: str  # the ingested root it was found under (a path key; "" if none is known)
    size: int
    hash: str

    def row(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "root": self.root, "size": self.size, "hash": self.hash}


@dataclass(frozen=True)
class GroupMove:
    """One group to resolve: the file kept, and the duplicates to move, each with the content hash the group
    was built from (path keys). ``keep`` "": files a user selected to move aside, not a duplicate group (no
    keeper to check; see :func:`retrieval.duplicates.selection_moves`)."""

    keep: str
    keep_hash: str
    files: tuple[tuple[str, str, str], ...]  # (path key, its root's path key, content hash)


@dataclass
class Outcome:
    manifest: str = ""  # "" when nothing moved (and nothing was written)
    done: list[Move] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path key, why it stayed)
    failure: str = ""  # a move that stopped the run (the ones before it are done and in the manifest)
    warning: str = ""  # done as said, but something after it was not (the manifest's last update)


def hash_fd(fd: int) -> str:
    """xxh3-128 of an open file's whole content (the digest ingest stores), read from its start."""
    digest = xxhash.xxh3_128()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _fs_roots(roots: Iterable[str]) -> list[str]:
    return [fs_path(r) for r in roots if r]


def check_destination(move_to: str, roots: Sequence[str]) -> Path:
    """``move_to`` as an absolute folder outside every ingested root, by name and by real path, both ways
    (a file moved there would be indexed again; an aliased root is the folder it points to)."""
    if not move_to or not move_to.strip():
        raise ClipdexError("--move-to needs a folder")
    dest = Path(os.path.abspath(os.path.expanduser(move_to)))
    fs_roots = _fs_roots(roots)
    mine = {str(dest), os.path.realpath(dest)}
    for root in fs_roots:
        for theirs in {os.path.abspath(root), os.path.realpath(root)}:
            if any(inside(m, theirs) or inside(theirs, m) for m in mine):
                raise ClipdexError(f"--move-to {move_to} is inside (or contains) the ingested folder "
                                   f"{path_key(root)}; pick a folder outside every ingested folder")
    if dest.exists() and not dest.is_dir():
        raise ClipdexError(f"--move-to {move_to} exists and is not a folder")
    return dest


def _root_key(key: str, own: str, roots: Sequence[str]) -> str:
    """The root a path key lies below: its own if it does, else the deepest known one ("" for none)."""
    if own and is_below(key, own) and key != own:
        return own
    below = [r for r in roots if r and is_below(key, r) and key != r]
    return max(below, key=len) if below else ""


def _device_of(dest: Path) -> int:
    here = dest
    while not here.exists():
        here = here.parent
    return os.stat(here).st_dev


@dataclass(frozen=True)
class _Checked:
    move: Move
    identity: tuple[int, int, int, int]  # dev, inode, size, mtime_ns as hashed


def plan(groups: Sequence[GroupMove], dest: Path, roots: Sequence[str]) -> tuple[list[_Checked], list[tuple[str, str]]]:
    """Check every group against the disk now (nothing is written); returns the moves and the files skipped.

    Raises :class:`ClipdexError` (nothing moved) when the whole run cannot go: a target name taken, or
    the destination on another file system."""
    fs_roots = _fs_roots(roots)
    dest_key = path_key(str(dest)).rstrip("/")
    dest_dev = _device_of(dest)
    keepers: set[tuple[int, int]] = set()
    usable: list[GroupMove] = []
    skipped: list[tuple[str, str]] = []
    for group in groups:
        if not group.keep:  # an explicit selection (no group): no keeper, every other check the same
            usable.append(group)
            continue
        try:
            with open_inside(fs_path(group.keep), fs_roots) as kept:
                if group.keep_hash and hash_fd(kept.fd) != group.keep_hash:
                    raise Refused(f"the file to keep has changed since the duplicates search: {group.keep}")
                keepers.add(kept.identity)
        except Refused as exc:
            reason = str(exc).replace(fs_path(group.keep), group.keep)
            why = f"group not moved, its file to keep is not there as it was: {reason}"
            skipped += [(key, why) for key, _, _ in group.files]
            continue
        usable.append(group)
    kept_paths = {g.keep for g in usable if g.keep}
    checked: list[_Checked] = []
    seen: set[tuple[int, int]] = set()
    taken: set[str] = set()
    problems: list[str] = []
    for group in usable:
        for key, own_root, expected in group.files:
            if key == group.keep:
                skipped.append((key, "it is the file to keep"))
                continue
            if key in kept_paths:
                skipped.append((key, "it is the file kept for another group in this run (run again to resolve it)"))
                continue
            try:
                with open_inside(fs_path(key), fs_roots, follow=False) as opened:
                    ident = opened.identity
                    if ident in keepers:
                        raise Refused("the same file as one that is kept (a folder ingested twice, or a hard link)")
                    if ident in seen:
                        raise Refused("the same file as another one moved in this run")
                    if not expected or hash_fd(opened.fd) != expected:
                        raise Refused("its bytes changed since the duplicates search (search again)")
                    if opened.st.st_dev != dest_dev:
                        problems.append(f"{dest} is on another file system than {key} (a move is a rename: pick "
                                        "a folder on the same disk)")
                        continue
                    seen.add(ident)
                    st = opened.st
            except Refused as exc:
                skipped.append((key, str(exc).replace(fs_path(key), key)))
                continue
            root = _root_key(key, own_root, roots)
            rel = key[len(root):].lstrip("/") if root else key.lstrip("/")
            target = f"{dest_key}/{rel}"
            if target in taken or os.path.lexists(fs_path(target)):
                problems.append(f"already there: {target}")
                continue
            taken.add(target)
            checked.append(_Checked(Move(key, target, root, st.st_size, expected),
                                    (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ClipdexError(f"nothing moved: {problems[0]}{more}")
    return checked, skipped


def _manifest_doc(moves: Sequence[Move], state: str) -> bytes:
    return json.dumps({"clipdex_moves": VERSION, "state": state, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "moves": [m.row() for m in moves]}, indent=1).encode()


def _write_new(dir_fd: int, name: str, data: bytes) -> None:
    """Create ``name`` in ``dir_fd`` (never an existing one, never through a link) holding ``data``, synced."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink(dir_fd, name)
        raise
    os.close(fd)


def _unlink(dir_fd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def _make_dest(dest: Path, roots: Sequence[str], created: list[str]) -> int:
    """``dest`` created if missing (each folder made noted in ``created``) and opened; refused if what was
    opened lies inside a root (swapped for a link meanwhile)."""
    missing = []
    here = dest
    while not os.path.lexists(here):
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except OSError as exc:
            raise ClipdexError(f"nothing moved: cannot create {folder}: {exc.strerror or exc}") from None
        created.append(str(folder))
    try:
        fd = open_folder_below(str(dest), "")
    except Refused as exc:
        raise ClipdexError(f"nothing moved: --move-to {exc}") from None
    real = fd_path(fd) or ""
    if any(inside(real, r) or inside(r, real) for r in real_roots(_fs_roots(roots))):
        os.close(fd)
        raise ClipdexError(f"nothing moved: --move-to {dest} now leads into an ingested folder")
    return fd


def _remove_created(created: list[str]) -> None:
    for folder in reversed(created):  # only the folders this run made, and only while empty
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def move(groups: Sequence[GroupMove], move_to: str, roots: Sequence[str]) -> Outcome:
    """Move each group's duplicates into ``move_to`` (their paths below their root kept), after the checks
    :func:`plan` makes; returns what was done, skipped, and how a stop happened (see the module's doc)."""
    with _SERIAL:
        dest = check_destination(move_to, roots)
        checked, skipped = plan(groups, dest, roots)
        if not checked:
            return Outcome(skipped=skipped)
        created: list[str] = []
        dest_fd = _make_dest(dest, roots, created)
        try:
            return _move_checked(checked, skipped, dest, dest_fd, roots, created)
        finally:
            os.close(dest_fd)


def _move_checked(checked: list[_Checked], skipped: list[tuple[str, str]], dest: Path, dest_fd: int,
                  roots: Sequence[str], created: list[str]) -> Outcome:
    name = f"{MANIFEST_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(4)}.json"
    manifest = str(dest / name)
    try:
        _write_new(dest_fd, name, _manifest_doc([c.move for c in checked], "moving"))
    except OSError as exc:
        _remove_created(created)
        raise ClipdexError(f"nothing moved: cannot write the manifest in {dest}: {exc.strerror or exc}") from None
    fs_roots = _fs_roots(roots)
    dest_key = path_key(str(dest)).rstrip("/")
    outcome = Outcome(manifest, [], list(skipped))
    for c in checked:
        m = c.move
        source = fs_path(m.source)
        rel_dir, target_name = os.path.split(fs_path(m.target)[len(fs_path(dest_key)):].lstrip("/"))
        src_fd = dst_fd = -1
        try:
            src_fd = open_folder_inside(os.path.dirname(source), fs_roots)
            st = os.lstat(os.path.basename(source), dir_fd=src_fd)
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != c.identity:
                raise Refused("it changed while the move ran")
            dst_fd = open_folder_below(str(dest), rel_dir, create=True, created=created)
            rename_noreplace(os.path.basename(source), target_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        except Refused as exc:
            outcome.skipped.append((m.source, str(exc).replace(source, m.source)))
            continue
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                reason = "another file system (pick a folder on the same disk)"
            elif exc.errno == errno.EEXIST:
                reason = f"a file appeared at {m.target}"
            else:
                reason = exc.strerror or type(exc).__name__
            outcome.failure = f"stopped at {m.source}: {reason}"
            break
        finally:
            for fd in (src_fd, dst_fd):
                if fd >= 0:
                    os.close(fd)
        outcome.done.append(m)
    if not outcome.done:  # nothing moved: nothing left behind either
        _unlink(dest_fd, name)
        _remove_created(created)
        outcome.manifest = ""
        return outcome
    _finish_manifest(dest_fd, name, outcome)
    return outcome


def _finish_manifest(dest_fd: int, name: str, outcome: Outcome) -> None:
    """Rewrite the manifest with the moves done (``done`` or ``partial``). If that fails (a full disk), the
    first version stays: it lists every planned move, and an undo of a move that never happened finds the
    file at home and skips it; the outcome says so instead of calling the move a failure."""
    state = "partial" if outcome.failure or outcome.skipped else "done"
    tmp = f".{name}.{secrets.token_hex(4)}.tmp"
    try:
        _write_new(dest_fd, tmp, _manifest_doc(outcome.done, state))
        os.replace(tmp, name, src_dir_fd=dest_fd, dst_dir_fd=dest_fd)
    except OSError as exc:
        _unlink(dest_fd, tmp)
        outcome.warning = (f"the manifest could not be brought up to date ({exc.strerror or exc}); it lists every "
                           "planned move, and its undo puts back exactly the files that moved")


def read_manifest(path: str) -> list[Move]:
    """The moves a manifest lists (its paths as path keys); refuses anything that is not one."""
    shown = path
    try:
        opened = open_regular(os.path.abspath(os.path.expanduser(path)), shown=shown)
    except Refused as exc:
        text = str(exc)
        if text.startswith("gone from disk"):
            raise ClipdexError(f"manifest not found: {path}") from None
        raise ClipdexError(f"manifest {text}") from None
    with opened:
        if opened.size > MAX_MANIFEST_BYTES:
            raise ClipdexError(f"{path} is too large for a clipdex moves manifest")
        try:
            data = json.loads(os.pread(opened.fd, opened.size + 1, 0).decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise ClipdexError(f"cannot read manifest {path}: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(data, dict) or data.get("clipdex_moves") not in (1, VERSION) or \
            not isinstance(data.get("moves"), list):
        raise ClipdexError(f"{path} is not a clipdex moves manifest")
    keys = (lambda p: path_key(p)) if data["clipdex_moves"] == 1 else (lambda p: p)  # version 1 held plain paths
    try:
        return [Move(keys(_text(r["from"])), keys(_text(r["to"])), keys(_text(r.get("root", ""))), int(r["size"]),
                     _text(r["hash"])) for r in data["moves"]]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ClipdexError(f"{path}: a move in the manifest is malformed; nothing was moved") from None


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


@dataclass(frozen=True)
class _Back:
    move: Move
    root: str  # the known root it goes back below (a path key)
    rel: str  # the aside file's path below the manifest's folder (a file-system path)


def _vet(moves: Sequence[Move], manifest_dir: str, roots: Sequence[str]) -> list[_Back]:
    """Every move, checked to go from below the manifest's folder to below a known root; else refused whole."""
    dir_key = path_key(manifest_dir).rstrip("/") or "/"
    real = os.path.realpath(manifest_dir)
    for root in real_roots(_fs_roots(roots)):
        if inside(real, root):  # --move-to is always outside them: this manifest is no clipdex move's
            raise ClipdexError(f"nothing moved back: the manifest lies inside the ingested folder {path_key(root)}, "
                               "where clipdex never writes one")
    out = []
    for m in moves:
        if not is_below(m.target, dir_key) or m.target == dir_key or _odd(m.target):
            raise ClipdexError(f"nothing moved back: {m.target} is not in the manifest's folder {dir_key}; "
                               "undo only takes files from there")
        root = _root_key(m.source, "", roots)
        if not root or _odd(m.source):
            raise ClipdexError(f"nothing moved back: {m.source} is not in a folder this collection has ingested; "
                               "undo only puts files back there")
        out.append(_Back(replace(m, root=root), root, fs_path(m.target)[len(fs_path(dir_key)):].lstrip("/")))
    return out


def _odd(key: str) -> bool:
    return any(part in (".", "..") for part in key.split("/")) or "\x00" in key


def _aside(manifest_dir: str, back: _Back) -> tuple[int, str]:
    """The folder descriptor and name of a moved file below the manifest's folder (no link on the way)."""
    folder, name = os.path.split(back.rel)
    return open_folder_below(manifest_dir, folder), name


_Ident = tuple[int, int, int, int]


def _ident(st: os.stat_result) -> _Ident:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _status(manifest_dir: str, back: _Back, fs_roots: list[str]) -> tuple[_Ident | None, bool, str]:
    """(the identity of the moved file when it is there with its recorded bytes, something is at the old path,
    a conflict or "")."""
    m = back.move
    here: _Ident | None = None
    try:
        dir_fd, name = _aside(manifest_dir, back)
        try:
            with open_regular(name, dir_fd=dir_fd, follow=False, shown=m.target) as opened:
                if opened.size != m.size or hash_fd(opened.fd) != m.hash:
                    return None, False, f"changed since the move: {m.target}"
                here = _ident(opened.st)
        finally:
            os.close(dir_fd)
    except Refused as exc:
        if not str(exc).startswith("gone from disk"):
            return None, False, str(exc)
    home, conflict = _at_home(m, fs_roots)
    return here, home, conflict


def _at_home(m: Move, fs_roots: list[str]) -> tuple[bool, str]:
    """(something is at the file's old path, a conflict: the way there leads outside the roots, or "")."""
    source = fs_path(m.source)
    try:
        fd = open_folder_inside(os.path.dirname(source), fs_roots)
    except Refused as exc:
        text = str(exc)
        return False, "" if text.startswith("gone from disk") else text.replace(source, m.source)
    try:
        os.lstat(os.path.basename(source), dir_fd=fd)
        return True, ""
    except OSError:
        return False, ""
    finally:
        os.close(fd)


def _same_at_home(m: Move, fs_roots: list[str]) -> bool:
    try:
        with open_inside(fs_path(m.source), fs_roots, follow=False) as opened:
            return opened.size == m.size and hash_fd(opened.fd) == m.hash
    except Refused:
        return False


def undo(manifest: str, roots: Sequence[str]) -> tuple[list[Move], list[Move], str]:
    """Put back every file the manifest lists; returns (restored, already back, why it stopped or "").
    Refuses, moving nothing, on any conflict, and on any row that does not go from below the manifest's
    folder to below a known root."""
    with _SERIAL:
        moves = read_manifest(manifest)
        manifest_dir = os.path.dirname(os.path.abspath(os.path.expanduser(manifest)))
        fs_roots = _fs_roots(roots)
        backs = _vet(moves, manifest_dir, roots)
        conflicts: list[str] = []
        todo: list[tuple[_Back, _Ident]] = []
        already: list[Move] = []
        for b in backs:
            here, home, conflict = _status(manifest_dir, b, fs_roots)
            m = b.move
            if conflict:
                conflicts.append(conflict)
            elif not here and home and _same_at_home(m, fs_roots):
                already.append(m)  # undone before, or never moved (a run stopped before it)
            elif not here:
                conflicts.append(f"missing: {m.target}")
            elif home:
                conflicts.append(f"something is in the way at {m.source}")
            else:
                todo.append((b, here))
        if conflicts:
            more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
            raise ClipdexError(f"nothing moved back: {conflicts[0]}{more}")
        restored: list[Move] = []
        for b, ident in todo:
            m = b.move
            source = fs_path(m.source)
            src_fd = dst_fd = -1
            try:
                src_fd, name = _aside(manifest_dir, b)
                if _ident(os.lstat(name, dir_fd=src_fd)) != ident:  # swapped since it was hashed
                    raise Refused(f"changed while the undo ran: {m.target}")
                dst_fd = open_folder_inside(os.path.dirname(source), fs_roots, create=True)
                rename_noreplace(name, os.path.basename(source), src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            except (Refused, OSError) as exc:
                why = str(exc) if isinstance(exc, Refused) else (exc.strerror or type(exc).__name__)
                return restored, already, (f"stopped at {m.source} ({why}); the {len(restored)} files before it "
                                           "are back, run the undo again once that is solved")
            finally:
                for fd in (src_fd, dst_fd):
                    if fd >= 0:
                        os.close(fd)
            restored.append(m)
        return restored, already, ""
