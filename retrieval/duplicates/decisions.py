""""Not duplicates" decisions, remembered in the collection's folder so a dismissed group never comes back.

A decision is a pair of content hashes (it follows the bytes: a file moved or renamed keeps it), kept in
``duplicates.json`` beside the store's own ``clipdex.json`` and written atomically (a crash leaves the
old file or the new one). For a Qdrant server the file lives in the local folder of the same name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from retrieval.errors import ClipdexError
from retrieval.inside import Refused, open_regular
from retrieval.settings import Settings

FILE = "duplicates.json"


def decisions_file(settings: Settings) -> Path:
    return settings.store_path / settings.store.collection / FILE


class Decisions:
    """What the user said are not duplicates: pairs of content hashes (older files), and groups of them.

    A ``--not-duplicates`` over N files is stored as one group of N hashes, not N*(N-1)/2 pairs (1,000
    files: one row, not 499,500); pairs written by older versions are still read, and a group of one
    hash means "keep every copy of this content"."""

    def __init__(self, file: Path):
        self.file = file
        self.pairs: set[frozenset[str]] = set()
        self.groups: list[frozenset[str]] = []
        self._member: dict[str, set[int]] = {}
        try:
            with open_regular(str(file)) as opened:  # never blocks: a FIFO there is refused, not waited on
                data = json.loads(os.pread(opened.fd, opened.size + 1, 0).decode("utf-8"))
        except Refused as exc:
            if str(exc).startswith("gone from disk"):
                return
            raise ClipdexError(f"cannot read the duplicates decisions: {exc}; fix or move that file "
                               "(nothing was changed)") from None
        except (OSError, ValueError) as exc:
            raise ClipdexError(f"cannot read the duplicates decisions in {file}: {exc}; fix or move that file "
                               "(nothing was changed)") from None
        rows = data.get("not_duplicates", []) if isinstance(data, dict) else None
        groups = data.get("groups", []) if isinstance(data, dict) else None
        if not isinstance(rows, list) or not isinstance(groups, list):
            raise ClipdexError(f"{file} is not a clipdex decisions file (no 'not_duplicates' list)")
        for row in rows:
            if isinstance(row, list) and len(row) == 2 and all(isinstance(h, str) and h for h in row):
                self.pairs.add(frozenset(row))
        for row in groups:
            if isinstance(row, list) and row and all(isinstance(h, str) and h for h in row):
                self._add_group(frozenset(row))

    def _add_group(self, group: frozenset[str]) -> None:
        self.groups.append(group)
        for h in group:
            self._member.setdefault(h, set()).add(len(self.groups) - 1)

    def dismissed(self, a: str, b: str) -> bool:
        """Whether the files with hashes ``a`` and ``b`` were marked as not duplicates."""
        if frozenset((a, b)) in self.pairs:
            return True
        if a == b:
            return any(len(self.groups[i]) == 1 for i in self._member.get(a, ()))
        return bool(self._member.get(a, set()) & self._member.get(b, set()))

    def add(self, hashes: Iterable[str]) -> int:
        """Mark every pair among ``hashes`` as not duplicates (one hash: keep all its copies) and save;
        returns how many pairs were new."""
        unique = sorted(set(hashes))
        if len(unique) == 1:
            new = 0 if self.dismissed(unique[0], unique[0]) else 1
        else:
            new = sum(1 for i, a in enumerate(unique) for b in unique[i + 1:] if not self.dismissed(a, b))
        if new:
            self._add_group(frozenset(unique))
            self._save()
        return new

    def forget(self, hashes: Iterable[str]) -> int:
        """Drop every decision that involves one of ``hashes`` and save; returns how many were dropped."""
        wanted = set(hashes)
        pairs = {p for p in self.pairs if not p & wanted}
        groups = [g for g in self.groups if not g & wanted]
        dropped = len(self.pairs) - len(pairs) + len(self.groups) - len(groups)
        if dropped:
            self.pairs, self.groups, self._member = pairs, [], {}
            for g in groups:
                self._add_group(g)
            self._save()
        return dropped

    def _save(self) -> None:
        rows = sorted(sorted(p) * (2 if len(p) == 1 else 1) for p in self.pairs)
        doc = {"not_duplicates": rows, "groups": [sorted(g) for g in self.groups]}
        self.file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.file.name}.", suffix=".tmp", dir=self.file.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(doc, indent=0))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
