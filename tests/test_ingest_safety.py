"""Nothing is deleted unless it is known to be gone: offline drives, unreadable folders, mass deletions.

Each case runs the real `clipdex ingest` against a real embedded store and checks that no point was
lost and that the user was told, in one line per root, on stderr and in ``--json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.images import pattern

ROOT = Path(__file__).resolve().parent.parent


def _library(root: Path, count: int, start: int = 0, folder: str = "") -> list[Path]:
    (root / folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        pattern(i).save(root / folder / f"{i:03d}.png")
        paths.append(root / folder / f"{i:03d}.png")
    return paths


def _ingest(clipdex, *args: object):
    result = clipdex("ingest", *args, "--json")
    assert result.code == 0, result.err
    return result.json(), result.err


def test_unmounted_drive_leaves_an_empty_mount_point_and_keeps_every_point(clipdex, tmp_path):
    mount = tmp_path / "mnt" / "photos"
    _library(mount, 5)
    _ingest(clipdex, mount)
    shutil.move(mount, tmp_path / "drive")  # "unmount": the mount point stays, empty
    mount.mkdir()
    summary, err = _ingest(clipdex, mount)
    assert summary["deleted"] == 0 and summary["indexed"] == 0
    assert summary["offline"] == [{"path": str(mount), "points": 5, "reason": "empty (not mounted?)"}]
    assert f"offline: {mount} (empty (not mounted?)) — 5 points kept" in err
    status = clipdex("status", "--json").json()
    assert status["points"] == 5
    assert status["offline"] == [{"path": str(mount), "points": 5, "offline": "empty (not mounted?)"}]
    mount.rmdir()
    shutil.move(tmp_path / "drive", mount)  # mounted again: nothing to redo
    again, err = _ingest(clipdex, mount)
    assert (again["unchanged"], again["indexed"], again["offline"], err.strip()) == (5, 0, [], "")
    assert clipdex("status", "--json").json()["roots"] == [{"path": str(mount), "points": 5, "offline": ""}]


def test_missing_root_keeps_its_points_while_the_other_root_syncs(clipdex, tmp_path):
    home, drive = tmp_path / "home", tmp_path / "usb"
    _library(home, 3)
    _library(drive, 4, start=10)
    _ingest(clipdex, home, drive)
    drive.rename(tmp_path / "usb-away")
    _library(home, 1, start=20)
    summary, err = _ingest(clipdex, home, drive)
    assert (summary["indexed"], summary["unchanged"], summary["deleted"]) == (1, 3, 0)
    assert summary["offline"] == [{"path": str(drive), "points": 4, "reason": "missing (not mounted?)"}]
    assert f"offline: {drive} (missing (not mounted?)) — 4 points kept" in err
    status = clipdex("status", "--json").json()
    assert status["points"] == 8
    assert {r["path"]: (r["points"], r["offline"]) for r in status["roots"]} == {
        str(home): (4, ""), str(drive): (4, "missing (not mounted?)")}
    typo = clipdex("ingest", tmp_path / "no-such-folder", "--json")  # never ingested: still a mistake
    assert typo.code == 1 and "no such file or folder" in typo.err


def _without_root_privileges() -> list[str]:
    """A command prefix under which file permissions apply (the suite may run as root)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a mode-000 folder cannot be made unreadable")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]


def test_unreadable_folder_and_root_keep_their_points(clipdex, config, tmp_path):
    root = tmp_path / "lib"
    _library(root, 2, folder="open")
    _library(root, 3, start=10, folder="locked")
    _ingest(clipdex, root)
    cli = [*_without_root_privileges(), sys.executable, "-m", "retrieval.cli", "ingest", str(root),
           "--config", str(config), "--json"]

    def run() -> tuple[dict, str]:
        done = subprocess.run(cli, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout), done.stderr

    os.chmod(root / "locked", 0)
    try:
        summary, err = run()
        locked = str(root / "locked")
        assert summary["deleted"] == 0 and summary["unchanged"] == 2
        assert summary["failed"] == [{"path": locked, "error": "permission denied"}]
        assert summary["kept"] == [{"path": locked, "points": 3, "reason": "permission denied"}]
        assert f"unreadable: {locked} (permission denied) — 3 points kept" in err
        os.chmod(root, 0)  # the root itself cannot be listed
        summary, err = run()
        assert summary["deleted"] == 0
        assert summary["offline"] == [{"path": str(root), "points": 5, "reason": "permission denied"}]
        assert f"offline: {root} (permission denied) — 5 points kept" in err
    finally:
        os.chmod(root, 0o755)
        os.chmod(root / "locked", 0o755)
    assert clipdex("status", "--json").json()["points"] == 5


def test_symlinked_folder_whose_target_vanished_keeps_its_points(clipdex, tmp_path):
    root, nas = tmp_path / "lib", tmp_path / "nas"
    _library(root, 2)
    _library(nas, 3, start=10)
    os.symlink(nas, root / "nas")
    assert _ingest(clipdex, root, "--follow-symlinks")[0]["indexed"] == 5
    nas.rename(tmp_path / "nas-offline")  # the link now points nowhere: listing it fails
    summary, err = _ingest(clipdex, root, "--follow-symlinks")
    link = str(root / "nas")
    assert summary["deleted"] == 0 and summary["unchanged"] == 2
    assert summary["kept"] == [{"path": link, "points": 3, "reason": "broken symlink"}]
    assert f"unreadable: {link} (broken symlink) — 3 points kept" in err
    assert clipdex("status", "--json").json()["points"] == 5


def test_mass_deletion_is_held_back_until_pruned(clipdex, tmp_path):
    root = tmp_path / "lib"
    photos = _library(root, 6)
    _ingest(clipdex, root)
    for gone in photos[:4]:
        gone.unlink()
    _library(root, 1, start=30)
    summary, err = _ingest(clipdex, root)
    assert (summary["indexed"], summary["deleted"]) == (1, 0)  # new files still stored
    assert summary["held_back"] == [{"path": str(root), "points": 6, "would_delete": 4}]
    assert "held back: 4 of 6 points below" in err and "--prune" in err
    assert clipdex("status", "--json").json()["points"] == 7
    pruned, err = _ingest(clipdex, root, "--prune")
    assert (pruned["deleted"], pruned["held_back"], err.strip()) == (4, [], "")
    assert clipdex("status", "--json").json()["points"] == 3


def test_moving_a_whole_library_is_not_a_mass_deletion(clipdex, tmp_path):
    root = tmp_path / "lib"
    _library(root, 6, folder="2023")
    _ingest(clipdex, root)
    (root / "2023").rename(root / "2023-trip")
    summary, err = _ingest(clipdex, root)
    assert (summary["moved"], summary["deleted"], summary["held_back"]) == (6, 6, [])
    assert clipdex("status", "--json").json()["points"] == 6


def test_a_file_ingested_on_its_own_stays_counted_under_its_root(clipdex, tmp_path):
    """What `serve --watch` does with a changed file: ingest just that path."""
    root = tmp_path / "lib"
    photos = _library(root, 3)
    _ingest(clipdex, root)
    pattern(40).save(photos[1])  # edited
    summary, _ = _ingest(clipdex, photos[1])
    assert summary["indexed"] == 1 and summary["deleted"] == 0
    assert clipdex("status", "--json").json()["roots"] == [{"path": str(root), "points": 3, "offline": ""}]
