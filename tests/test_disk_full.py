"""A store on a full disk: one line and a non-zero exit instead of a bus error; reads keep working.

The store lives on a small real tmpfs (``mount -t tmpfs``, which needs root: skipped otherwise), the
worst case: there even reading a hole of a memory-mapped file allocates. The CLI runs as a subprocess,
so a SIGBUS shows as a negative return code instead of killing the test run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.hostile import write_photo

REPO = Path(__file__).resolve().parent.parent
NO_SPACE = re.compile(r"^clipdex: error: no space left on \S+ \((\d+) MB free, about (\d+) MB needed")


def _mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 MiB tmpfs: room for a small collection (a layout-2 store asks for about 140 MiB there), not much more."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "256m")
    yield disk
    subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs: too small for an empty collection."""
    disk = tmp_path / "tiny-disk"
    _mount_tmpfs(disk, "12m")
    yield disk
    subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "retrieval.cli", *args, "--config", str(config)], env=env,
                          capture_output=True, text=True, timeout=180)


def _photos(folder: Path, seeds: range) -> Path:
    folder.mkdir()
    for seed in seeds:
        write_photo(folder / f"p{seed:03d}.png", seed=seed, size=(64, 48))
    return folder


def _fill(disk: Path, leave: int) -> Path:
    """Take all the free space of ``disk`` but ``leave`` bytes (allocated, as a real full disk is)."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, max(0, st.f_bavail * st.f_frsize - leave))
    finally:
        os.close(fd)
    return filler


def _no_space_line(done: subprocess.CompletedProcess[str]) -> re.Match[str]:
    assert done.returncode == 1, f"exit {done.returncode} (-7 is SIGBUS): {done.stderr[-500:]}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    match = NO_SPACE.match(lines[0])
    assert match, lines[0]
    assert int(match[1]) < int(match[2])
    return match


@pytest.mark.slow
def test_full_disk_refuses_writes_with_one_line_and_still_reads(tmp_path, tiny_model_dir, small_disk):
    config = write_config(tmp_path / "c.toml", tiny_model_dir, small_disk / "store")
    first, more = _photos(tmp_path / "first", range(20)), _photos(tmp_path / "more", range(20, 60))
    done = _cli(config, "ingest", str(first), "--json")
    assert done.returncode == 0, done.stderr
    filler = _fill(small_disk, leave=1 << 20)

    _no_space_line(_cli(config, "ingest", str(more)))
    status = _cli(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["points"] == 20
    found = _cli(config, "search", "a photo", "--limit", "5", "--json")
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)) == 5

    filler.unlink()  # space again: the store takes the rest, nothing was lost or half-written
    done = _cli(config, "ingest", str(more), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["indexed"] == 40
    assert json.loads(_cli(config, "status", "--json").stdout)["points"] == 60


def test_disk_too_small_for_a_collection(tmp_path, tiny_model_dir, tiny_disk):
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tiny_disk / "store")
    _no_space_line(_cli(config, "ingest", str(_photos(tmp_path / "p", range(3)))))
    assert not (tiny_disk / "store" / "test" / "shard").exists()  # refused before anything was made
    status = _cli(config, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["points"] == 0, status.stderr


@pytest.mark.slow
def test_rebuild_on_a_full_disk_refuses_with_one_line_and_the_store_stays_usable(tmp_path, tiny_model_dir,
                                                                                   small_disk):
    """``clipdex rebuild`` writes a whole copy beside the store: on a disk without room for it, it died of
    SIGBUS, with no message, left ``shard.new`` behind, and the store would not open until space was freed."""
    config = write_config(tmp_path / "c.toml", tiny_model_dir, small_disk / "store")
    done = _cli(config, "ingest", str(_photos(tmp_path / "p", range(30))), "--json")
    assert done.returncode == 0, done.stderr
    store = small_disk / "store" / "test"
    filler = _fill(small_disk, leave=4 << 20)  # room to open and read the store, not for a second copy
    refused = _cli(config, "rebuild")
    _no_space_line(refused)
    assert "rebuild" in refused.stderr
    assert sorted(p.name for p in store.iterdir() if p.name.startswith("shard")) == ["shard"]  # no shard.new
    status = _cli(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["points"] == 30
    found = _cli(config, "search", "a photo", "--limit", "3", "--json")
    assert found.returncode == 0 and len(json.loads(found.stdout)) == 3, found.stderr

    filler.unlink()  # with room, the same rebuild goes through and keeps every point
    done = _cli(config, "rebuild")
    assert done.returncode == 0, done.stderr
    assert json.loads(_cli(config, "status", "--json").stdout)["points"] == 30
