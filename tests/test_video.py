"""Videos: ingest (several containers and codecs, rotated, changed, killed) and hostile files, each bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from tests.images import pattern
from tests.videos import solid, write_video

SCENES = [(pattern(1), 3.0), (pattern(2), 2.0), (pattern(3), 3.0)]  # cuts at 3 s and 5 s


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A photo and videos in four containers/codecs, one of them a rotated portrait phone video."""
    lib = tmp_path / "lib"
    lib.mkdir()
    pattern(9).save(lib / "photo.png")
    write_video(lib / "scenes.mp4", SCENES, creation_time="2021-06-01T10:00:00Z")
    write_video(lib / "clip.webm", [(pattern(4), 2.0), (pattern(5), 2.0)])
    write_video(lib / "clip.mkv", [(pattern(6), 2.0)])
    write_video(lib / "clip.mov", [(pattern(7), 2.0)])
    write_video(lib / "portrait.mp4", [(pattern(8), 2.0)], rotation=90)
    return lib


def stored(config: Path) -> list[dict]:
    """Every stored point's payload."""
    from retrieval.settings import load_settings
    from retrieval.store import open_store

    settings = load_settings(config)
    store = open_store(settings)
    try:
        return [p for _, p in store.payloads(("path", "media", "start_s", "end_s", "time_s", "hash", "video_points",
                                              "width", "height", "codec", "duration_s", "taken_ts", "truncated"))]
    finally:
        store.close()


def test_ingest_videos_beside_photos(clipdex, config: Path, library: Path) -> None:
    r = clipdex("ingest", library, "--json")
    assert r.code == 0, r.err
    report = r.json()
    assert report["indexed"] == 1 and report["videos"] == 5 and report["failed"] == []
    points = stored(config)
    photos = [p for p in points if p.get("media") == "image"]
    assert len(photos) == 1
    scenes = sorted((p for p in points if p["path"].endswith("scenes.mp4")), key=lambda p: p["start_s"])
    assert len(scenes) == 3  # one moment per shot (a random model: vectors of different pictures differ)
    assert [round(p["start_s"]) for p in scenes] == [0, 3, 5] and round(scenes[-1]["end_s"]) == 8
    assert all(p["start_s"] <= p["time_s"] < p["end_s"] for p in scenes)
    assert scenes[0]["codec"] == "h264" and scenes[0]["duration_s"] == pytest.approx(8, abs=0.2)
    assert scenes[0]["taken_ts"] == pytest.approx(1622541600)
    assert all(p["video_points"] == 3 for p in scenes)
    webm = [p for p in points if p["path"].endswith("clip.webm")]
    assert webm and webm[0]["codec"] == "vp9"
    portrait = [p for p in points if p["path"].endswith("portrait.mp4")]
    assert (portrait[0]["width"], portrait[0]["height"]) == (48, 64)  # stored 64x48, shown upright
    status = clipdex("status", "--json").json()
    assert status["videos"] == 5 and status["moments"] == len(points) - 1


def test_rerun_touch_and_change(clipdex, config: Path, library: Path) -> None:
    assert clipdex("ingest", library, "--json").code == 0
    before = stored(config)
    again = clipdex("ingest", library, "--json").json()
    assert again["videos"] == 0 and again["indexed"] == 0 and again["unchanged"] == 6
    video = library / "scenes.mp4"
    os.utime(video, (time.time() + 5, time.time() + 5))  # touched: same bytes
    touched = clipdex("ingest", library, "--json").json()
    assert touched["videos"] == 0 and touched["unchanged"] == 6
    assert len(stored(config)) == len(before)
    write_video(video, [(pattern(11), 2.0), (pattern(12), 2.0)])  # new content: replaced whole
    changed = clipdex("ingest", library, "--json").json()
    assert changed["videos"] == 1
    now = [p for p in stored(config) if p["path"] == str(video)]
    assert len({p["hash"] for p in now}) == 1 and len(now) == now[0]["video_points"] == 2
    video.unlink()
    gone = clipdex("ingest", library, "--json").json()
    assert gone["deleted"] == 1 and not [p for p in stored(config) if p["path"] == str(video)]


def test_no_video_flag(clipdex, config: Path, library: Path) -> None:
    report = clipdex("ingest", library, "--no-video", "--json").json()
    assert report["indexed"] == 1 and report["videos"] == 0
    assert {p["path"] for p in stored(config)} == {str(library / "photo.png")}
