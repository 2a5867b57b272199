"""ingest.scan against real folder trees: extensions, globs, hidden, symlinks, dedup, bad roots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.scan import IMAGE_EXTENSIONS, ScannedFile, glob_match, scan
from retrieval.errors import ClipdexError
from tests.hostile import NON_UTF8_NAME, readable_despite_chmod, write_hostile_files, write_photo


def rel(files: list[ScannedFile], root: Path) -> list[str]:
    return [os.path.relpath(f.path, root).replace(os.sep, "/") for f in files]


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * len(name))


def test_images_by_extension_case_insensitive_sorted_with_stat(tmp_path: Path) -> None:
    touch(tmp_path, "b.PNG", "a.JPG", "notes.txt", "raw.CR2", "sub/c.Heic", "sub/d.webp", "e.avif", "noext")
    files, problems = scan([tmp_path])
    assert rel(files, tmp_path) == ["a.JPG", "b.PNG", "e.avif", "sub/c.Heic", "sub/d.webp"]
    assert problems == []
    st = os.stat(tmp_path / "sub/c.Heic")
    assert files[3] == ScannedFile(str(tmp_path / "sub/c.Heic"), st.st_size, st.st_mtime_ns, str(tmp_path))
    assert all(os.path.isabs(f.path) for f in files)
    assert {".jpg", ".jpeg", ".jpe", ".tif", ".heif"} <= IMAGE_EXTENSIONS


def test_hidden_files_and_folders_skipped_by_default(tmp_path: Path) -> None:
    root = tmp_path / ".photos"  # a dot in the root's own path does not count
    touch(root, "a.jpg", ".b.jpg", ".cache/c.jpg", "sub/.thumbs/d.jpg", "sub/e.jpg")
    assert rel(scan([root])[0], root) == ["a.jpg", "sub/e.jpg"]
    assert rel(scan([root], skip_hidden=False)[0], root) == [
        ".b.jpg", ".cache/c.jpg", "a.jpg", "sub/.thumbs/d.jpg", "sub/e.jpg"
    ]


def test_glob_rule_relative_path_or_basename() -> None:
    assert glob_match("2021/trip/a.jpg", ["*.jpg"])  # basename
    assert glob_match("2021/trip/a.jpg", ["2021/*/a.jpg"])  # relative path
    assert not glob_match("2021/trip/a.jpg", ["2021/*.jpg"])  # '*' does not cross '/'
    assert glob_match("2021/trip/a.jpg", ["2021/**"]) and glob_match("a.jpg", ["**/a.jpg"])
    assert glob_match("x/y/z/a.jpg", ["x/**/a.jpg"]) and glob_match("x/a.jpg", ["x/**/a.jpg"])
    assert glob_match("IMG_001.JPG", ["img_00?.jpg"])  # case-insensitive
    assert glob_match("b.jpg", ["[!a]*"]) and not glob_match("a.jpg", ["[!a]*"])
    assert not glob_match("a.jpg", []) and glob_match("we[ird.jpg", ["we[ird.jpg"])


def test_include_exclude(tmp_path: Path) -> None:
    touch(tmp_path, "raw/a.jpg", "raw/thumbs/t.jpg", "edits/b.png", "edits/deep/c.jpg", "d.PNG")
    assert rel(scan([tmp_path], include=["*.jpg"])[0], tmp_path) == ["edits/deep/c.jpg", "raw/a.jpg",
                                                                    "raw/thumbs/t.jpg"]
    assert rel(scan([tmp_path], exclude=["thumbs", "*.png"])[0], tmp_path) == ["edits/deep/c.jpg",
                                                                             "raw/a.jpg"]
    assert rel(scan([tmp_path], exclude=["edits/**"])[0], tmp_path) == ["d.PNG", "raw/a.jpg",
                                                                       "raw/thumbs/t.jpg"]
    assert rel(scan([tmp_path], include=["edits/**/*.jpg"])[0], tmp_path) == ["edits/deep/c.jpg"]
    assert rel(scan([tmp_path], include=["*.jpg"], exclude=["raw/**"])[0], tmp_path) == ["edits/deep/c.jpg"]


def test_symlinks_ignored_unless_followed_and_deduplicated(tmp_path: Path) -> None:
    lib, outside = tmp_path / "lib", tmp_path / "outside"
    touch(lib, "real/a.jpg")
    touch(outside, "o.jpg")
    os.symlink(lib / "real/a.jpg", lib / "alias.jpg")  # same file twice
    os.symlink(lib / "real", lib / "again")  # same folder twice
    os.symlink(outside, lib / "ext")  # a folder outside the root
    assert rel(scan([lib])[0], lib) == ["real/a.jpg"]
    files, problems = scan([lib], follow_symlinks=True)
    assert rel(files, lib) == ["ext/o.jpg", "real/a.jpg"]  # a.jpg once, under its real path
    assert problems == []


def test_overlapping_roots_and_hard_links_listed_once(tmp_path: Path) -> None:
    touch(tmp_path, "sub/a.jpg", "b.jpg")
    os.link(tmp_path / "b.jpg", tmp_path / "sub/b_hardlink.jpg")
    files, _ = scan([tmp_path / "sub", tmp_path, str(tmp_path)])
    assert sorted(rel(files, tmp_path)) in (["b.jpg", "sub/a.jpg"], ["sub/a.jpg", "sub/b_hardlink.jpg"])
    assert len(files) == 2


def test_symlink_loops_terminate_and_are_reported(tmp_path: Path) -> None:
    cases = write_hostile_files(tmp_path / "h")
    os.symlink("ping.jpg", tmp_path / "h/pong.jpg")
    os.symlink("pong.jpg", tmp_path / "h/ping.jpg")  # ELOOP
    os.symlink("missing.jpg", tmp_path / "h/dangling.jpg")
    for follow in (False, True):
        files, problems = scan([tmp_path / "h"], follow_symlinks=follow)
        assert sorted(rel(files, tmp_path / "h")) == sorted(cases)  # loop/inside_loop.jpg exactly once
        reasons = {os.path.basename(p.path): p.error for p in problems}
        assert reasons == ({"ping.jpg": "symlink loop", "pong.jpg": "symlink loop",
                            "dangling.jpg": "broken symlink"} if follow else {})


def test_non_utf8_name_kept_as_surrogate_escaped_str(tmp_path: Path) -> None:
    write_photo(tmp_path / "x.jpg")
    os.rename(tmp_path / "x.jpg", os.fsencode(tmp_path) + b"/" + NON_UTF8_NAME)
    (file,), _ = scan([tmp_path])
    assert os.fsencode(file.path) == os.fsencode(tmp_path) + b"/" + NON_UTF8_NAME
    assert os.path.exists(file.path)


def test_unreadable_folder_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    touch(tmp_path, "ok.jpg", "locked/a.jpg")
    os.chmod(tmp_path / "locked", 0)
    try:
        files, problems = scan([tmp_path])
        assert "ok.jpg" in rel(files, tmp_path)
        if readable_despite_chmod(tmp_path / "locked"):
            pytest.skip("running as root: a mode-000 folder stays readable, so no problem can be produced")
        assert problems == [type(problems[0])(str(tmp_path / "locked"), "permission denied")]
        assert len(files) == 1
    finally:
        os.chmod(tmp_path / "locked", 0o755)


def test_bad_roots_raise_clipdex_error_and_an_image_root_is_itself(tmp_path: Path) -> None:
    with pytest.raises(ClipdexError, match="no such file or folder"):
        scan([tmp_path / "nope"])
    touch(tmp_path, "notes.txt", ".hidden.jpg")
    with pytest.raises(ClipdexError, match="not a folder or an image file"):
        scan([tmp_path / "notes.txt"])
    photo = write_photo(tmp_path / "one.jpg")
    files, _ = scan([photo, tmp_path / ".hidden.jpg"])
    assert [f.path for f in files] == [str(tmp_path / ".hidden.jpg"), str(photo)]
    assert scan([photo], exclude=["one.*"])[0] == []
