""""Not duplicates" decisions, remembered in the collection's folder so a dismissed group never comes back.

A decision is a pair of content hashes (it follows the bytes: a file moved or renamed keeps it), kept in
``duplicates.json`` beside the store's own ``clipdex.json`` and written atomically (a crash leaves the
old file or the new one). For a Qdrant server the file lives in the local folder of the same name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from itertools import combinations
from pathlib import Path

from retrieval.errors import ClipdexError
from retrieval.settings import Settings

FILE = "duplicates.json"


def decisions_file(settings: Settings) -> Path:
    return settings.store_path / settings.store.collection / FILE


class Decisions:
    """The set of hash pairs the user said are not duplicates."""

    def __init__(self, file: Path):
        self.file = file
        self.pairs: set[frozenset[str]] = set()
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise ClipdexError(f"cannot read the duplicates decisions in {file}: {exc}; fix or move that file "
                               "(nothing was changed)") from None
        rows = data.get("not_duplicates", []) if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise ClipdexError(f"{file} is not a clipdex decisions file (no 'not_duplicates' list)")
        for row in rows:
            if isinstance(row, list) and len(row) == 2 and all(isinstance(h, str) and h for h in row):
                self.pairs.add(frozenset(row))

    def dismissed(self, a: str, b: str) -> bool:
        """Whether the files with hashes ``a`` and ``b`` were marked as not duplicates."""
        return frozenset((a, b)) in self.pairs

    def add(self, hashes: Iterable[str]) -> int:
        """Mark every pair among ``hashes`` as not duplicates and save; returns how many pairs were new."""
        unique = sorted(set(hashes))
        new = {frozenset(p) for p in combinations(unique, 2)} - self.pairs
        if len(unique) == 1:  # identical copies the user wants to keep: the hash with itself
            new = {frozenset(unique)} - self.pairs
        if new:
            self.pairs |= new
            self._save()
        return len(new)

    def _save(self) -> None:
        rows = sorted(sorted(p) * (2 if len(p) == 1 else 1) for p in self.pairs)
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_name(self.file.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps({"not_duplicates": rows}, indent=0))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.file)
