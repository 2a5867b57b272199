"""What the reader made of one file (no torch here: bookkeeping and the store path import only this)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ingest.scan import ScannedFile

if TYPE_CHECKING:
    import torch


@dataclass
class FileResult:
    """What a worker made of one file: pixels to embed, a known hash to reuse, or an error.

    ``unreadable``: the bytes could not be read at all (permission, I/O error, timeout while hashing),
    as opposed to bytes that were read but are not a usable image. A stored point is kept for the first
    and dropped for the second.
    """

    file: ScannedFile
    status: str  # "image" | "known" | "failed"
    hash: str = ""
    error: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    pixels: torch.Tensor | None = None  # the preprocessed image (reader workers only)
    unreadable: bool = False
