"""Replacing a small bookkeeping file whole: a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO


def replace_text(target: Path, write: Callable[[TextIO], None], prefix: str = ".tmp-") -> None:
    """Write ``target`` through ``write(fh)`` into a temporary file beside it, fsync it, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
