"""The pixel check and the keep rules on their own: real image files the test writes and alters."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from retrieval.duplicates.keeper import Candidate, candidate, choose
from retrieval.duplicates.verify import DEFAULT_MIN_SIMILARITY, look_of, same_photo
from tests.photos import ALTERATIONS, SMALL, write_family, write_moment_apart


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_every_alteration_is_the_same_photo(tmp_path: Path, seed: int):
    original, copies = write_family(tmp_path, seed, size=SMALL)
    base = look_of(str(original))
    for copy in copies:
        same, score = same_photo(base, look_of(str(copy)))
        assert same, f"{copy.name}: {score:.3f} < {DEFAULT_MIN_SIMILARITY}"
        assert same_photo(look_of(str(copy)), base) == (same, score)  # symmetric
    assert len(copies) == len(ALTERATIONS)


@pytest.mark.parametrize("seed", [21, 22, 23])
@pytest.mark.parametrize("shift", [0.02, 0.03, 0.05])
def test_a_moment_apart_is_another_photo(tmp_path: Path, seed: int, shift: float):
    first, second = write_moment_apart(tmp_path, seed, shift, size=SMALL)
    same, score = same_photo(look_of(str(first)), look_of(str(second)))
    assert not same, f"object moved {shift:.0%}: similarity {score:.3f}"


def test_distinct_scenes_and_shapes(tmp_path: Path):
    a, _ = write_family(tmp_path / "a", 31, alterations=(), size=SMALL)
    b, _ = write_family(tmp_path / "b", 32, alterations=(), size=SMALL)
    assert not same_photo(look_of(str(a)), look_of(str(b)))[0]
    look = look_of(str(a))
    look.image.convert("L").crop((0, 0, 100, 192)).save(tmp_path / "strip.png")  # no crop tried gives that shape
    assert same_photo(look, look_of(str(tmp_path / "strip.png"))) == (False, 0.0)


def c(path: str, w: int, h: int, size: int, fmt: str = "JPEG", exif: int = 0, ts: float | None = None) -> Candidate:
    return Candidate(path, w, h, size, fmt, exif, ts)


def test_keep_rules_in_order():
    keep, why = choose([c("/a", 100, 100, 900), c("/b", 200, 100, 10)])
    assert keep.path == "/b" and why.startswith("highest resolution (200x100 vs 100x100)")
    keep, why = choose([c("/a", 100, 100, 900), c("/b", 100, 100, 1000)])
    assert keep.path == "/b" and why.startswith("largest file")
    keep, why = choose([c("/a", 100, 100, 900, exif=3), c("/b", 100, 100, 900, exif=9)])
    assert keep.path == "/b" and why.startswith("most EXIF fields (9 vs 3)")
    keep, why = choose([c("/a", 100, 100, 900, ts=2e9), c("/b", 100, 100, 900, ts=1e9)])
    assert keep.path == "/b" and why.startswith("oldest capture date")
    keep, why = choose([c("/b", 100, 100, 900), c("/a", 100, 100, 900)])
    assert keep.path == "/a" and "first by path" in why
    # a PNG made from a JPEG is larger but no better: across formats size is not compared first
    keep, why = choose([c("/x.png", 100, 100, 9000, "PNG"), c("/x.jpg", 100, 100, 900, exif=4)])
    assert keep.path == "/x.jpg" and "formats differ" in why and "most EXIF" in why


def test_exif_fields_read_from_the_file(tmp_path: Path):
    original, copies = write_family(tmp_path, 5, alterations=("png",), size=SMALL)
    with_exif = candidate({"path": str(original), "width": 1, "height": 1, "size": 1})
    without = candidate({"path": str(copies[0]), "width": 1, "height": 1, "size": 1})
    assert with_exif.exif_fields >= 3 and without.exif_fields == 0


def test_keeper_is_the_source_not_a_lossless_re_encode(tmp_path: Path):
    """Issue 23 item 7: a PNG exported from a JPEG is larger and holds nothing more; its pixels carry the
    JPEG's 8x8 block grid, so the JPEG is kept."""
    from tests.photos import render

    jpeg, png = tmp_path / "original.jpg", tmp_path / "export.png"
    render(3, size=SMALL).save(jpeg, "JPEG", quality=80)  # no EXIF, no date: nothing else tells them apart
    with Image.open(jpeg) as im:
        im.save(png)
    members = [candidate({"path": str(p), "width": SMALL[0], "height": SMALL[1], "size": p.stat().st_size,
                          "format": fmt, "hash": p.name}) for p, fmt in ((png, "PNG"), (jpeg, "JPEG"))]
    assert members[0].size > members[1].size
    keep, why = choose(members)
    assert keep.path == str(jpeg) and "re-encoded from a JPEG" in why
    native = tmp_path / "native.png"  # a PNG never JPEG'd is no re-encode: size across formats decides as before
    render(3, size=SMALL).save(native)
    plain = [candidate({"path": str(p), "width": SMALL[0], "height": SMALL[1], "size": p.stat().st_size,
                        "format": fmt, "hash": p.name}) for p, fmt in ((native, "PNG"), (jpeg, "JPEG"))]
    assert choose(plain)[0].path == str(native)


def test_keeper_is_the_source_not_an_edit_that_clips(tmp_path: Path):
    from PIL import ImageEnhance

    from tests.photos import render

    original, edit = tmp_path / "original.jpg", tmp_path / "edit.jpg"
    scene = render(0, size=SMALL)
    scene.save(original, "JPEG", quality=85)
    ImageEnhance.Brightness(scene).enhance(1.3).save(edit, "JPEG", quality=97)  # larger file, same format
    members = [candidate({"path": str(p), "width": SMALL[0], "height": SMALL[1], "size": p.stat().st_size,
                          "format": "JPEG", "hash": p.name}) for p in (edit, original)]
    assert members[0].size > members[1].size  # "largest file" alone would keep the edit
    keep, why = choose(members)
    assert keep.path == str(original) and "highlights clip" in why


def test_not_duplicates_over_many_files_is_one_group_and_old_pairs_still_read(tmp_path: Path):
    """Issue 26: --not-duplicates over 1,000 files stored 499,500 pairs (38 MB). Now one group; pairs written by
    older versions are still honoured, and --forget-decision drops what involves a file."""
    import json

    from retrieval.duplicates.decisions import Decisions

    file = tmp_path / "duplicates.json"
    file.write_text(json.dumps({"not_duplicates": [["old-a", "old-b"], ["same", "same"]]}))  # an older file
    hashes = [f"h{i:04d}" for i in range(1000)]
    decisions = Decisions(file)
    assert decisions.add(hashes) == 499_500
    assert file.stat().st_size < 50_000
    again = Decisions(file)  # read back from disk
    assert again.dismissed("h0001", "h0999") and again.dismissed("h0999", "h0001")
    assert again.dismissed("old-a", "old-b") and again.dismissed("same", "same")
    assert not again.dismissed("h0001", "old-a") and not again.dismissed("h0001", "h0001")
    assert again.add(hashes[:10]) == 0  # nothing new: not stored again
    assert again.forget(["h0005"]) == 1 and not Decisions(file).dismissed("h0001", "h0002")
    assert Decisions(file).dismissed("old-a", "old-b")
