"""What an ingest did, as ``clipdex ingest --json`` prints it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class IngestReport:
    """Counts per file, failures, and every point kept or held back with the reason.

    ``offline``: roots whose points were all kept (missing, unlistable, or empty while the store holds
    points below them): ``{"path", "points", "reason"}``. ``kept``: unreadable folders below a root
    whose points were kept: ``{"path", "points", "reason"}``. ``held_back``: roots where more than
    ``max_delete_fraction`` of the points would have been deleted; nothing was deleted there:
    ``{"path", "points", "would_delete"}`` (confirm with ``--prune``).
    """

    indexed: int = 0
    unchanged: int = 0
    deleted: int = 0
    moved: int = 0
    duplicates: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # failed before, unchanged: {"path", "error"}
    offline: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    held_back: list[dict[str, Any]] = field(default_factory=list)
    index_built: bool = False
    videos: int = 0  # videos read and stored (ingest.video)
    moments: int = 0  # their points
    truncated: list[dict[str, str]] = field(default_factory=list)  # videos sampled up to a cap: {"path", "cap"}
    ocr: dict[str, Any] | None = None  # the OCR pass's report (ingest.ocr.OcrReport.as_dict) when it ran
    concepts: dict[str, Any] | None = None  # new points tagged with the collection's concepts (retrieval.concepts)

    def as_dict(self) -> dict[str, Any]:
        return {"indexed": self.indexed, "unchanged": self.unchanged, "deleted": self.deleted,
                "moved": self.moved, "duplicates": self.duplicates, "failed": self.failed, "skipped": self.skipped,
                "offline": self.offline, "kept": self.kept, "held_back": self.held_back,
                "index_built": self.index_built, "videos": self.videos, "moments": self.moments,
                "truncated": self.truncated, **({"ocr": self.ocr} if self.ocr is not None else {}),
                **({"concepts": self.concepts} if self.concepts is not None else {})}

    def notices(self) -> list[str]:
        """One line per root or folder whose points were kept or whose deletions were held back."""
        lines = [f"offline: {o['path']} ({o['reason']}) — {o['points']:,} points kept" for o in self.offline]
        lines += [f"unreadable: {k['path']} ({k['reason']}) — {k['points']:,} points kept" for k in self.kept]
        lines += [f"held back: {h['would_delete']:,} of {h['points']:,} points below {h['path']} would be deleted "
                  f"(over [ingest] max_delete_fraction); nothing deleted there, new and changed files were "
                  f"stored; run again with --prune to delete them" for h in self.held_back]
        lines += [f"truncated: {t['path']}: sampled up to {t['cap']}" for t in self.truncated]
        return lines
