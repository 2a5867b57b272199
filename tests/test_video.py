"""Videos: ingest (several containers and codecs, rotated, changed, killed) and hostile files, each bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.images import pattern
from tests.videos import absurd_duration, patch_bytes, write_audio_only, write_vfr, write_video

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


def stored(config: Path, *more: str) -> list[dict]:
    """Every stored point's payload (the video fields, and ``more``)."""
    from retrieval.settings import load_settings
    from retrieval.store import open_store

    settings = load_settings(config)
    store = open_store(settings)
    try:
        fields = ("path", "media", "start_s", "end_s", "time_s", "hash", "video_points", "width", "height", "codec",
                  "duration_s", "taken_ts", "truncated", *more)
        return [p for _, p in store.payloads(fields)]
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


def test_an_incomplete_set_is_read_again(clipdex, config: Path, library: Path) -> None:
    """A video whose stored moments are fewer than its ``video_points`` (a partly applied write) is read again."""
    from retrieval.settings import load_settings
    from retrieval.store import open_store

    assert clipdex("ingest", library, "--json").code == 0
    video = str(library / "scenes.mp4")
    store = open_store(load_settings(config))
    try:
        ids = [pid for pid, p in store.payloads(("path",)) if p["path"] == video]
        store.delete(ids[:1])
    finally:
        store.close()
    assert len([p for p in stored(config) if p["path"] == video]) == len(ids) - 1
    report = clipdex("ingest", library, "--json").json()
    assert report["videos"] == 1 and report["unchanged"] == 5
    assert len([p for p in stored(config) if p["path"] == video]) == len(ids)


def test_no_video_flag(clipdex, config: Path, library: Path) -> None:
    report = clipdex("ingest", library, "--no-video", "--json").json()
    assert report["indexed"] == 1 and report["videos"] == 0
    assert {p["path"] for p in stored(config)} == {str(library / "photo.png")}
    assert clipdex("ingest", library, "--json").json()["videos"] == 5
    before = len(stored(config))
    again = clipdex("ingest", library, "--no-video", "--json").json()  # videos not listed are not gone
    assert again["deleted"] == 0 and len(stored(config)) == before


def test_hostile_files_each_bounded(clipdex, config: Path, tmp_path: Path) -> None:
    """Each hostile file gives one failed line or a bounded result; the run goes on and is quick."""
    lib = tmp_path / "hostile"
    lib.mkdir()
    (lib / "empty.mp4").write_bytes(b"")
    (lib / "text.mp4").write_text("this is not a video\n" * 20)
    whole = write_video(tmp_path / "whole.mp4", [(pattern(1), 2.0), (pattern(2), 2.0)])
    (lib / "truncated.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # no index at the end
    stream = write_video(tmp_path / "whole.mkv", [(pattern(1), 2.0), (pattern(2), 2.0)])
    (lib / "truncated.mkv").write_bytes(stream.read_bytes()[: stream.stat().st_size * 6 // 10])  # streamable
    write_audio_only(lib / "audio.mp4")
    patch_bytes(write_video(lib / "codec.mp4", [(pattern(3), 1.0)]), b"avc1", b"zzzz")  # a codec nobody knows
    absurd_duration(write_video(lib / "absurd.mp4", [(pattern(3), 2.0)]))
    write_video(lib / "tenbit.mp4", [(pattern(4), 2.0)], pix_fmt="yuv420p10le")
    write_vfr(lib / "vfr.mp4", [pattern(i // 3) for i in range(9)], [0, 0.1, 0.2, 1.5, 1.6, 3.0, 4.0, 6.5, 6.6])
    start = time.monotonic()
    r = clipdex("ingest", lib, "--json")
    assert r.code == 0, r.err
    report = r.json()
    assert time.monotonic() - start < 60
    failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    assert set(failed) == {"empty.mp4", "text.mp4", "truncated.mp4", "audio.mp4", "codec.mp4"}, failed
    assert "audio only" in failed["audio.mp4"] and "codec" in failed["codec.mp4"]
    assert all("\n" not in e and len(e) < 300 for e in failed.values())
    assert report["videos"] == 4
    points = {Path(p["path"]).name: p for p in stored(config)}
    assert points["absurd.mp4"]["duration_s"] == pytest.approx(2.0, abs=0.2)  # measured, not the header's
    assert points["tenbit.mp4"]["codec"] == "h264"
    assert points["vfr.mp4"]["duration_s"] == pytest.approx(6.6, abs=0.2)
    vfr = sorted(p["start_s"] for p in stored(config) if p["path"].endswith("vfr.mp4"))
    assert vfr == pytest.approx([0.0, 1.5, 4.0], abs=0.01)  # cuts found at the variable frame times


@pytest.mark.parametrize("cap", [{"max_frames": 5}, {"max_seconds": 1.0}, {"time_s": 1e-6},
                                 {"max_gigapixels": 1e-5}, {"max_moments": 1}])
def test_caps_keep_a_bounded_result(tmp_path: Path, cap: dict) -> None:
    from ingest.scan import ScannedFile
    from ingest.video.run import read_video
    from retrieval.settings import VideoSettings

    video = write_video(tmp_path / "v.mp4", SCENES)
    file = ScannedFile(str(video), video.stat().st_size, video.stat().st_mtime_ns)
    result = read_video(file, lambda segs: np.eye(8, dtype=np.float32)[: len(segs)], VideoSettings(**cap), size=32,
                        max_megapixels=64, batch_size=8)
    assert result.status == "video" and result.meta["truncated"].startswith("[video] " + next(iter(cap)))
    assert result.moments and result.moments[-1].end_s <= 8.0
    assert len(result.moments) < 3


def _store_versions(config: Path, name: str) -> dict[str, list[dict]]:
    """The stored moments of ``name`` grouped by content version (hash)."""
    out: dict[str, list[dict]] = {}
    for p in stored(config):
        if p["path"].endswith(name):
            out.setdefault(p["hash"], []).append(p)
    return out


def test_kill_mid_video_leaves_whole_versions(clipdex, config: Path, tmp_path: Path) -> None:
    """kill -9 while a changed video is read and stored: each stored version of it is whole; a re-run keeps
    exactly the new one."""
    lib = tmp_path / "lib"
    lib.mkdir()
    scenes = [(pattern(20 + i), 1.0) for i in range(12)]
    write_video(lib / "a.mp4", [(pattern(1), 1.0)])
    write_video(lib / "b.mp4", scenes, size=(320, 240), fps=30)
    with config.open("a") as fh:  # every frame a moment: b.mp4 takes a while to read and embed
        fh.write("[video]\nprobe_s = 0.001\nmax_gap_s = 0.01\nmerge_cosine = 1.0001\n")
    assert clipdex("ingest", lib, "--json").code == 0
    old = _store_versions(config, "b.mp4")
    assert len(old) == 1
    write_video(lib / "a.mp4", [(pattern(2), 1.0)])
    write_video(lib / "b.mp4", scenes[::-1], size=(320, 240), fps=30)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "retrieval.cli", "ingest", str(lib), "--progress", "--config",
                             str(config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    for line in proc.stderr:  # the first video is done: the second is being read
        if "video 1/2" in line or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    versions = _store_versions(config, "b.mp4")  # mostly the old version: b.mp4 takes over a second
    assert versions and all(len(v) == v[0]["video_points"] for v in versions.values()), \
        {h: (len(v), v[0]["video_points"]) for h, v in versions.items()}
    r = clipdex("ingest", lib, "--json")
    assert r.code == 0, r.err
    final = _store_versions(config, "b.mp4")
    assert len(final) == 1 and set(final) != set(old)
    (moments,) = final.values()
    assert len(moments) == moments[0]["video_points"]


FMNIST = Path(__file__).resolve().parent.parent / "samples" / "fashion-mnist"
CLASSES = ["bag", "trouser", "sneaker", "dress", "ankle_boot"]


@pytest.fixture
def fmnist_run(tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    """The real CLI on the bundled Fashion-MNIST model (it knows clothing words), with its own store."""
    from retrieval.cli import main
    from tests.conftest import Result, write_config

    model = Path(__file__).resolve().parent.parent / "models" / "fmnist-tiny"
    config = write_config(tmp_path / "fm.toml", model, tmp_path / "fm-store")

    def run(*args: object) -> Result:
        capfd.readouterr()
        code = main([str(a) for a in args] + ["--config", str(config)])
        out = capfd.readouterr()
        return Result(code, out.out, out.err)

    return run


def test_search_lands_on_the_moment(fmnist_run, tmp_path: Path) -> None:
    from PIL import Image

    lib = tmp_path / "show"
    lib.mkdir()
    scenes = [(Image.open(sorted((FMNIST / c).glob("*.png"))[0]), 2.0) for c in CLASSES]  # scene i: [2i, 2i+2)
    video = write_video(lib / "show.mp4", scenes, size=(128, 96))
    Image.open(sorted((FMNIST / "coat").glob("*.png"))[0]).save(lib / "coat.png")
    assert fmnist_run("ingest", lib, "--json").code == 0
    for i, name in enumerate(CLASSES):  # text: the top moment lies inside the scene of that class
        (hit,) = fmnist_run("search", f"a photo of a {name.replace('_', ' ')}", "--media", "video", "-k", "1",
                            "--json").json()
        assert hit["media"] == "video" and 2 * i <= hit["start_s"] <= hit["time_s"] < hit["end_s"] <= 2 * i + 2.01
    query = sorted((FMNIST / "sneaker").glob("*.png"))[1]  # another sneaker than the one in the video
    (hit,) = fmnist_run("search", "--image", query, "--media", "video", "-k", "1", "--json").json()
    assert 4 <= hit["time_s"] < 6
    rows = fmnist_run("search", "a photo of a bag", "--json", "-k", "5").json()
    assert [r["media"] for r in rows].count("video") == 1  # one hit per video by default
    assert {r["path"] for r in rows} == {str(video), str(lib / "coat.png")}
    several = fmnist_run("search", "a photo of a bag", "--moments", "3", "--media", "video", "--json").json()
    assert len(several) == 3 and len({r["time_s"] for r in several}) == 3
    paths = fmnist_run("search", "a photo of a bag", "--paths", "-k", "2").out.split()
    assert f"{video}#t={rows[0]['time_s']:g}" in paths or f"{video}#t=0.5" in paths
    assert str(lib / "coat.png") in paths
    assert fmnist_run("search", "a photo of a coat", "--media", "image", "--paths").out.split() == [
        str(lib / "coat.png")]
    like = fmnist_run("search", "--like", f"{video}#t=8.7", "--moments", "5", "--media", "video", "--json").json()
    assert 8 <= like[0]["time_s"] < 10  # the liked moment itself first
    human = fmnist_run("search", "a photo of a dress", "--media", "video", "-k", "1").out
    assert " at 0:06 (0:06-0:08)" in human
    missing = fmnist_run("search", "--like", f"{lib / 'none.mp4'}#t=1")
    assert missing.code != 0 and "not in the collection" in missing.err


def test_media_ranges_and_moment_thumbnails(clipdex, config: Path, library: Path, tmp_path: Path) -> None:
    """``/api/media`` streams an ingested video with Range support; ``/api/image`` makes a moment's frame."""
    from io import BytesIO

    from fastapi.testclient import TestClient
    from PIL import Image

    from retrieval import load_settings
    from retrieval.index import Index
    from retrieval.server import create_app

    assert clipdex("ingest", library, "--json").code == 0
    video = library / "scenes.mp4"
    data = video.read_bytes()
    outside = write_video(tmp_path / "outside.mp4", [(pattern(1), 1.0)])
    with Index.open(load_settings(config)) as index, TestClient(create_app(index)) as client:
        whole = client.get("/api/media", params={"path": str(video)})
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
        part = client.get("/api/media", params={"path": str(video)}, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == data[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
        tail = client.get("/api/media", params={"path": str(video)}, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]
        rest = client.get("/api/media", params={"path": str(video)}, headers={"Range": f"bytes={len(data) - 5}-"})
        assert rest.status_code == 206 and rest.content == data[-5:]
        past = client.get("/api/media", params={"path": str(video)}, headers={"Range": f"bytes={len(data)}-"})
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
        for ignored in ("bytes=0-1,5-9", "items=0-5", "bytes=9-3", "bytes=" + "9" * 40 + "-"):
            answer = client.get("/api/media", params={"path": str(video)}, headers={"Range": ignored})
            assert answer.status_code == 200 and answer.content == data, ignored
        photo = client.get("/api/media", params={"path": str(library / "photo.png")})
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"
        for path in (str(outside), "/etc/passwd", str(library)):
            assert client.get("/api/media", params={"path": path}).status_code == 404
        frames = []
        for t in (1.0, 4.0, 6.5):  # the three scenes
            answer = client.get("/api/image", params={"path": str(video), "thumb": 64, "t": t})
            assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
            assert answer.headers["x-cache"] == "MISS"
            frames.append(np.asarray(Image.open(BytesIO(answer.content)).convert("L"), dtype=np.float32))
        again = client.get("/api/image", params={"path": str(video), "thumb": 64, "t": 4.0})
        assert again.headers["x-cache"] == "HIT"
        assert np.abs(frames[0] - frames[1]).mean() > 10 and np.abs(frames[1] - frames[2]).mean() > 10
        portrait = client.get("/api/image", params={"path": str(library / "portrait.mp4"), "thumb": 64})
        assert Image.open(BytesIO(portrait.content)).size == (48, 64)  # upright
        assert client.get("/api/image", params={"path": str(video), "t": "nan"}).status_code in (400, 422)
        hits = client.get("/api/search", params={"q": "anything", "limit": 20}).json()
        moments = [h for h in hits if h["media"] == "video"]
        assert moments and all({"time_s", "start_s", "end_s"} <= set(h) for h in moments)
        assert len({h["path"] for h in moments}) == len(moments)  # one per video


def test_frames_of_one_video_are_never_duplicates(clipdex, config: Path, tmp_path: Path) -> None:
    """A video whose shots look alike (black, black again) and its moments sharing one hash give no group."""
    lib = tmp_path / "lib"
    lib.mkdir()
    write_video(lib / "dark.mp4", [(pattern(1), 2.0), (pattern(2), 2.0), (pattern(1), 2.0)])
    write_video(lib / "dark2.mp4", [(pattern(3), 2.0), (pattern(1), 2.0)])
    pattern(5).save(lib / "a.png")
    pattern(5).save(lib / "b.png")  # a real duplicate pair beside them
    assert clipdex("ingest", lib, "--json").code == 0
    r = clipdex("duplicates", "--json")
    assert r.code == 0, r.err
    groups = r.json()["groups"] if isinstance(r.json(), dict) else r.json()
    members = [Path(p).name for g in groups for p in [g["keep"], *g["duplicates"]]]
    assert not [m for m in members if m.endswith(".mp4")]
    assert sorted(members) == ["a.png", "b.png"]


_RSS_PROBE = """
import re, sys
def peak():  # KiB; VmHWM is this process's own (ru_maxrss can carry the forking parent's across exec)
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
from ingest.video.sample import VideoSampler
from retrieval.settings import VideoSettings
before = peak()  # PyAV and the settings imported, nothing decoded
segments = sum(1 for _ in VideoSampler(sys.argv[1], VideoSettings(max_gap_s=1.0), size=224, max_megapixels=64))
print(segments, peak() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_memory_does_not_grow_with_the_duration(tmp_path: Path) -> None:
    """Sampling a video ten times longer (every frame decoded: no keyframe path) takes no more memory."""
    shot = [(pattern(i), 2.0) for i in range(4)]
    short = write_video(tmp_path / "short.mp4", shot, size=(640, 360), fps=15, gop=1000)
    long = write_video(tmp_path / "long.mp4", shot * 10, size=(640, 360), fps=15, gop=1000)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    grown = {}
    for video in (short, long):
        out = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(video)], capture_output=True, text=True, env=env,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        segments, kb = map(int, out.stdout.split())
        grown[video.name] = (segments, kb)
    assert grown["long.mp4"][0] >= 8 * grown["short.mp4"][0]  # it really read ten times more
    assert grown["short.mp4"][1] > 0 and grown["long.mp4"][1] - grown["short.mp4"][1] < 16 * 1024, grown  # KiB


def test_ocr_reads_each_moment_on_its_own_frame(clipdex, config: Path, tmp_path: Path) -> None:
    """``--ocr`` reads every moment's own frame: the words of one scene land on that scene's moment only, so
    ``--text-in-image`` finds the video at the right second; a scene without words gets no text."""
    from tests.ocr_images import sign

    lib = tmp_path / "lib"
    lib.mkdir()
    video = write_video(lib / "shop.mp4", [(sign("PHARMACY"), 2.0), (pattern(2), 2.0), (sign("BAKERY", seed=3), 2.0)],
                        size=(320, 240), motion=False)
    report = clipdex("ingest", lib, "--ocr", "--json").json()
    assert report["videos"] == 1 and report["ocr"]["failed"] == [] and report["ocr"]["with_text"] == 1
    moments = sorted((p for p in stored(config, "ocr", "ocr_text", "ocr_error") if p["path"] == str(video)),
                     key=lambda p: p["start_s"])
    assert len(moments) == 3 and all(p.get("ocr") and not p.get("ocr_error") for p in moments)
    texts = [" ".join(p.get("ocr_text") or []).lower() if isinstance(p.get("ocr_text"), list)
             else str(p.get("ocr_text") or "").lower() for p in moments]
    assert "pharmacy" in texts[0] and "bakery" not in texts[0]
    assert texts[1] == ""
    assert "bakery" in texts[2] and "pharmacy" not in texts[2]
    for word, scene in (("pharmacy", 0), ("bakery", 2)):
        hits = clipdex("search", "--text-in-image", word, "--json").json()
        assert hits and hits[0]["path"] == str(video) and hits[0]["media"] == "video"
        assert moments[scene]["start_s"] <= hits[0]["time_s"] <= moments[scene]["end_s"], (word, hits[0])


def test_chromium_plays_a_moment_from_api_media(clipdex, config: Path, tmp_path: Path,
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """A real browser plays ``<video src="/api/media?path=…">`` from a moment's ``start_s`` (Range requests)."""
    from retrieval import load_settings
    from retrieval.index import Index
    from retrieval.server import create_app
    from tests.chromium import browser_session
    from tests.test_server import serving

    lib = tmp_path / "lib"
    lib.mkdir()
    video = write_video(lib / "clip.webm", [(pattern(1), 2.0), (pattern(2), 3.0)], size=(160, 120))
    assert clipdex("ingest", lib, "--json").code == 0
    moment = max((p for p in stored(config) if p["path"] == str(video)), key=lambda p: p["start_s"])
    assert moment["start_s"] == pytest.approx(2.0, abs=0.01)
    with Index.open(load_settings(config)) as index, serving(create_app(index)) as url, \
            browser_session(tmp_path_factory) as browser:
        browser.get(url + "/")
        state = browser.execute_async_script("""
            const [path, start, done] = arguments;
            const v = document.createElement("video");
            v.muted = true;
            v.addEventListener("loadedmetadata", () => { v.currentTime = start; });
            v.addEventListener("seeked", () => v.play().then(
                () => setTimeout(() => done({t: v.currentTime, ready: v.readyState, err: null}), 300),
                (e) => done({t: v.currentTime, ready: v.readyState, err: String(e)})));
            v.addEventListener("error", () => done({t: -1, ready: 0, err: String(v.error && v.error.code)}));
            v.src = "/api/media?path=" + encodeURIComponent(path);
            document.body.appendChild(v);
        """, str(video), moment["start_s"])
    assert state["err"] is None and state["ready"] >= 2, state
    assert moment["start_s"] <= state["t"] < moment["end_s"], state


def test_ocr_frames_of_a_long_video_are_capped_and_spread_over_it() -> None:
    """``[ocr] video_frames`` bounds the frames read per video; those read cover its start, end and middle."""
    from ingest.ocr import spread

    times = [float(t) for t in range(100)]
    assert spread(times, 200) == times
    assert spread(times, 5) == [0.0, 25.0, 50.0, 74.0, 99.0]
    assert spread(times, 1) == [50.0]
    assert len(spread(times, 32)) == 32 and len(set(spread(times, 32))) == 32
