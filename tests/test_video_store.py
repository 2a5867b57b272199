"""What the store remembers about videos and failures: the failure ledger behind ``status``, a moved or copied
video reusing its moments, and ``ingest --ray`` reading videos (real PyAV files, the real CLI and stores)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.images import pattern
from tests.videos import write_audio_only, write_video

SCENES = [(pattern(1), 2.0), (pattern(2), 2.0), (pattern(3), 2.0)]  # cuts at 2 s and 4 s
ESC_NAME = "bad\x1b[31m.jpg"  # a file name holding a terminal escape


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A photo and a video that ingest stores, and two photos and two videos it cannot read."""
    lib = tmp_path / "lib"
    lib.mkdir()
    pattern(9).save(lib / "photo.png")
    write_video(lib / "scenes.mp4", SCENES)
    (lib / "text.jpg").write_text("this is not an image\n" * 10)
    (lib / ESC_NAME).write_bytes(b"")
    (lib / "text.mp4").write_text("this is not a video\n" * 20)
    write_audio_only(lib / "audio.mov")
    return lib


def _ledger(config: Path) -> list[dict]:
    """The failure ledger's entries, as the store folder holds them (after its header line)."""
    from ingest.failures import FILE

    store = Path(config.read_text().split('path = "')[1].split('"')[0]) / "test"
    lines = (store / FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[1:]]


def test_status_counts_and_lists_the_files_that_failed(clipdex, config: Path, library: Path) -> None:
    report = clipdex("ingest", library, "--json").json()
    assert report["indexed"] == 1 and report["videos"] == 1 and len(report["failed"]) == 4
    status = clipdex("status", "--json").json()
    assert status["failed"] == {"images": 2, "videos": 2}
    assert "failed_files" not in status
    human = clipdex("status").out
    assert "failed      4 files ingest could not read (2 images, 2 videos)" in human and "status --failed" in human
    listed = clipdex("status", "--failed", "--json").json()["failed_files"]
    assert [Path(f["path"]).name for f in listed] == sorted(["audio.mov", ESC_NAME, "text.jpg", "text.mp4"])
    by_name = {Path(f["path"]).name: f for f in listed}
    assert by_name["text.jpg"]["media"] == "image" and by_name["text.mp4"]["media"] == "video"
    assert "audio only" in by_name["audio.mov"]["error"] and by_name[ESC_NAME]["error"] == "empty file"
    stat = (library / "text.mp4").stat()
    assert (by_name["text.mp4"]["size"], by_name["text.mp4"]["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
    lines = clipdex("status", "--failed").out.splitlines()
    assert f"  failed: {library / 'text.jpg'}: not an image (looks like text)" in lines
    assert f"  failed: {library}/bad\\x1b[31m.jpg: empty file" in lines  # escaped, never sent to the terminal
    assert "\x1b" not in clipdex("status", "--failed").out


def test_unchanged_failures_are_skipped_until_retried_changed_or_gone(clipdex, config: Path, library: Path) -> None:
    assert len(clipdex("ingest", library, "--json").json()["failed"]) == 4
    again = clipdex("ingest", library, "--json").json()
    assert again["failed"] == [] and again["unchanged"] == 2
    assert sorted(Path(s["path"]).name for s in again["skipped"]) == sorted(["audio.mov", ESC_NAME, "text.jpg",
                                                                            "text.mp4"])
    human = clipdex("ingest", library).out
    assert "failed 0, skipped 4" in human
    assert f"  skipped: {library / 'text.mp4'}: failed before, unchanged (" in human and "--retry-failed" in human
    retried = clipdex("ingest", library, "--retry-failed", "--json").json()
    assert len(retried["failed"]) == 4 and retried["skipped"] == []
    assert clipdex("status", "--json").json()["failed"] == {"images": 2, "videos": 2}

    pattern(5).save(library / "text.jpg", format="PNG")  # changed, now an image: stored, and out of the ledger
    write_video(library / "text.mp4", [(pattern(6), 1.0)])  # changed, now a video
    (library / "audio.mov").unlink()  # gone
    fixed = clipdex("ingest", library, "--json").json()
    assert fixed["indexed"] == 1 and fixed["videos"] == 1 and [Path(s["path"]).name for s in fixed["skipped"]] == [
        ESC_NAME]
    assert clipdex("status", "--json").json()["failed"] == {"images": 1, "videos": 0}
    assert [Path(e["path"]).name for e in _ledger(config)] == [ESC_NAME]

    (library / ESC_NAME).write_bytes(b"still not a jpeg")  # changed but still broken: read again, reason updated
    os.utime(library / ESC_NAME, (time.time() + 5, time.time() + 5))
    changed = clipdex("ingest", library, "--json").json()
    assert [f["error"] for f in changed["failed"]] != ["empty file"] and changed["skipped"] == []
    assert _ledger(config)[0]["size"] == len(b"still not a jpeg")


def test_other_decoder_limits_read_failures_again(clipdex, config: Path, tmp_path: Path) -> None:
    """A file refused under one ``max_megapixels`` is read again once the limit changes (not skipped)."""
    lib = tmp_path / "big"
    lib.mkdir()
    pattern(1, (2000, 1000)).save(lib / "wide.png")
    (lib / "text.jpg").write_text("not an image\n")
    with config.open("a") as fh:
        fh.write("max_megapixels = 1.0\n")  # (appended to the [ingest] section)
    failed = {Path(f["path"]).name: f["error"] for f in clipdex("ingest", lib, "--json").json()["failed"]}
    assert "too large" in failed["wide.png"] and set(failed) == {"wide.png", "text.jpg"}
    assert len(clipdex("ingest", lib, "--json").json()["skipped"]) == 2
    config.write_text(config.read_text().replace("max_megapixels = 1.0", "max_megapixels = 4.0"))
    report = clipdex("ingest", lib, "--json").json()
    assert report["indexed"] == 1 and report["skipped"] == []
    assert [Path(f["path"]).name for f in report["failed"]] == ["text.jpg"]  # read again: the same reason
    assert clipdex("status", "--json").json()["failed"] == {"images": 1, "videos": 0}
    assert [Path(s["path"]).name for s in clipdex("ingest", lib, "--json").json()["skipped"]] == ["text.jpg"]


def test_no_video_keeps_the_videos_failures_and_a_damaged_ledger_is_replaced(clipdex, config: Path,
                                                                              library: Path) -> None:
    from ingest.failures import FILE

    clipdex("ingest", library, "--json")
    assert clipdex("ingest", library, "--no-video", "--json").json()["skipped"]  # the photos' failures
    assert clipdex("status", "--json").json()["failed"] == {"images": 2, "videos": 2}  # videos not listed: kept
    ledger = Path(str(_store(config))) / FILE
    ledger.write_bytes(b"\x00garbage{\n" * 3)
    assert clipdex("status", "--json").json()["failed"] == {"images": 0, "videos": 0}  # unreadable: no crash
    report = clipdex("ingest", library, "--json").json()
    assert len(report["failed"]) == 4  # nothing known to skip: read again, and the ledger written afresh
    assert clipdex("status", "--json").json()["failed"] == {"images": 2, "videos": 2}


def _store(config: Path) -> Path:
    return Path(config.read_text().split('path = "')[1].split('"')[0]) / "test"


def test_the_ledger_is_capped_oldest_first(tmp_path: Path) -> None:
    from ingest import failures

    extra = 5
    rows = [{"path": f"/lib/{i:06d}.jpg", "media": "image", "size": 1, "mtime_ns": i, "error": "empty file",
             "at": float(i), "unreadable": False, "env": ""} for i in range(failures.MAX_ENTRIES + extra)]
    failures.write(tmp_path, rows)
    kept, damaged = failures.read(tmp_path)
    assert not damaged and len(kept) == failures.MAX_ENTRIES
    assert min(e["at"] for e in kept.values()) == extra  # the oldest five dropped
    assert failures.counts(tmp_path) == {"images": failures.MAX_ENTRIES, "videos": 0}


def test_a_server_store_has_no_ledger_and_says_so(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A Qdrant store (qdrant-client's local mode, as for a server): the ingest reports its failures, status has
    ``failed: null`` and the human line says why."""
    from click.testing import CliRunner

    from retrieval.cli.index_cmds import _failed_lines
    from retrieval.index import Index
    from retrieval.settings import load_settings
    from retrieval.store.server import ServerStore
    from tests.conftest import write_config

    lib = tmp_path / "lib"
    lib.mkdir()
    pattern(1).save(lib / "ok.png")
    (lib / "text.jpg").write_text("not an image\n")
    settings = load_settings(write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store"))
    with Index(settings, ServerStore("t", path=str(tmp_path / "ql"))) as index:
        report = index.ingest([lib])
        assert report.indexed == 1 and [Path(f["path"]).name for f in report.failed] == ["text.jpg"]
        assert index.ingest([lib]).failed  # nothing remembered: read (and reported) again
        assert index.status()["failed"] is None
    assert not (tmp_path / "store").exists()

    import click

    out = CliRunner().invoke(click.command()(lambda: _failed_lines(None, None, True))).output
    assert "not remembered on a Qdrant server store" in out


def _moments(config: Path, name: str) -> dict[str, tuple[np.ndarray, dict]]:
    """The stored moments of the file ``name`` (any folder): id -> (vector, payload)."""
    from retrieval.settings import load_settings
    from retrieval.store import open_store

    store = open_store(load_settings(config))
    try:
        ids = [pid for pid, p in store.payloads(("path",)) if Path(p["path"]).name == name]
        return store.points(ids)
    finally:
        store.close()


def _by_time(moments: dict[str, tuple[np.ndarray, dict]]) -> list[tuple[str, np.ndarray, dict]]:
    return sorted(((pid, v, p) for pid, (v, p) in moments.items()), key=lambda row: row[2]["time_s"])


PATH_FIELDS = {"path", "folder", "size", "mtime", "mtime_ns", "root"}


def test_a_moved_or_copied_video_reuses_its_moments(clipdex, config: Path, tmp_path: Path) -> None:
    from ingest.records import point_id
    from ingest.video.moments import moment_key

    lib = tmp_path / "lib"
    (lib / "a").mkdir(parents=True)
    (lib / "b").mkdir()
    write_video(lib / "a" / "trip.mp4", SCENES, creation_time="2021-06-01T10:00:00Z")
    pattern(2).save(tmp_path / "query.png")  # the second scene's picture
    assert clipdex("ingest", lib, "--json").json()["videos"] == 1
    before = _by_time(_moments(config, "trip.mp4"))
    assert len(before) == 3
    (hit,) = clipdex("search", "--image", tmp_path / "query.png", "--media", "video", "-k", "1", "--json").json()

    os.rename(lib / "a" / "trip.mp4", lib / "b" / "moved.mp4")
    moved = clipdex("ingest", lib, "--json").json()
    assert moved["videos"] == 0 and moved["moments"] == 0  # nothing decoded or embedded
    assert moved["moved"] == 1 and moved["deleted"] == 1 and moved["failed"] == []
    assert not _moments(config, "trip.mp4")
    after = _by_time(_moments(config, "moved.mp4"))
    key = str(lib / "b" / "moved.mp4")
    assert [pid for pid, _, _ in after] == [point_id(moment_key(key, p["hash"], p["time_s"])) for _, _, p in after]
    for (_, old_vector, old), (_, vector, new) in zip(before, after, strict=True):
        np.testing.assert_array_equal(vector, old_vector)
        assert {k: v for k, v in new.items() if k not in PATH_FIELDS} == {
            k: v for k, v in old.items() if k not in PATH_FIELDS}
        assert new["path"] == key and new["folder"] == str(lib / "b") and new["root"] == str(lib)
    (found,) = clipdex("search", "--image", tmp_path / "query.png", "--media", "video", "-k", "1", "--json").json()
    assert found["path"] == key and (found["time_s"], found["start_s"], found["end_s"]) == (
        hit["time_s"], hit["start_s"], hit["end_s"])
    assert clipdex("search", "--like", f"{key}#t={hit['time_s']}", "--media", "video", "-k", "1",
                   "--json").json()[0]["time_s"] == hit["time_s"]

    shutil.copy(lib / "b" / "moved.mp4", lib / "a" / "copy.mp4")  # a copy beside the original
    shutil.copy(lib / "b" / "moved.mp4", lib / "a" / "copy2.mp4")
    copied = clipdex("ingest", lib, "--json").json()
    assert copied["videos"] == 0 and copied["duplicates"] == 2 and copied["deleted"] == 0
    assert len(_moments(config, "moved.mp4")) == len(_moments(config, "copy.mp4")) == len(
        _moments(config, "copy2.mp4")) == 3
    assert clipdex("status", "--json").json()["videos"] == 3
    again = clipdex("ingest", lib, "--json").json()
    assert again["unchanged"] == 3 and again["videos"] == again["duplicates"] == 0


def test_identical_new_videos_are_read_once_and_an_incomplete_source_is_read_again(clipdex, config: Path,
                                                                                   tmp_path: Path) -> None:
    from retrieval.settings import load_settings
    from retrieval.store import open_store

    lib = tmp_path / "lib"
    lib.mkdir()
    write_video(lib / "one.mp4", SCENES)
    shutil.copy(lib / "one.mp4", lib / "two.mp4")
    first = clipdex("ingest", lib, "--json").json()
    assert first["videos"] == 1 and first["duplicates"] == 1  # the second copy reuses the first one's moments
    assert len(_moments(config, "one.mp4")) == len(_moments(config, "two.mp4")) == 3

    (lib / "two.mp4").unlink()
    assert clipdex("ingest", lib, "--json").json()["deleted"] == 1
    ids = sorted(_moments(config, "one.mp4"))
    store = open_store(load_settings(config))
    try:  # one moment of one.mp4 lost (a partly applied write): not a source to copy from
        store.delete(ids[:1])
    finally:
        store.close()
    os.rename(lib / "one.mp4", lib / "three.mp4")
    report = clipdex("ingest", lib, "--json").json()
    assert report["videos"] == 1 and report["moved"] == 0  # read again: its stored set was not whole
    assert len(_moments(config, "three.mp4")) == 3 and not _moments(config, "one.mp4")


def test_ray_ingest_reads_videos_as_a_local_ingest_does(capfd, tmp_path: Path, tiny_model_dir: Path) -> None:
    """``ingest --ray local``: the photos on Ray, then the same video pass as a local ingest (same ids, payloads
    and vectors), failures remembered, and a moved video reused."""
    import ray

    from retrieval.cli import main
    from tests.conftest import write_config

    lib = tmp_path / "lib"
    lib.mkdir()
    pattern(9).save(lib / "photo.png")
    write_video(lib / "scenes.mp4", SCENES)
    (lib / "text.mp4").write_text("this is not a video\n" * 20)
    local = write_config(tmp_path / "local.toml", tiny_model_dir, tmp_path / "store-local")
    on_ray = write_config(tmp_path / "ray.toml", tiny_model_dir, tmp_path / "store-ray")

    def ingest(config: Path, *extra: str) -> dict:
        capfd.readouterr()
        code = main(["ingest", str(lib), *extra, "--json", "--config", str(config)])
        out = capfd.readouterr().out
        assert code == 0, out
        return json.loads(out)

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024 * 1024, logging_level="warning")
    try:
        first = ingest(on_ray, "--ray", "local")
        assert ingest(local) == first
        assert first["indexed"] == 1 and first["videos"] == 1 and first["moments"] == 3
        assert [Path(f["path"]).name for f in first["failed"]] == ["text.mp4"]
        here, there = _moments(local, "scenes.mp4"), _moments(on_ray, "scenes.mp4")
        assert here.keys() == there.keys() and len(here) == 3
        for pid, (vector, payload) in here.items():
            assert there[pid][1] == payload
            np.testing.assert_allclose(there[pid][0], vector, atol=1e-3)
        again = ingest(on_ray, "--ray", "local")
        assert again["videos"] == 0 and again["unchanged"] == 2 and len(again["skipped"]) == 1
        os.rename(lib / "scenes.mp4", lib / "moved.mp4")
        moved = ingest(on_ray, "--ray", "local")
        assert (moved["videos"], moved["moved"], moved["deleted"]) == (0, 1, 1)
    finally:
        ray.shutdown()
