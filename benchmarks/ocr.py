"""The OCR pass over a folder of photo-like pictures, 1 in 5 carrying rendered words (issue 16).

The folder (made here, ``--images`` pictures of 640×480 JPEG): procedurally textured street-like scenes
(``tests.ocr_images.scene``: sky, fractal ground, buildings with window grids, round shapes, noise, blur).
Every fifth one carries a sign of 1-3 words from :data:`WORDS` in a DejaVu font (Debian's fonts-dejavu-core;
Pillow's default font if absent), 18-56 px, random plate and letter colours, rotated -15..15°, anywhere.

The CLIP pass runs first with the bundled model (configs/demo.toml's ``[model]``); then the timed OCR pass
(``ingest.ocr.run_ocr``, decode + OCR + store updates, one process, the default ``[ocr]`` settings).
``word_recall``: of the rendered words, the fraction ``search(text_in_image=word)`` finds in its picture.
Prints one JSON line: ``{"images", "with_text", "img_per_s", "word_recall", "s_per_text_image",
"s_per_plain_image", ...}``; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]  # benchmarks/ingest.py
sys.path.insert(0, str(REPO))  # would shadow the ingest package

from ingest.ocr import run_ocr  # noqa: E402
from ingest.ocr_engine import OcrEngine  # noqa: E402
from retrieval import Index, load_settings  # noqa: E402
from tests.ocr_images import fonts, scene, sign  # noqa: E402

WORDS = ("PHARMACY", "BAKERY", "Lisboa", "Total", "42.50", "Museum", "EXIT", "Hotel", "Station", "Parking",
         "Café", "Garden", "Market", "Library", "Bridge", "Tickets", "Open", "Closed", "Welcome", "Street",
         "Avenue", "Metro", "Bank", "Pizza", "Coffee", "Books", "Market", "Harbour", "North", "Platform",
         "Gate", "Sale", "Fresh", "Bread", "Wine", "Music", "Cinema", "Theatre", "Beach", "Police")


def log(msg: str) -> None:
    print(f"[ocr-bench] {msg}", file=sys.stderr, flush=True)


def make_folder(folder: Path, count: int, seed: int) -> dict[str, list[str]]:
    """Write the pictures; returns file name → the words rendered on it ([] for a plain photo)."""
    rng = np.random.default_rng(seed)
    faces = fonts()
    truth: dict[str, list[str]] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = f"{i:04d}.jpg"
        base = scene((640, 480), seed * 100_003 + i)
        words: list[str] = []
        if i % 5 == 0:
            words = list(rng.choice(WORDS, size=int(rng.integers(1, 4)), replace=False))
            plate = tuple(int(c) for c in rng.integers(0, 256, 3))
            light = sum(plate) > 384
            ink = tuple(int(c) for c in (rng.integers(0, 70, 3) if light else rng.integers(190, 256, 3)))
            base = sign(" ".join(words), base=base, font_size=int(rng.integers(18, 57)),
                        angle=float(rng.uniform(-15, 15)), which=faces[int(rng.integers(len(faces)))],
                        colours=(plate, ink), at=(float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.2, 0.8))))
        base.save(folder / name, quality=90)
        truth[name] = words
    return truth


class TimedEngine(OcrEngine):
    """The real engine, recording the wall time of each read (the pass reads in path order)."""

    times: list[float]

    def read(self, image: Any) -> str:
        start = time.perf_counter()
        try:
            return super().read(image)
        finally:
            self.times.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.toml"))
    parser.add_argument("--json", action="store_true", help="print the one JSON line only (the default too)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clipdex-ocr-bench-") as tmp:
        root = Path(tmp)
        truth = make_folder(root / "pics", args.images, args.seed)
        log(f"{len(truth)} pictures, {sum(bool(w) for w in truth.values())} with words, fonts: "
            f"{'DejaVu' if fonts()[0] is not None else 'Pillow default'}")
        settings = load_settings(args.config).with_overrides(store={"path": str(root / "store"),
                                                                     "collection": "ocr-bench"})
        with Index.open(settings, create=True) as index:
            index.ingest([root / "pics"])
            load_start = time.perf_counter()
            engine = TimedEngine(settings.ocr)
            engine.times = []
            load_s = time.perf_counter() - load_start
            start = time.perf_counter()
            report = run_ocr(index.store, settings, engine=engine)
            seconds = time.perf_counter() - start
            found = total = 0
            missed: list[str] = []
            for name, words in truth.items():
                for word in words:
                    total += 1
                    hits = index.search(text_in_image=word, limit=args.images)
                    if any(Path(h.payload["path"]).name == name for h in hits):
                        found += 1
                    else:
                        missed.append(f"{name}:{word}")
            texts = {Path(p["path"]).name: p.get("ocr_text") or ""
                     for _, p in index.store.payloads(["path", "ocr_text"])}
    names = sorted(truth)
    text_t = [t for n, t in zip(names, engine.times, strict=False) if truth[n]]
    plain_t = [t for n, t in zip(names, engine.times, strict=False) if not truth[n]]
    false_text = sorted(n for n in names if not truth[n] and texts.get(n))
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    print(json.dumps({
        "images": len(truth), "with_text": sum(bool(w) for w in truth.values()),
        "img_per_s": round(len(truth) / seconds, 3), "word_recall": round(found / max(total, 1), 4),
        "s_per_text_image": round(float(np.mean(text_t)), 4) if text_t else None,
        "s_per_plain_image": round(float(np.mean(plain_t)), 4) if plain_t else None,
        "pass_s": round(seconds, 2), "model_load_s": round(load_s, 3), "words": total, "missed": missed,
        "plain_with_text": len(false_text), "failed": len(report.failed), "cpu": cpu,
        "amx_bf16": "amx_bf16" in Path("/proc/cpuinfo").read_text(), "loadavg": os.getloadavg()[0],
        "threads": os.cpu_count()}))


if __name__ == "__main__":
    main()
