"""The embedded store's segment files: checked before the engine reads them, set aside when damaged, and counted.

qdrant-edge trusts its files. A damaged sealed segment either loses points without a word (a truncated
``id_tracker.versions``: every point past its end reads as deleted; ``id_tracker.deleted`` overwritten
with ones), stops the whole store from opening (a damaged ``graph.bin`` or ``links_compressed.bin``), or
panics in Rust (``id_tracker.mappings`` overwritten: a point count of 2^64). So:

* :func:`segment_problem` checks the id tracker of each sealed segment against itself before an open
  (a few ``stat`` calls and a few hundred bytes read per segment);
* a segment that fails it, or that the engine refuses to load, is **set aside** (:func:`set_aside`):
  moved, never deleted, to ``<store>/damaged/<time>-<segment>/`` with a ``reason.txt``; the store
  opens without it, and the next ``clipdex ingest`` of its folders embeds the missing files again;
* the **ledger** (``<store>/points.json``) keeps a lower bound of the points clipdex stored: raised to the
  engine's count when a writing process closes the store, lowered before each deletion. A store that
  serves fewer points than its ledger lost them to damaged files (:func:`lost`), which
  ``clipdex status --check`` reports, instead of a silent loss.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from retrieval.atomic import replace_text

LEDGER = "points.json"
DAMAGED_DIR = "damaged"
_MIN_MAPPING_BYTES = 13
"""The smallest entry of ``id_tracker.mappings`` (a kind byte, an internal id, a numeric external id)."""
_LOAD_FAILED = re.compile(r"failed to load segment (\S+?):")


def segment_problem(segment: Path) -> str | None:
    """Why a sealed segment's id tracker cannot be right, or None (a segment still being written, whose
    tracker is kept elsewhere, is not checked)."""
    mappings, versions, deleted = (segment / f"id_tracker.{n}" for n in ("mappings", "versions", "deleted"))
    if not versions.exists() and not mappings.exists():
        return None
    try:
        sizes = {f.name: f.stat().st_size for f in (mappings, versions, deleted)}
        with mappings.open("rb") as fh:
            head = fh.read(8)
        with deleted.open("rb") as fh:
            flags = fh.read()
    except OSError as exc:
        return f"{exc.filename}: {exc.strerror}"
    if len(head) < 8:
        return "id_tracker.mappings is cut short"
    points = int.from_bytes(head, "little")
    if points > (sizes["id_tracker.mappings"] - 8) // _MIN_MAPPING_BYTES:
        size = sizes["id_tracker.mappings"]
        return f"id_tracker.mappings claims {points:,} points, more than its {size:,} bytes hold"
    if sizes["id_tracker.versions"] != 8 * points:
        return (f"id_tracker.versions is {sizes['id_tracker.versions']:,} bytes, not {8 * points:,} "
                f"({points:,} points): cut short or overwritten")
    if len(flags) * 8 < points:
        return f"id_tracker.deleted holds {len(flags) * 8:,} flags for {points:,} points"
    tail = int.from_bytes(flags, "little") >> points if flags else 0
    if tail:
        return "id_tracker.deleted has flags set past its last point (overwritten)"
    return None


def estimated_points(segment: Path) -> int:
    """About how many live points a (possibly damaged) sealed segment held, from whichever of its id tracker
    files still looks sound: its point count, less the deleted flags when those are sound."""
    try:
        by_versions = (segment / "id_tracker.versions").stat().st_size // 8
        mappings = segment / "id_tracker.mappings"
        with mappings.open("rb") as fh:
            by_mappings = int.from_bytes(fh.read(8), "little")
        if by_mappings > (mappings.stat().st_size - 8) // _MIN_MAPPING_BYTES:
            by_mappings = 0
        flags = (segment / "id_tracker.deleted").read_bytes()
    except OSError:
        return 0
    points = max(by_versions, by_mappings)
    bits = int.from_bytes(flags, "little")
    if bits >> points:  # flags past the end: overwritten, not to be trusted
        return points
    return max(0, points - bin(bits).count("1"))


def check_all(shard: Path) -> Iterator[tuple[Path, str]]:
    """(segment, problem) for each damaged segment of a shard."""
    for segment in sorted((shard / "segments").iterdir()) if (shard / "segments").is_dir() else ():
        if segment.is_dir() and (problem := segment_problem(segment)):
            yield segment, problem


def load_failure(message: str, shard: Path) -> Path | None:
    """The segment an engine error names (``failed to load segment PATH: …``), if it is one of ``shard``'s."""
    match = _LOAD_FAILED.search(message)
    if not match:
        return None
    segment = Path(match.group(1))
    return segment if segment.parent == shard / "segments" and segment.is_dir() else None


def set_aside(folder: Path, segment: Path, reason: str) -> Path:
    """Move a damaged segment out of the shard, into ``folder/damaged/`` with its reason; never delete it."""
    aside = folder / DAMAGED_DIR
    aside.mkdir(exist_ok=True)
    target = aside / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{segment.name}"
    os.rename(segment, target)  # the same file system: atomic, and nothing is copied
    (target / "reason.txt").write_text(reason.rstrip() + "\n", encoding="utf-8")
    return target


def set_aside_list(folder: Path) -> list[dict[str, str]]:
    """The segments set aside so far: where they are and why."""
    aside = folder / DAMAGED_DIR
    found = []
    for target in sorted(aside.iterdir()) if aside.is_dir() else ():
        try:
            reason = (target / "reason.txt").read_text(encoding="utf-8").strip()
        except OSError:
            reason = ""
        found.append({"segment": str(target), "reason": reason})
    return found


def read_ledger(folder: Path) -> int | None:
    try:
        value = json.loads((folder / LEDGER).read_text(encoding="utf-8")).get("points")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value >= 0 else None


def write_ledger(folder: Path, points: int) -> None:
    """Replace the ledger atomically (a crash leaves the old one or the new one)."""
    replace_text(folder / LEDGER, lambda fh: json.dump({"points": max(0, points), "at": time.time()}, fh),
                 prefix=".points-")


def lost(folder: Path, served: int) -> dict[str, Any]:
    """What the store's records say against what the engine serves: ``expected`` (the ledger, None
    when there is none yet), ``served``, ``lost`` and the segments ``set_aside``."""
    expected = read_ledger(folder)
    return {"expected": expected, "served": served,
            "lost": max(0, expected - served) if expected is not None else 0, "set_aside": set_aside_list(folder)}


@contextmanager
def engine_stderr() -> Iterator[None]:
    """Hold what the engine writes to stderr (file descriptor 2) while the body runs: a Rust panic prints its
    message and, with ``RUST_BACKTRACE``, a whole backtrace there. Printed afterwards unless the body
    raised a panic, which the caller turns into one line."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        panicked = False
        try:
            yield
        except BaseException as exc:
            panicked = type(exc).__name__ == "PanicException"
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not panicked:
                held.seek(0)
                if data := held.read():
                    with open(2, "wb", closefd=False) as err:
                        err.write(data)
