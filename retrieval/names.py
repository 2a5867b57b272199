"""Collection names: one folder below the store directory, so only names that cannot leave it.

A name is 1-64 characters of ``A-Z a-z 0-9 . _ -`` starting with a letter or digit: never ``.`` or
``..``, never a ``/``, never longer than a file name may be. ``[store] collection``, ``--collection`` and
``[distill] from_collection`` are all checked here.
"""

from __future__ import annotations

import re

COLLECTION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_COLLECTION_LENGTH = 64


def collection_problem(name: str) -> str:
    """Why ``name`` is no collection name ("" when it is one)."""
    if COLLECTION_PATTERN.fullmatch(name):
        return ""
    shown = repr(name[:40] + ("…" if len(name) > 40 else ""))
    if len(name) > MAX_COLLECTION_LENGTH:
        return f"collection name {shown} is {len(name)} characters long; at most {MAX_COLLECTION_LENGTH} are allowed"
    return (f"collection name {shown} is not allowed: use 1-{MAX_COLLECTION_LENGTH} letters, digits, '.', '_' "
            "or '-', starting with a letter or digit")


def check_collection(name: str) -> str:
    """``name`` if it is a safe collection name, else ``ValueError`` saying why."""
    problem = collection_problem(name)
    if problem:
        raise ValueError(problem)
    return name
