"""Video moments: decode-and-sample speed, whole ingest, moment accuracy, points per minute, peak RSS (one JSON line).

The script writes its own videos with PyAV (cached in ``--data``): H.264 (libx264 ``veryfast``, CABAC,
B-frames), 30 fps, each one minute of ten scenes of ``--scene-s`` seconds, one per Fashion-MNIST class
(``samples/fashion-mnist``, a different sample per video), the item as tall as the frame on black (as in the data set),
panning a pixel a frame. By default the keyframe interval is one second (``--gop 30``, as phones and cameras write); one
more 1080p video with x264's default interval (250 frames, cuts detected by x264) measures the
every-frame path.

* ``sample_x``: :class:`ingest.video.sample.VideoSampler` alone (decode, cut test, small RGB frames at
  224 px), seconds of video per wall second, per resolution;
* ``ingest_x``: ``Index.ingest`` of ``--minutes`` one-minute 1080p videos into a fresh embedded store with
  the bundled ``models/fmnist-tiny`` (configs/demo.toml's model), scan to the last write;
* ``accuracy``: for each video and class, the text query "a photo of a CLASS" (and, separately, an image
  query: another sample of that class) restricted to that video: is its top moment inside the scene of
  that class?
* ``model_on_pictures_*``: the same queries against the ten scenes' frames as rendered, before any video
  encoding: what the model itself gets right, the ceiling of the accuracy above;
* ``points_per_min`` and ``peak_rss_mb`` (this process, everything included: model, store, decoder).

``--rounds`` repeats the sample measurement (alternating resolutions) and reports every round.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]  # not ./ingest.py

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
SAMPLES = REPO / "samples" / "fashion-mnist"


def log(msg: str) -> None:
    print(f"[video-bench] {msg}", file=sys.stderr, flush=True)


def sample_image(cls: str, index: int) -> Image.Image:
    files = sorted((SAMPLES / cls).glob("*.png"))
    return Image.open(files[index % len(files)]).convert("RGB")


def render(picture: Image.Image, w: int, h: int) -> Image.Image:
    """A scene's frame: the picture as tall as the frame (as in the data set), centred on black."""
    item = picture.resize((h, h), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (w, h))
    canvas.paste(item, ((w - h) // 2, 0))
    return canvas


def write_scenes(path: Path, video: int, size: tuple[int, int], scene_s: float, gop: int | None) -> None:
    """One minute-ish video: ten scenes, one per class (sample ``video``), :func:`render`-ed, panning."""
    import av

    w, h = size
    fps = 30

    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        params = {"preset": "veryfast", "crf": "23"}
        if gop:
            params["x264-params"] = f"keyint={gop}:min-keyint={gop}"
        stream.options = params
        for cls in CLASSES:
            canvas = np.asarray(render(sample_image(cls, video), w, h))
            for i in range(round(scene_s * fps)):
                frame = np.roll(canvas, i - 90, axis=1)  # a slow pan, a pixel a frame
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def videos(data: Path, minutes: int, scene_s: float, gop: int) -> dict[str, list[Path]]:
    """The videos the measurements use (written once, then reused)."""
    data.mkdir(parents=True, exist_ok=True)
    sets: dict[str, list[Path]] = {"1080p": [], "720p": [], "1080p-long-gop": []}
    tag = f"s{scene_s:g}-g{gop}-full"
    for v in range(minutes):
        sets["1080p"].append(data / f"lib1080-{tag}" / f"v{v:02d}.mp4")
    sets["720p"].append(data / f"v720-{tag}.mp4")
    sets["1080p-long-gop"].append(data / f"v1080-s{scene_s:g}-gop250-full.mp4")
    for name, paths in sets.items():
        for i, path in enumerate(paths):
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            size = (1280, 720) if name == "720p" else (1920, 1080)
            started = time.perf_counter()
            tmp = path.with_name(path.name + ".part")  # not a video name: an ingest never picks up a half file
            write_scenes(tmp, i, size, scene_s, None if name.endswith("long-gop") else gop)
            tmp.rename(path)
            log(f"wrote {path} in {time.perf_counter() - started:.0f} s")
    return sets


def sample_speed(path: Path) -> dict[str, Any]:
    from ingest.video.sample import VideoSampler
    from retrieval.settings import VideoSettings

    started = time.perf_counter()
    sampler = VideoSampler(str(path), VideoSettings(), size=224, max_megapixels=64)
    segments = sum(1 for _ in sampler)
    wall = time.perf_counter() - started
    return {"x": round(sampler.stats.end_s / wall, 1), "wall_s": round(wall, 2), "segments": segments,
            "keyframes_only": sampler.stats.keyframes_only, "frames": sampler.stats.frames}


def scene_of(time_s: float, scene_s: float) -> int:
    return int(time_s // scene_s)


def ingest_and_query(lib: Path, scene_s: float) -> dict[str, Any]:
    from ingest.records import path_key
    from retrieval import load_settings
    from retrieval.index import Index
    from retrieval.store import SearchFilter

    store = Path(tempfile.mkdtemp(prefix="clipdex-video-bench-"))
    try:
        settings = load_settings(REPO / "configs" / "demo.toml").with_overrides(
            store={"path": str(store), "collection": "video-bench"}, model={"device": "cpu"})
        with Index.open(settings, create=True) as index:
            index.ingest_encoder  # noqa: B018  (the model loads once, before the clock starts)
            started = time.perf_counter()
            report = index.ingest([str(lib)])
            wall = time.perf_counter() - started
            text_ok = image_ok = total = 0
            ceiling_text = ceiling_image = 0  # the same queries against the ten pictures themselves
            files = sorted(lib.glob("*.mp4"))
            texts = index.encoder.encode_texts([f"a photo of a {c.replace('_', ' ')}" for c in CLASSES])
            for v, video in enumerate(files):
                where = SearchFilter(path=path_key(str(video)), media="video")
                pictures = index.encoder.encode_pil([render(sample_image(c, v), 1920, 1080) for c in CLASSES])
                others = index.encoder.encode_pil([sample_image(c, v + 7) for c in CLASSES])  # not the ones shown
                for scene in range(len(CLASSES)):
                    total += 1
                    top = index.store.query(texts[scene], 1, where)
                    text_ok += bool(top) and scene_of(float(top[0].payload["time_s"]), scene_s) == scene
                    top = index.store.query(others[scene], 1, where)
                    image_ok += bool(top) and scene_of(float(top[0].payload["time_s"]), scene_s) == scene
                    ceiling_text += int(np.argmax(pictures @ texts[scene])) == scene
                    ceiling_image += int(np.argmax(pictures @ others[scene])) == scene
            seconds = len(files) * len(CLASSES) * scene_s
        return {"ingest_wall_s": round(wall, 2), "ingest_x": round(seconds / wall, 1), "videos": report.videos,
                "moments": report.moments, "points_per_min": round(report.moments / (seconds / 60), 1),
                "accuracy_text": round(text_ok / total, 3), "accuracy_image": round(image_ok / total, 3),
                "model_on_pictures_text": round(ceiling_text / total, 3),
                "model_on_pictures_image": round(ceiling_image / total, 3),
                "queries": total, "failed": report.failed}
    finally:
        shutil.rmtree(store, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=2, help="minutes of 1080p for the whole ingest")
    parser.add_argument("--scene-s", type=float, default=6.0, help="seconds per scene (ten scenes a video)")
    parser.add_argument("--gop", type=int, default=30, help="keyframe interval in frames (30 = 1 s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the sampling measurement")
    parser.add_argument("--write-only", action="store_true", help="write the videos, measure nothing")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "clipdex-video-bench")
    args = parser.parse_args()
    from benchmarks.machine import machine

    sets = videos(args.data, args.minutes, args.scene_s, args.gop)
    if args.write_only:
        return
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        row = {name: sample_speed(paths[0]) for name, paths in sets.items()}
        log(f"round {r + 1}: " + ", ".join(f"{k} {v['x']}x" for k, v in row.items()))
        rounds.append(row)
    result = ingest_and_query(sets["1080p"][0].parent, args.scene_s)
    out = {"bench": "video", "minutes_1080p": args.minutes, "scene_s": args.scene_s, "gop": args.gop,
           "sample_rounds": rounds,
           "sample_x": {k: [row[k]["x"] for row in rounds] for k in sets},
           **result, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "machine": machine()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
