"""Whole videos that are copies of each other are duplicates, grouped by their moment sequences; frames of one
video, a trimmed clip, a video sharing one scene and a frame-still photo are not. Real videos written by PyAV."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image

from tests.images import pattern
from tests.test_video import fmnist_run, stored  # noqa: F401  (fmnist_run: a fixture)
from tests.videos import write_video

SCENES = [(pattern(1), 2.0), (pattern(2), 2.0), (pattern(3), 2.0)]


def transcode(source: Path, target: Path, size: tuple[int, int], options: dict[str, str]) -> Path:
    """``source`` decoded and encoded again at ``size`` (scaled whole, as a re-encode does), with the codec of
    ``target``'s container (VP9 for webm, else H.264) and ``options`` (e.g. a lower quality)."""
    codec = "libvpx-vp9" if target.suffix == ".webm" else "libx264"
    with av.open(str(source)) as given, av.open(str(target), "w") as out:
        stream_in = given.streams.video[0]
        rate = Fraction(stream_in.average_rate)
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        speed = {"preset": "ultrafast"} if codec == "libx264" else {"deadline": "realtime", "cpu-used": "8"}
        stream.options = speed | options
        for i, frame in enumerate(given.decode(stream_in)):
            scaled = frame.reformat(width=size[0], height=size[1], format="yuv420p", interpolation="AREA")
            scaled.pts, scaled.time_base = i, 1 / rate
            for packet in stream.encode(scaled):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return target


def write_copies(lib: Path, scenes: list = SCENES) -> dict[str, Path]:
    """An original; its re-encodes at a lower resolution (VP9 in WebM) and at a lower bitrate (H.264 in MKV,
    a keyframe every 0.7 s: its cuts are seen up to 0.1 s late); a video of the same length sharing its first
    scene only; a trimmed clip of it; and a still of its first second as a photo."""
    from ingest.video.frame import frame_at

    (lib / "copies").mkdir(parents=True, exist_ok=True)
    orig = write_video(lib / "orig.mp4", scenes, size=(160, 120), options={"crf": "18"},
                       creation_time="2021-06-01T10:00:00Z")
    made = {
        "orig": orig,
        "small": transcode(orig, lib / "copies" / "small.webm", (96, 72), {"crf": "36", "b": "0"}),
        "low": transcode(orig, lib / "copies" / "low.mkv", (160, 120),
                         {"crf": "36", "x264-params": "keyint=7:min-keyint=7:scenecut=0"}),
        "other": write_video(lib / "other.mp4", [scenes[0], (pattern(4), 2.0), (pattern(5), 2.0)], size=(160, 120)),
        "trim": write_video(lib / "trim.mp4", scenes[:2], size=(160, 120), options={"crf": "18"}),
        "still": lib / "still.png",
    }
    frame_at(str(orig), 1.0, max_side=1000, max_megapixels=100).save(made["still"])
    return made


def groups_of(doc: dict) -> list[list[str]]:
    return [[Path(p).name for p in [g["keep"], *g["duplicates"]]] for g in doc["groups"]]


def test_copies_are_grouped_and_look_alikes_are_not(clipdex, config: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    made = write_copies(lib)
    shutil.copyfile(made["still"], lib / "still-copy.png")  # a photo group beside the videos
    assert clipdex("ingest", lib, "--json").json()["videos"] == 5
    r = clipdex("duplicates", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert sorted(map(sorted, groups_of(doc))) == [["low.mkv", "orig.mp4", "small.webm"], ["still-copy.png",
                                                                                         "still.png"]]
    video = next(g for g in doc["groups"] if g["keep"].endswith(".mp4"))
    assert video["keep"] == str(made["orig"]) and video["reason"] == "near" and 0.8 <= video["similarity"] < 1
    assert video["keep_reason"].startswith("highest bitrate at the same resolution (")  # orig vs low.mkv
    rows = {Path(f["path"]).name: f for f in video["files"]}
    assert rows["small.webm"]["width"] == 96 and rows["orig.mp4"]["taken_at"] == "2021-06-01 10:00"
    assert all(f["media"] == "video" and f["duration_s"] == pytest.approx(6.0, abs=0.2) and 0 <= f["time_s"] < 6
               for f in rows.values())
    assert rows["orig.mp4"]["bitrate"] > rows["low.mkv"]["bitrate"]
    photos = next(g for g in doc["groups"] if g["keep"].endswith(".png"))
    assert photos["reason"] == "identical" and not any(f.get("media") == "video" for f in photos["files"])
    assert doc["checked"] == 7  # 2 photos and 5 videos (not their 15 moments)
    assert doc["candidates"] >= doc["verified"] >= 3  # orig~small, orig~low, small~low (the keeper's checks)

    table = clipdex("duplicates").out
    assert "keep  " + str(made["orig"]) in table and "6.0 s" in table and "kbit/s" in table


def test_the_trimmed_clip_is_never_a_candidate_and_the_shared_scene_fails_the_alignment(
        fmnist_run, tmp_path: Path) -> None:  # noqa: F811
    """With a model that tells the scenes apart, the vectors aligned in time already refuse the video that
    shares one scene (a third of its duration agrees), and the copies whose cuts moved agree over 90 %."""
    from retrieval.duplicates.candidates import scan
    from retrieval.duplicates.decisions import Decisions
    from retrieval.duplicates.videos import COVERAGE, VideoCheck, candidate_pairs, spans, videos_of
    from retrieval.settings import load_settings
    from retrieval.store import open_store
    from tests.test_video import CLASSES, FMNIST

    scenes = [(Image.open(sorted((FMNIST / c).glob("*.png"))[0]), 2.0) for c in CLASSES[:3]]
    write_copies(tmp_path / "lib", scenes)
    assert fmnist_run("ingest", tmp_path / "lib", "--json").code == 0
    store = open_store(load_settings(tmp_path / "fm.toml"))
    try:
        videos = {Path(v.path).name: v for v in videos_of(scan(store, None)[1])}
        low = videos["low.mkv"]
        assert [round(t, 1) for t in low.starts] == [0.0, 2.1, 4.2]  # its cuts seen at the next keyframe
        check = VideoCheck(store, threshold=0.9, min_similarity=0.8, max_megapixels=100)
        assert check.coverage(videos["orig.mp4"], videos["small.webm"])[0] == pytest.approx(1.0)
        assert COVERAGE <= check.coverage(videos["orig.mp4"], low)[0] < 1.0  # aligned by time, not index
        assert len(spans(videos["orig.mp4"], low)) == 5
        shared, _ = check.coverage(videos["orig.mp4"], videos["other.mp4"])
        assert shared == pytest.approx(1 / 3, abs=0.05)
        assert check(videos["orig.mp4"], videos["other.mp4"]) == (False, 0.0)
        by_hash = {v.hash: v for v in videos.values()}
        pairs = candidate_pairs(store, by_hash, Decisions(tmp_path / "none.json"), threshold=0.5,
                                neighbours_asked=16, folder=None)
        names = {tuple(sorted(Path(by_hash[h].path).name for h in pair)) for pair in pairs}
        assert ("orig.mp4", "small.webm") in names and not any("trim.mp4" in pair for pair in names)
    finally:
        store.close()
    doc = fmnist_run("duplicates", "--json").json()
    assert sorted(map(sorted, groups_of(doc))) == [["low.mkv", "orig.mp4", "small.webm"]]


def test_byte_identical_videos_are_one_identical_group(clipdex, config: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    one = write_video(lib / "a.mp4", SCENES[:2])
    (lib / "backup").mkdir()
    shutil.copyfile(one, lib / "backup" / "a.mp4")
    write_video(lib / "b.mp4", SCENES[1:])
    assert clipdex("ingest", lib, "--json").code == 0
    doc = clipdex("duplicates", "--json").json()
    assert [(g["reason"], g["similarity"], sorted(groups_of({"groups": [g]})[0])) for g in doc["groups"]] == [
        ("identical", 1.0, ["a.mp4", "a.mp4"])]
    assert all(f["media"] == "video" for f in doc["groups"][0]["files"])


def test_move_aside_undo_and_not_duplicates_on_videos(clipdex, config: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    made = write_copies(lib)
    assert clipdex("ingest", lib, "--json").code == 0
    before = {p["path"] for p in stored(config)}
    aside = tmp_path / "aside"
    r = clipdex("duplicates", "--move-to", aside, "--json")
    assert r.code == 0, r.err
    moved = r.json()
    assert sorted(Path(m["from"]).name for m in moved["moved"]) == ["low.mkv", "small.webm"]
    assert (aside / "copies" / "small.webm").is_file() and not made["small"].exists() and made["orig"].exists()
    assert moved["points_dropped"] == 6  # every moment of both videos
    left = stored(config)
    assert str(made["small"]) not in {p["path"] for p in left} and str(made["orig"]) in {p["path"] for p in left}
    assert clipdex("duplicates", "--json").json()["groups"] == []

    back = clipdex("duplicates", "--undo", moved["manifest"], "--json")
    assert back.code == 0, back.err
    assert len(back.json()["restored"]) == 2 and made["small"].is_file() and made["low"].is_file()
    after = stored(config)
    assert {p["path"] for p in after} == before
    small = [p for p in after if p["path"] == str(made["small"])]
    assert len(small) == small[0]["video_points"] == 3
    again = clipdex("duplicates", "--json").json()
    assert sorted(map(sorted, groups_of(again))) == [["low.mkv", "orig.mp4", "small.webm"]]

    dismissed = clipdex("duplicates", "--not-duplicates", made["orig"], made["small"], made["low"], "--json")
    assert dismissed.code == 0, dismissed.err
    assert clipdex("duplicates", "--json").json()["groups"] == []
    assert clipdex("duplicates", "--forget-decision", made["small"]).code == 0
    assert len(clipdex("duplicates", "--json").json()["groups"]) == 1
    missing = clipdex("duplicates", "--not-duplicates", made["orig"], lib / "none.mp4")
    assert missing.code != 0 and "not an indexed file" in missing.err


def test_api_lists_the_video_group_with_a_frame_and_moves_it(config: Path, tiny_model_dir: Path,
                                                             tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from retrieval.cli import main
    from retrieval.index import Index
    from retrieval.server import create_app
    from retrieval.settings import load_settings

    lib = tmp_path / "lib"
    made = write_copies(lib)
    with config.open("a") as fh:
        fh.write(f'[duplicates]\nmove_to = "{tmp_path / "aside"}"\n')
    assert main(["ingest", str(lib), "--config", str(config)]) == 0
    with Index.open(load_settings(config)) as index, TestClient(create_app(index)) as client:
        doc = client.get("/api/duplicates").json()
        (group,) = doc["groups"]
        assert group["keep"] == str(made["orig"]) and doc["checked"] == 6
        for f in group["files"]:
            frame = client.get("/api/image", params={"path": f["path"], "thumb": 256, "t": f["time_s"]})
            assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
        one = client.get("/api/duplicates", params={"path": str(made["small"])}).json()
        assert one["total"] == 1
        wrong = client.post("/api/duplicates/resolve", json={"action": "move", "keep": str(made["orig"]),
                                                             "paths": [str(made["other"])]})
        assert wrong.status_code == 409 and made["other"].exists()  # not a file of the group
        moved = client.post("/api/duplicates/resolve", json={"action": "move", "keep": str(made["small"]),
                                                             "paths": [str(made["orig"])]})
        assert moved.status_code == 200, moved.text
        assert not made["orig"].exists() and made["small"].exists() and made["low"].exists()
        assert client.get("/api/duplicates").json()["groups"][0]["keep"] == str(made["low"])  # 160x120 now
        undone = client.post("/api/duplicates/undo")
        assert undone.status_code == 200 and made["orig"].exists()
        assert client.get("/api/duplicates").json()["groups"][0]["keep"] == str(made["orig"])
        assert client.get("/api/status").json()["videos"] == 5
        picked = client.post("/api/duplicates/resolve", json={"action": "move", "selection": True,
                                                              "paths": [str(made["trim"])]})
        assert picked.status_code == 200 and not made["trim"].exists()  # a video picked on the page moves too
        assert client.post("/api/duplicates/undo").status_code == 200 and made["trim"].exists()
    manifest = json.loads(Path(moved.json()["manifest"]).read_text())
    assert [Path(m["from"]).name for m in manifest["moves"]] == ["orig.mp4"]


def test_a_copy_damaged_since_ingest_is_unreadable_not_grouped(clipdex, config: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    made = write_copies(lib)
    assert clipdex("ingest", lib, "--json").code == 0
    made["small"].write_bytes(made["small"].read_bytes()[:200])  # its header only: no frame decodes
    r = clipdex("duplicates", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert groups_of(doc) == [["orig.mp4", "low.mkv"]] and doc["unreadable"] == [str(made["small"])]


def test_moments_never_crowd_a_photos_neighbours_out(clipdex, config: Path, tmp_path: Path) -> None:
    """A photo asks for its nearest photos only: videos showing that very picture (their moments nearer to it
    than its recompressed copy) take none of its ``neighbours``."""
    from tests.photos import render

    lib = tmp_path / "lib"
    lib.mkdir()
    picture = render(7, size=(160, 120))
    picture.save(lib / "photo.png")
    picture.crop((8, 6, 152, 114)).resize((120, 90)).save(lib / "photo-copy.jpg", quality=40)  # cropped, smaller
    for i in range(3):
        write_video(lib / f"still{i}.mp4", [(picture, 1.0 + i)], size=(160, 120), motion=False,
                    options={"crf": str(i)})
    assert clipdex("ingest", lib, "--json").json()["videos"] == 3
    doc = clipdex("duplicates", "--neighbours", "1", "--json").json()
    assert groups_of(doc) == [["photo.png", "photo-copy.jpg"]]
