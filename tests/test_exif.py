"""ingest.exif: payload fields round-tripped through real files, malformed EXIF, and parse_date."""

from __future__ import annotations

import calendar
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image, TiffImagePlugin

from ingest.decode import load_image
from ingest.exif import exif_payload, parse_date, upright_size
from retrieval.errors import ClipdexError
from tests.hostile import bomb_png, photo

SYDNEY = {1: "S", 2: (33.0, 51.0, 54.0), 3: "E", 4: (151.0, 12.0, 36.0)}
NEW_YORK = {1: "N", 2: (40.0, 42.0, 46.0), 3: "W", 4: (74.0, 0.0, 21.6)}


def make_exif(*, original: str | None = "2021:07:04 18:22:10", plain: str | None = "2022:01:01 00:00:00",
              make: str | bytes | None = "Canon\x00\x00 ", model: str | None = "  EOS 5D Mark IV ",
              gps: dict[int, object] | None = None) -> Image.Exif:
    exif = Image.Exif()
    for tag, value in ((271, make), (272, model), (306, plain)):
        if value is not None:
            exif[tag] = value
    if original is not None:
        exif.get_ifd(0x8769)[36867] = original
    if gps:
        exif.get_ifd(0x8825).update(gps)
    return exif


def saved(tmp_path: Path, exif: Image.Exif | bytes, fmt: str = "JPEG", name: str = "e.jpg") -> Path:
    path = tmp_path / name
    photo(seed=1).save(path, fmt, exif=exif if isinstance(exif, bytes) else exif.tobytes())
    return path


def test_full_payload_round_trips_through_a_jpeg(tmp_path: Path) -> None:
    path = saved(tmp_path, make_exif(gps=SYDNEY))
    with Image.open(path) as im:
        payload = exif_payload(im)
    assert payload == {
        "taken_at": "2021-07-04T18:22:10",
        "taken_ts": float(calendar.timegm((2021, 7, 4, 18, 22, 10))),
        "camera_make": "Canon",
        "camera_model": "EOS 5D Mark IV",
        "gps_lat": pytest.approx(-(33 + 51 / 60 + 54 / 3600)),
        "gps_lon": pytest.approx(151 + 12 / 60 + 36 / 3600),
    }
    assert payload["taken_ts"] == parse_date("2021-07-04T18:22:10")
    assert exif_payload(load_image(str(path), max_megapixels=64)) == payload  # the decoded image keeps it


def test_gps_signs_north_west(tmp_path: Path) -> None:
    with Image.open(saved(tmp_path, make_exif(gps=NEW_YORK))) as im:
        payload = exif_payload(im)
    assert payload["gps_lat"] == pytest.approx(40.712778) and payload["gps_lat"] > 0
    assert payload["gps_lon"] == pytest.approx(-74.006) and payload["gps_lon"] < 0


def test_datetime_falls_back_to_ifd0_and_only_present_keys_appear(tmp_path: Path) -> None:
    with Image.open(saved(tmp_path, make_exif(original=None, make=None, model="X100V"))) as im:
        assert exif_payload(im) == {"taken_at": "2022-01-01T00:00:00",
                                    "taken_ts": float(calendar.timegm((2022, 1, 1, 0, 0, 0))),
                                    "camera_model": "X100V"}


def test_no_exif_gives_an_empty_payload(tmp_path: Path) -> None:
    photo().save(tmp_path / "bare.jpg")
    with Image.open(tmp_path / "bare.jpg") as im:
        assert exif_payload(im) == {}


def test_malformed_exif_never_raises_and_keeps_what_is_readable(tmp_path: Path) -> None:
    bad_gps = {1: "N", 2: (TiffImagePlugin.IFDRational(1, 0), 0.0, 0.0), 3: "E", 4: (500.0, 0.0, 0.0)}
    exif = make_exif(original="0000:00:00 00:00:00", plain="    :  :     :  :  ", gps=bad_gps)
    with Image.open(saved(tmp_path, exif)) as im:
        assert exif_payload(im) == {"camera_make": "Canon", "camera_model": "EOS 5D Mark IV"}
    good = make_exif(gps=SYDNEY).tobytes()
    for junk in (b"Exif\x00\x00" + b"\xff" * 40, good[: len(good) // 2], b"MM\x00*\x00\x00\x00\x08\xff\xff"):
        im = Image.new("RGB", (4, 4))
        im.info["exif"] = junk
        assert isinstance(exif_payload(im), dict)  # no exception, whatever could be read
    odd = make_exif(make=b"Nikon\x00", gps={1: "S", 2: Fraction(45, 2), 3: "E"})  # bytes make, no longitude
    with Image.open(saved(tmp_path, odd)) as im:
        payload = exif_payload(im)
    assert payload["camera_make"] == "Nikon" and "gps_lat" not in payload and "taken_at" in payload


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "e.png"), ("WEBP", "e.webp"), ("HEIF", "e.heic"),
                                           ("AVIF", "e.avif"), ("TIFF", "e.tif")])
def test_exif_from_other_formats(tmp_path: Path, fmt: str, name: str) -> None:
    path = saved(tmp_path, make_exif(gps=NEW_YORK), fmt, name)
    with Image.open(path) as im:
        pending = bool(im.tile)  # formats that decode via tiles have them until load()
        payload = exif_payload(im)
        assert bool(im.tile) == pending, "exif_payload must not decode the pixels"
    assert payload["taken_at"] == "2021-07-04T18:22:10" and payload["camera_make"] == "Canon"
    assert payload["gps_lat"] > 0 > payload["gps_lon"]


def test_header_only_on_a_bomb_sized_png(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(bomb_png(9000, 9000))
    with Image.open(tmp_path / "big.png") as im:
        assert exif_payload(im) == {}
        assert im.tile  # still not loaded


@pytest.mark.parametrize(("text", "expected"), [
    ("2021", (2021, 1, 1, 0, 0, 0)),
    ("2021-07", (2021, 7, 1, 0, 0, 0)),
    (" 2021-07-04 ", (2021, 7, 4, 0, 0, 0)),
    ("2021-07-04T18:22:10", (2021, 7, 4, 18, 22, 10)),
    ("2021-07-04 18:22", (2021, 7, 4, 18, 22, 0)),
    ("2021-07-04T18:22:10Z", (2021, 7, 4, 18, 22, 10)),
    ("2021-07-04T20:22:10+02:00", (2021, 7, 4, 18, 22, 10)),
])
def test_parse_date(text: str, expected: tuple[int, ...]) -> None:
    assert parse_date(text) == float(calendar.timegm(expected))


@pytest.mark.parametrize("text", ["", "yesterday", "2021-13", "2021-02-30", "21-07-04", "2021/07/04", "0000"])
def test_parse_date_rejects_bad_input_in_one_line(text: str) -> None:
    with pytest.raises(ClipdexError, match="^invalid date") as info:
        parse_date(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("orientation, upright", [(None, (40, 30)), (1, (40, 30)), (3, (40, 30)),
                                                  (6, (30, 40)), (8, (30, 40)), (5, (30, 40)), (99, (40, 30))])
def test_upright_size_follows_the_exif_orientation(tmp_path: Path, orientation, upright):
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    path = tmp_path / "p.jpg"
    Image.new("RGB", (40, 30), "red").save(path, "JPEG", exif=exif)
    with Image.open(path) as im:
        assert upright_size(im) == upright
    if orientation in (None, 1, 3, 5, 6, 8):  # what Pillow's own transpose makes of it agrees
        assert load_image(str(path), max_megapixels=1).size == upright
