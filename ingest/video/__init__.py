"""Videos in an ingest: moments (time ranges of a shot) as points beside photos; see docs/video.md.

One entry point, :func:`ingest_videos` (the pipeline's video pass); the parts: :mod:`.probe` (open and
check a file), :mod:`.sample` (decode within the caps), :mod:`.shots` (cuts and segments),
:mod:`.moments` (merge, ids), :mod:`.run` (per file: hash, sample, embed, store), :mod:`.reuse` (a moved
or copied video: its stored moments copied, nothing decoded), :mod:`.frame` (one
frame, for thumbnails, ``--like path#t=`` and OCR), :mod:`.counts` (``status``). PyAV is imported only
by the modules that decode, so ``status`` and searches never load it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VideoResult", "ingest_videos", "read_video"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ingest.video import run

        return getattr(run, name)
    raise AttributeError(name)
