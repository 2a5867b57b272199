"""Ingest on real-life libraries: moves, duplicates, hostile files, filters, crashes and concurrency."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from retrieval import load_settings
from retrieval.index import Index
from tests.conftest import write_config
from tests.hostile import HOSTILE_REASONS, write_hostile_files, write_photo
from tests.images import pattern

CLIPDEX = [sys.executable, "-m", "retrieval.cli"]


def _stored_paths(config: Path) -> list[str]:
    with Index.open(load_settings(config)) as index:
        return [p["path"] for _, p in index.store.payloads(["path"])]


def test_renamed_folder_reuses_vectors(clipdex, tmp_path):
    root = tmp_path / "lib"
    for i in range(4):
        (root / "old").mkdir(parents=True, exist_ok=True)
        pattern(i).save(root / "old" / f"{i}.png")
    assert clipdex("ingest", root, "--json").json()["indexed"] == 4
    (root / "old").rename(root / "new")
    summary = clipdex("ingest", root, "--json").json()
    assert (summary["indexed"], summary["moved"], summary["deleted"]) == (0, 4, 4)
    assert clipdex("status", "--json").json()["points"] == 4
    hit = clipdex("search", "--image", root / "new" / "2.png", "--limit", "1", "--json").json()[0]
    assert hit["path"] == str(root / "new" / "2.png") and hit["score"] >= 0.99
    assert hit["width"] == 96 and hit["folder"] == str(root / "new")


def test_identical_files_are_embedded_once_and_all_findable(clipdex, tmp_path):
    root = tmp_path / "lib"
    root.mkdir()
    pattern(0).save(root / "a.png")
    pattern(1).save(root / "b.png")
    shutil.copy(root / "a.png", root / "a-copy.png")
    shutil.copy(root / "a.png", root / "a-copy-2.png")
    summary = clipdex("ingest", root, "--json").json()
    assert (summary["indexed"], summary["duplicates"]) == (2, 2)
    hits = clipdex("search", "--image", root / "a.png", "--limit", "4", "--json").json()
    top = {h["path"] for h in hits if h["score"] >= 0.999}
    assert top == {str(root / n) for n in ("a.png", "a-copy.png", "a-copy-2.png")}
    shutil.copy(root / "b.png", root / "b-later.png")  # a copy appearing later reuses the stored vector
    later = clipdex("ingest", root, "--json").json()
    assert (later["indexed"], later["duplicates"], later["unchanged"]) == (0, 1, 4)


def test_touched_file_is_not_re_embedded(clipdex, tmp_path):
    root = tmp_path / "lib"
    root.mkdir()
    pattern(0).save(root / "a.png")
    clipdex("ingest", root, "--json")
    os.utime(root / "a.png", (time.time() + 100, time.time() + 100))
    again = clipdex("ingest", root, "--json").json()
    assert (again["indexed"], again["unchanged"]) == (0, 1)
    pattern(5).save(root / "a.png")  # real edit: embedded again, same point
    edited = clipdex("ingest", root, "--json").json()
    assert edited["indexed"] == 1 and clipdex("status", "--json").json()["points"] == 1


def test_every_hostile_file_is_embedded_or_reported(clipdex, tmp_path):
    root = tmp_path / "hostile"
    cases = write_hostile_files(root)
    try:
        summary = clipdex("ingest", root, "--json").json()
    finally:
        os.chmod(root / "unreadable.jpg", 0o644)
    failed = {Path(f["path"]).relative_to(root).as_posix(): f["error"] for f in summary["failed"]}
    expected_failed = {name for name, outcome in cases.items() if outcome == "failed"}
    assert set(failed) == expected_failed
    for name, reason in failed.items():
        assert reason.startswith(HOSTILE_REASONS[Path(name).stem]), (name, reason)
    assert summary["indexed"] + summary["duplicates"] == len(cases) - len(expected_failed)
    stored = _stored_paths(tmp_path / "clipdex.toml")
    assert os.fsencode(root).decode() + "/caf\\xe9.jpg" in stored  # non-UTF-8 name, shown escaped
    assert str(root / "loop" / "inside_loop.jpg") in stored  # found once despite the symlink loop
    assert len(stored) == len(set(stored))


def test_include_exclude_hidden_and_symlinks(clipdex, tmp_path):
    root = tmp_path / "lib"
    (root / "keep").mkdir(parents=True)
    (root / ".thumbs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    pattern(0).save(root / "keep" / "a.png")
    write_photo(root / "keep" / "b.jpg", seed=1)
    pattern(2).save(root / ".thumbs" / "t.png")
    pattern(3).save(tmp_path / "elsewhere" / "linked.png")
    os.symlink(tmp_path / "elsewhere", root / "link", target_is_directory=True)

    def indexed(*flags: str) -> set[str]:
        shutil.rmtree(tmp_path / "store", ignore_errors=True)
        result = clipdex("ingest", root, "--json", *flags)
        assert result.code == 0, result.err
        return {Path(p).relative_to(root).as_posix() for p in _stored_paths(tmp_path / "clipdex.toml")}

    assert indexed() == {"keep/a.png", "keep/b.jpg"}
    assert indexed("--hidden") == {"keep/a.png", "keep/b.jpg", ".thumbs/t.png"}
    assert indexed("--follow-symlinks") == {"keep/a.png", "keep/b.jpg", "link/linked.png"}
    assert indexed("--include", "*.png") == {"keep/a.png"}
    assert indexed("--exclude", "*.png") == {"keep/b.jpg"}
    shutil.rmtree(tmp_path / "store")
    result = clipdex("ingest", root, "--exclude", "keep/**")
    assert result.code == 1 and "no image files" in result.err


def _exif_photo(path: Path, seed: int, taken: str, make: str, model: str) -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make, model
    exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
    pattern(seed).save(path, "JPEG", exif=exif, quality=92)


def test_exif_payload_and_date_camera_filters(clipdex, tmp_path):
    root = tmp_path / "trip"
    root.mkdir()
    _exif_photo(root / "2019.jpg", 0, "2019:05:01 10:00:00", "Canon", "EOS 5D")
    _exif_photo(root / "2021.jpg", 1, "2021:07:04 18:22:10", "NIKON", "D750")
    _exif_photo(root / "2023.jpg", 2, "2023:12:31 23:59:59", "Canon", "EOS R6")
    pattern(3).save(root / "no-exif.png")
    clipdex("ingest", root, "--json")

    def found(*flags: str) -> set[str]:
        return {Path(h["path"]).name for h in clipdex("search", "x", "--limit", "10", "--json", *flags).json()}

    assert found("--after", "2020", "--before", "2022") == {"2021.jpg"}
    assert found("--after", "2021-07-05") == {"2023.jpg"}
    assert found("--camera", "Canon") == {"2019.jpg", "2023.jpg"}
    assert found("--camera", "D750") == {"2021.jpg"}
    hit = clipdex("search", "--image", root / "2021.jpg", "--limit", "1", "--json").json()[0]
    assert hit["taken_at"] == "2021-07-04T18:22:10" and hit["camera_make"] == "NIKON"


# -- crashes and concurrency ----------------------------------------------------------------------------


@pytest.fixture
def big_library(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, Path]:
    """Enough images that an ingest runs for a few seconds, in small batches."""
    root = tmp_path / "many"
    root.mkdir()
    for i in range(400):
        pattern(i, size=(192, 128)).save(root / f"{i:04d}.png", compress_level=1)
    config = write_config(tmp_path / "crash.toml", tiny_model_dir, tmp_path / "crash-store", "crash")
    config.write_text(config.read_text().replace("batch_size = 8", "batch_size = 4"))
    return root, config


class _Ingest:
    """A real `clipdex ingest` subprocess whose progress bar (stderr) says how far it got."""

    def __init__(self, root: Path, config: Path):
        self.proc = subprocess.Popen(
            [*CLIPDEX, "ingest", str(root), "--config", str(config), "--json", "--progress"],
            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent)
        self.err = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := self.proc.stderr.read1(4096):
            self.err += chunk

    @property
    def done(self) -> int:
        counts = re.findall(rb"(\d+)/\d+ \[", self.err)
        return int(counts[-1]) if counts else 0

    def kill_after(self, images: int, timeout: float = 90.0) -> bool:
        """SIGKILL once ``images`` files went through the encoder; False if it finished first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.done >= images:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
                return True
            time.sleep(0.005)
        self.proc.wait()
        self._reader.join()
        assert self.proc.returncode == 0, self.err.decode(errors="replace")
        return False


def test_kill_9_at_several_points_then_rerun(big_library):
    root, config = big_library
    total = 400
    stored_before = killed = 0
    for point in (1, 50, 90):  # images done in that run: just started, then further in
        killed += _Ingest(root, config).kill_after(point)
        paths = _stored_paths(config)
        assert len(paths) == len(set(paths)), "a path was stored twice"
        assert all(Path(p).parent == root for p in paths)
        assert len(paths) >= stored_before, "a stored point was lost"
        stored_before = len(paths)
    assert killed == 3, "the ingest finished before it could be killed: make the library bigger"
    assert 0 < stored_before < total
    final = subprocess.run([*CLIPDEX, "ingest", str(root), "--config", str(config), "--json"], capture_output=True,
                           text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    summary = json.loads(final.stdout)
    assert summary["unchanged"] == stored_before, "something already stored was embedded again"
    assert summary["indexed"] + summary["duplicates"] == total - stored_before
    paths = _stored_paths(config)
    assert sorted(paths) == sorted(str(p) for p in root.iterdir())


def test_second_ingest_while_one_runs_is_refused_cleanly(big_library, capfd):
    from retrieval.cli import main

    root, config = big_library
    meta = load_settings(config).store_path / "crash" / "clipdex.json"
    first = _Ingest(root, config)
    deadline = time.monotonic() + 60
    while not meta.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    capfd.readouterr()
    code = main(["ingest", str(root), "--config", str(config), "--json"])
    err = capfd.readouterr().err
    out = first.proc.stdout.read()
    assert not first.kill_after(10**9)
    assert code == 1 and "in use by another clipdex process" in err and len(err.strip().splitlines()) == 1
    assert json.loads(out)["indexed"] == 400
    assert len(_stored_paths(config)) == 400


def test_moved_files_flow_in_batch_size_chunks_and_the_index_waits_for_its_threshold(tmp_path, tiny_model_dir):
    """40 moved files reach the store in batches of 8 and are deleted in chunks of 16 (upsert_batch);
    a small change never triggers the HNSW build, a threshold crossed does."""
    root = tmp_path / "lib"
    (root / "a").mkdir(parents=True)
    for i in range(40):
        pattern(i, size=(40, 40)).save(root / "a" / f"{i:02d}.png")
    config = write_config(tmp_path / "chunks.toml", tiny_model_dir, tmp_path / "store", upsert_batch=16)
    config.write_text(config.read_text().replace('collection = "test"', 'collection = "test"\nindex_threshold = 50'))
    events: list[tuple[str, int, int]] = []
    with Index.open(load_settings(config), create=True) as index:
        first = index.ingest([root], progress=lambda *e: events.append(e))
        assert (first.indexed, first.index_built) == (40, False)  # 40 < index_threshold
        assert index.status()["unindexed"] == 40
        (root / "a").rename(root / "b")
        events.clear()
        moved = index.ingest([root], progress=lambda *e: events.append(e))
    assert (moved.moved, moved.indexed, moved.deleted) == (40, 0, 40)
    reads = [done for stage, done, _ in events if stage == "read"]
    assert reads == [8, 16, 24, 32, 40]  # one batch per 8 files, not one batch of 40
    assert [done for stage, done, _ in events if stage == "delete"] == [16, 32, 40]
    assert not [e for e in events if e[0] == "index"]
    (root / "c").mkdir()
    for i in range(12):
        pattern(100 + i, size=(40, 40)).save(root / "c" / f"{i:02d}.png")
    with Index.open(load_settings(config)) as index:
        grown = index.ingest([root], progress=lambda *e: events.append(e))
        assert (grown.indexed, grown.index_built) == (12, True)
        assert index.status()["unindexed"] == 0
        hit = index.search(image=root / "c" / "03.png", limit=1)[0]
    assert hit.payload["path"] == str(root / "c" / "03.png") and hit.score > 0.99
    assert [e for e in events if e[0] == "index"] == [("index", 0, 52), ("index", 52, 52)]
