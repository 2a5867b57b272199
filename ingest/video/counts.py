"""What ``clipdex status`` says about videos: how many, and their moments (no PyAV here)."""

from __future__ import annotations

from typing import Any


def video_counts(store: Any) -> dict[str, int]:
    """``{"videos": files, "moments": points}`` of the videos in ``store``.

    Moments come from the ``media`` facet (one indexed look-up); videos, when there are moments, from one
    scroll of two small payload fields (each moment carries its version's ``video_points``).
    """
    try:
        moments = int(store.facet_counts("media", 8).get("video", 0))
    except Exception:  # a store made before ``media`` was indexed, or a server without facets
        moments = -1
    if moments == 0:
        return {"videos": 0, "moments": 0}
    videos, counted = 0.0, 0
    for _, payload in store.payloads(("media", "video_points")):
        if payload.get("media") == "video":
            counted += 1
            videos += 1.0 / max(1, int(payload.get("video_points") or 1))
    return {"videos": round(videos), "moments": counted}
