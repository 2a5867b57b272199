"""Commands suggested in messages ("run `clipdex ingest DIR` first"), written with the settings this run used.

A hint that leaves out ``--config`` or ``--store`` sends the user to another store. The CLI records the
options a command was given (:func:`remember`, called by ``retrieval.cli.common``); :func:`command` writes a
suggested command with them (paths made absolute, quoted for a shell), and :func:`missing_collection` says
which collections a store does hold when the one named is not there. ``clipdex serve`` records its own
options too, so the server's hints (``GET /api/status``'s ``ingest_hint``) name the store it serves.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

_FLAGS = (("config", "--config"), ("store", "--store"), ("qdrant_url", "--qdrant-url"), ("collection", "--collection"))
_given: dict[str, str] = {}


def remember(*, config: str | None = None, store: str | None = None, qdrant_url: str | None = None,
             collection: str | None = None) -> None:
    """Record the store options this process was given (None: not given); paths are made absolute."""
    _given.clear()
    for key, value in (("config", config), ("store", store), ("qdrant_url", qdrant_url), ("collection", collection)):
        if value:
            _given[key] = os.path.abspath(os.path.expanduser(value)) if key in ("config", "store") else value


def options() -> str:
    """`` --config C --store S …``: the recorded options as command-line text ("" when none were given)."""
    return "".join(f" {flag} {shlex.quote(_given[key])}" for key, flag in _FLAGS if key in _given)


def command_line(words: str) -> str:
    """``clipdex WORDS --config C …``: a command to suggest, with this run's options."""
    return f"clipdex {words}{options()}"


def command(words: str) -> str:
    """:func:`command_line` in backquotes, as messages quote a command."""
    return f"`{command_line(words)}`"


def collections_in(store_path: Path) -> list[str]:
    """The collections an embedded store folder holds (sub-folders with a collection's files), sorted."""
    try:
        entries = sorted(os.scandir(store_path), key=lambda e: e.name)
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            if entry.is_dir() and (Path(entry.path, "clipdex.json").is_file() or Path(entry.path, "shard").is_dir()):
                found.append(entry.name)
        except OSError:
            continue
    return found


def missing_collection(name: str, location: str, store_path: Path | None, then: str = "ingest DIR") -> str:
    """The message for a collection that is empty or missing: the collections the store holds instead (with
    the option to pick one), or the command that fills this one."""
    others = [c for c in collections_in(store_path) if c != name] if store_path is not None else []
    if others:
        listed = ", ".join(f"'{c}'" for c in others)
        pick = f"`clipdex … --collection {shlex.quote(others[0])}`" if len(others) == 1 else "`--collection NAME`"
        return (f"collection '{name}' is empty or missing at {location}; this store holds {listed}: use {pick}, "
                f"or run {command(then)} to fill '{name}'")
    return f"collection '{name}' is empty or missing at {location} (run {command(then)} first)"
