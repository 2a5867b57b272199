"""ingest.decode against real hostile files: each decodes correctly or fails with a one-line reason."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xxhash
from PIL import Image, ImageFile

from ingest.decode import DecodeError, content_hash, load_image, time_limit, to_rgb
from ingest.scan import scan
from tests.hostile import (
    BLUE,
    GREEN,
    HOSTILE_REASONS,
    NON_UTF8_NAME,
    RED,
    bomb_png,
    exif_rotated,
    halves,
    photo,
    write_hostile_files,
    write_photo,
)

CAP = 64.0


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("hostile")
    return folder, write_hostile_files(folder)


def decode(folder: Path, name: str, **kw: object) -> Image.Image:
    return load_image(os.fsdecode(os.fsencode(folder) + b"/" + os.fsencode(name)), max_megapixels=CAP, **kw)


def close(pixel: tuple[int, ...], want: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, want, strict=True))


def test_every_hostile_case_is_ok_or_failed_with_its_reason(hostile: tuple[Path, dict[str, str]]) -> None:
    folder, cases = hostile
    assert len(cases) >= 16
    for name, outcome in cases.items():
        stem = Path(name).stem
        try:
            with time_limit(10):
                image = decode(folder, name, draft_size=224)
        except DecodeError as exc:
            assert outcome == "failed", f"{name}: {exc}"
            reason = str(exc)
            assert reason.startswith(HOSTILE_REASONS[stem]), (name, reason)
            assert "\n" not in reason
        else:
            assert outcome == "ok", name
            assert image.mode == "RGB" and image.width > 0 and image.height > 0


def test_exif_rotated_photo_comes_back_upright(hostile: tuple[Path, dict[str, str]]) -> None:
    stored = Image.open(hostile[0] / "exif_rotated.jpg")
    assert stored.size == (100, 60)  # sideways on disk
    image = decode(hostile[0], "exif_rotated.jpg")
    assert image.size == (60, 100)
    assert close(image.getpixel((30, 10)), RED) and close(image.getpixel((30, 90)), BLUE)


def test_draft_decoding_of_a_large_rotated_jpeg_keeps_short_side_and_orientation(tmp_path: Path) -> None:
    big = exif_rotated().resize((2000, 1200))
    big.save(tmp_path / "big.jpg", quality=90, exif=big.info["exif"])
    full = load_image(str(tmp_path / "big.jpg"), max_megapixels=CAP)
    small = load_image(str(tmp_path / "big.jpg"), max_megapixels=CAP, draft_size=224)
    assert full.size == (1200, 2000)
    assert small.size == (300, 500) and min(small.size) >= 224  # 1/4 scale: 1/8 would be 150 < 224
    assert close(small.getpixel((150, 20)), RED) and close(small.getpixel((150, 480)), BLUE)


def test_megapixel_cap_applies_to_the_pixels_actually_decoded(tmp_path: Path) -> None:
    write_photo(tmp_path / "big.jpg", size=(2000, 1500))
    with pytest.raises(DecodeError, match=r"^image too large: 2000x1500 pixels exceeds the 1 MP cap$"):
        load_image(str(tmp_path / "big.jpg"), max_megapixels=1)
    assert load_image(str(tmp_path / "big.jpg"), max_megapixels=1, draft_size=224).size == (500, 375)


def test_animated_gif_gives_the_first_frame(hostile: tuple[Path, dict[str, str]]) -> None:
    with Image.open(hostile[0] / "animated.gif") as gif:
        assert gif.n_frames == 2
    image = decode(hostile[0], "animated.gif")
    assert close(image.getpixel((24, 24)), RED, 2)


def test_16bit_png_keeps_its_brightness(hostile: tuple[Path, dict[str, str]]) -> None:
    assert Image.open(hostile[0] / "png_16bit.png").mode == "I;16"
    image = decode(hostile[0], "png_16bit.png")
    assert image.getpixel((5, 5)) == (191, 191, 191)  # 0xC000 / 257, not clipped to white
    assert image.getpixel((5, 60)) == (64, 64, 64)


def test_cmyk_jpeg_colours(hostile: tuple[Path, dict[str, str]]) -> None:
    assert Image.open(hostile[0] / "cmyk.jpg").mode == "CMYK"
    image = decode(hostile[0], "cmyk.jpg")
    assert close(image.getpixel((32, 8)), (255, 0, 0)) and close(image.getpixel((32, 56)), (0, 255, 0))


def test_transparency_is_composited_on_white(hostile: tuple[Path, dict[str, str]]) -> None:
    palette = decode(hostile[0], "palette_alpha.png")
    assert palette.getpixel((32, 8)) == (255, 255, 255) and palette.getpixel((32, 56)) == GREEN
    rgba = decode(hostile[0], "rgba.png")
    assert rgba.getpixel((32, 8)) == (255, 255, 255) and rgba.getpixel((32, 56)) == BLUE
    for mode, value in (("LA", (0, 0)), ("RGBa", (0, 0, 0, 0)), ("PA", (0, 0))):
        assert to_rgb(halves((8, 8), value, value, mode)).getpixel((4, 4)) == (255, 255, 255), mode


@pytest.mark.parametrize(("name", "seed"), [("photo.heic", 3), ("photo.avif", 4), ("plain.jpg", 1)])
def test_heic_avif_jpeg_decode_to_the_source_picture(hostile: tuple[Path, dict[str, str]], name: str,
                                                      seed: int) -> None:
    image = decode(hostile[0], name)
    source = np.asarray(photo(seed=seed), dtype=np.float32)
    assert image.size == (160, 120)
    assert np.abs(np.asarray(image, dtype=np.float32) - source).mean() < 8


def test_non_utf8_file_name_decodes(hostile: tuple[Path, dict[str, str]]) -> None:
    image = decode(hostile[0], os.fsdecode(NON_UTF8_NAME))
    assert np.abs(np.asarray(image, np.float32) - np.asarray(photo(seed=5), np.float32)).mean() < 8


def test_bomb_is_refused_from_the_header_without_allocating(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    (tmp_path / "under_pillow_limit.png").write_bytes(bomb_png(9000, 9000))  # 81 MP: Pillow would decode it
    for cap in (CAP, 1e9):  # a cap above Pillow's own limit still refuses 10 000 MP
        start = time.monotonic()
        with pytest.raises(DecodeError, match=r"^image too large: 10000 MP exceeds"):
            load_image(str(tmp_path / "bomb.png"), max_megapixels=cap)
        assert time.monotonic() - start < 0.5
    with pytest.raises(DecodeError, match=r"^image too large: 9000x9000 pixels exceeds the 64 MP cap$"):
        load_image(str(tmp_path / "under_pillow_limit.png"), max_megapixels=CAP)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # other code switching Pillow's guard off
    start = time.monotonic()
    with pytest.raises(DecodeError, match=r"^image too large: 100000x100000 pixels exceeds the 64 MP cap$"):
        load_image(str(tmp_path / "bomb.png"), max_megapixels=CAP)
    assert time.monotonic() - start < 0.5


def test_truncated_jpeg_fails_and_is_not_padded(hostile: tuple[Path, dict[str, str]]) -> None:
    with pytest.raises(DecodeError, match="^truncated image$"):
        decode(hostile[0], "truncated.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_file_deleted_between_scan_and_decode(tmp_path: Path) -> None:
    write_photo(tmp_path / "gone.jpg")
    (file,), _ = scan([tmp_path])
    os.remove(file.path)
    with pytest.raises(DecodeError, match="^file vanished before decode$"):
        load_image(file.path, max_megapixels=CAP)
    with pytest.raises(DecodeError, match="^file vanished before decode$"):
        content_hash(file.path)


def test_unreadable_file(hostile: tuple[Path, dict[str, str]]) -> None:
    folder, cases = hostile
    if cases["unreadable.jpg"] == "ok":
        pytest.skip("running as root (CAP_DAC_OVERRIDE): a mode-000 file is still readable")
    with pytest.raises(DecodeError, match="^permission denied$"):
        decode(folder, "unreadable.jpg")


def test_fifo_and_folder_named_jpg_fail_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "dir.jpg").mkdir()
    for name in ("pipe.jpg", "dir.jpg"):
        with pytest.raises(DecodeError, match="^not a regular file$"):
            load_image(str(tmp_path / name), max_megapixels=CAP)


def test_result_is_detached_from_the_file(tmp_path: Path) -> None:
    path = write_photo(tmp_path / "a.png", seed=9)
    image = load_image(str(path), max_megapixels=CAP)
    os.remove(path)
    assert np.array_equal(np.asarray(image), np.asarray(photo(seed=9)))


def test_time_limit_fires_and_restores_the_previous_handler() -> None:
    before = signal.getsignal(signal.SIGALRM)
    start = time.monotonic()
    with pytest.raises(DecodeError, match=r"^decode took longer than 0\.2 s$"), time_limit(0.2):
        time.sleep(5)
    assert 0.15 < time.monotonic() - start < 2
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with time_limit(5):
        pass  # a quick body is untouched and disarms the timer
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_time_limit_keeps_an_outer_timer() -> None:
    with pytest.raises(DecodeError, match="longer than 0.5 s"), time_limit(0.5):
        with time_limit(5):
            pass
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0.3  # the outer budget is still armed
        time.sleep(3)


def test_time_limit_is_a_no_op_outside_the_main_thread() -> None:
    outcome: list[str] = []

    def body() -> None:
        with time_limit(0.05):
            time.sleep(0.2)
        outcome.append("finished")

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert outcome == ["finished"]


def test_timeout_inside_load_image_is_not_reported_as_a_corrupt_file(tmp_path: Path) -> None:
    path = str(write_photo(tmp_path / "p.png", size=(800, 600)))
    deadline = time.monotonic() + 30
    with pytest.raises(DecodeError) as info, time_limit(0.05):
        while time.monotonic() < deadline:  # bounded: a swallowed alarm must not hang the suite
            load_image(path, max_megapixels=CAP)
    assert str(info.value) == "decode took longer than 0.05 s"


def test_content_hash_streams_the_whole_file(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(5 * (1 << 20) // 2)  # 2.5 MiB: three chunks
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "b.bin").write_bytes(data)
    (tmp_path / "c.bin").write_bytes(data[:-1] + b"\x00")
    digest = content_hash(str(tmp_path / "a.bin"))
    assert digest == xxhash.xxh3_128(data).hexdigest() and len(digest) == 32
    assert content_hash(str(tmp_path / "b.bin")) == digest != content_hash(str(tmp_path / "c.bin"))
