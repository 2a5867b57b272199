"""Open an indexed file exactly once, and only if what was opened lies inside an ingested root.

The check itself is :mod:`retrieval.inside` (the one every file operation goes through: serving,
moving duplicates aside, putting them back); this module keeps the names the server uses.
"""

from __future__ import annotations

from retrieval.inside import OpenedFile, fd_path, inside, open_inside
from retrieval.inside import Refused as NotServable

__all__ = ["NotServable", "OpenedFile", "fd_path", "inside", "open_inside"]
