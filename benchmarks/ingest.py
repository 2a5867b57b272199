"""End-to-end ingest throughput vs. model-only throughput (issue: "benchmarks/ingest.py --json").

Builds (or reuses) a folder of realistic 1024x768 JPEGs, then in one process, with one TorchEncoder:

* ``decode_img_per_s``: the real reader (``ingest.reader`` DataLoader) iterated without the model;
* ``model_only_img_per_s``: the same encoder and batch size on the pre-decoded, preprocessed tensors;
* ``ingest_img_per_s``: ``Index.ingest`` into a fresh embedded store in a temp dir, scan to last upsert
  (the final ``optimize()`` included; its share is reported as ``optimize_s``).

Model-only passes run right before and right after each ingest so both see the same machine noise;
``ratio`` = ingest / mean(model-only). Prints one JSON line on stdout; progress goes to stderr.
``--experiment`` monkeypatches the loader (never the source files) to try reader/pipeline changes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

EXPERIMENTS = ("none", "nice-workers", "workers-1", "workers-0", "no-draft", "prefetch-2")


def log(msg: str) -> None:
    print(f"[ingest-bench] {msg}", file=sys.stderr, flush=True)


# -- data ----------------------------------------------------------------------------------------
def make_jpeg(path: Path, seed: int, size: tuple[int, int] = (1024, 768)) -> None:
    """One varied synthetic photo-like JPEG: gradient, shapes, blur, sensor noise, quality 90."""
    rng = np.random.default_rng(seed)
    w, h = (size[1], size[0]) if seed % 5 == 0 else size  # every 5th image is portrait
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * np.cos(angle) + yy * np.sin(angle)) / (w + h) + 0.5
    img = (c0 * (1 - t[..., None]) + c1 * t[..., None]).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(5, 30))):
        x0, y0 = int(rng.integers(-100, w)), int(rng.integers(-100, h))
        x1, y1 = x0 + int(rng.integers(20, 500)), y0 + int(rng.integers(20, 400))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(int(rng.integers(3, 7)))]
            draw.polygon(pts, fill=fill)
    im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 3.0))))
    arr = np.asarray(im, dtype=np.int16) + rng.normal(0, rng.uniform(2, 12), (h, w, 3)).astype(np.int16)
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)


def ensure_images(folder: Path, n: int) -> Path:
    """A folder holding exactly ``n`` JPEGs: ``folder`` itself, or a hard-linked subset of it."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"img_{i:05d}.jpg" for i in range(n)]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        log(f"writing {len(missing)} JPEGs to {folder}")
        t0 = time.perf_counter()
        for k, name in enumerate(missing):
            tmp = folder / (name + ".tmp")
            make_jpeg(tmp, int(name[4:9]))
            os.replace(tmp, folder / name)
            if (k + 1) % 100 == 0:
                log(f"  {k + 1}/{len(missing)} ({time.perf_counter() - t0:.0f} s)")
    present = sorted(p.name for p in folder.glob("*.jpg"))
    if present == names:
        return folder
    view = folder.parent / f"{folder.name}-view{n}"
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir()
    for name in names:
        os.link(folder / name, view / name)
    return view


# -- experiments ---------------------------------------------------------------------------------
def apply_experiment(name: str) -> Callable[[], None]:
    """Monkeypatch ingest.reader (which the pipeline reads its loader from) for one experiment; returns an undo
    function."""
    import ingest.reader as reader

    pipeline = reader  # (the pipeline imports make_loader and ImageFiles from ingest.reader when it runs)
    original_loader, original_dataset = pipeline.make_loader, pipeline.ImageFiles

    def undo() -> None:
        pipeline.make_loader, pipeline.ImageFiles = original_loader, original_dataset

    if name == "nice-workers":
        def make_loader(dataset: Any, **kw: Any) -> Any:
            loader = original_loader(dataset, **kw)
            loader.worker_init_fn = _nice_worker
            return loader

        pipeline.make_loader = make_loader
    elif name == "prefetch-2":
        def make_loader(dataset: Any, **kw: Any) -> Any:
            loader = original_loader(dataset, **kw)
            if loader.num_workers:
                loader.prefetch_factor = 2
            return loader

        pipeline.make_loader = make_loader
    elif name == "no-draft":
        class NoDraft(reader.ImageFiles):
            def __init__(self, *args: Any, **kw: Any):
                super().__init__(*args, **kw)
                self.draft_size = 0

        pipeline.ImageFiles = NoDraft
    return undo


def _nice_worker(worker_id: int) -> None:
    os.nice(10)


# -- measurements --------------------------------------------------------------------------------
def decode_pass(encoder: Any, files: list[Any], batch_size: int, workers: int) -> tuple[float, float, Any]:
    """The real reader alone (DataLoader, no model): images/s, seconds to the first batch, stacked pixels."""
    import torch

    from ingest.reader import ImageFiles, make_loader

    dataset = ImageFiles(files, encoder.preprocess, known_hashes=frozenset(), max_megapixels=64.0,
                         file_timeout_s=30.0, draft_size=encoder.image_size)
    loader = make_loader(dataset, batch_size=batch_size, workers=workers, pin_memory=False)
    t0 = time.perf_counter()
    chunks, first = [], 0.0
    for batch in loader:
        first = first or time.perf_counter() - t0
        if batch.pixels is not None:
            chunks.append(batch.pixels)
    dt = time.perf_counter() - t0
    pixels = torch.cat(chunks)
    if pixels.shape[0] != len(files):
        raise RuntimeError(f"decoded {pixels.shape[0]} of {len(files)} images")
    return len(files) / dt, first, pixels


def model_pass(encoder: Any, pixels: Any, batch_size: int) -> float:
    """Seconds to embed all pre-decoded ``pixels`` in batches of ``batch_size``."""
    t0 = time.perf_counter()
    for i in range(0, pixels.shape[0], batch_size):
        encoder.encode_images(pixels[i : i + batch_size])
    return time.perf_counter() - t0


def ingest_pass(settings: Any, encoder: Any, folder: Path, n: int) -> tuple[float, float]:
    """Seconds for Index.ingest of ``folder`` into a fresh embedded store, and the optimize() share."""
    from retrieval.index import Index

    with tempfile.TemporaryDirectory(prefix="clipdex-bench-") as tmp:
        run_settings = settings.with_overrides(store={"path": tmp, "url": ""})
        # the same TorchEncoder object as the model-only passes (no reload)
        index = Index.open(run_settings, create=True, encoder=encoder)
        store = index.store
        optimize = store.optimize
        spent = [0.0]

        def timed_optimize() -> None:
            t = time.perf_counter()
            optimize()
            spent[0] += time.perf_counter() - t

        store.optimize = timed_optimize  # type: ignore[method-assign]
        try:
            t0 = time.perf_counter()
            report = index.ingest([str(folder)])
            dt = time.perf_counter() - t0
            count = store.count()
        finally:
            index.close()
    if report.indexed != n or count != n or report.failed:
        raise RuntimeError(f"ingest indexed {report.indexed}, stored {count} of {n}; failed: {report.failed[:3]}")
    return dt, spent[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="", help='"" = random init (speed does not depend on weights)')
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "int8", "bf16", "fp16"))
    parser.add_argument("--folder", type=Path, default=REPO / ".bench" / "jpegs-1024x768")
    parser.add_argument("--rounds", type=int, default=1, help="ingest passes, each between two model-only passes")
    parser.add_argument("--experiment", default="none", choices=EXPERIMENTS,
                        help="monkeypatched reader/pipeline change to apply to the ingest passes")
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed; kept for CLI)")
    args = parser.parse_args(argv)

    import torch

    from benchmarks.machine import machine
    from ingest.scan import scan
    from retrieval.model.torch_backend import TorchEncoder
    from retrieval.settings import Settings

    folder = ensure_images(args.folder.resolve(), args.images)
    workers = 0 if args.experiment == "workers-0" else 1 if args.experiment == "workers-1" else args.workers
    settings = Settings().with_overrides(
        model={"name": args.model, "pretrained": args.pretrained, "batch_size": args.batch_size,
               "device": args.device, "precision": args.precision},
        ingest={"workers": workers})
    log(f"loading {args.model} ({args.pretrained or 'random init'})")
    encoder = TorchEncoder.load(settings.model)
    files, _ = scan([str(folder)])

    decode_rate, first_batch_s, pixels = decode_pass(encoder, files, args.batch_size, workers)
    log(f"decode only: {decode_rate:.1f} img/s (first batch after {first_batch_s:.2f} s)")
    model_pass(encoder, pixels[: 2 * args.batch_size], args.batch_size)  # warm-up
    undo = apply_experiment(args.experiment)
    model_times = [model_pass(encoder, pixels, args.batch_size)]
    log(f"model only: {args.images / model_times[-1]:.2f} img/s")
    ingest_times: list[float] = []
    optimize_times: list[float] = []
    try:
        for r in range(args.rounds):
            dt, opt = ingest_pass(settings, encoder, folder, args.images)
            ingest_times.append(dt)
            optimize_times.append(opt)
            log(f"ingest round {r + 1}: {args.images / dt:.2f} img/s (optimize {opt:.2f} s)")
            model_times.append(model_pass(encoder, pixels, args.batch_size))
            log(f"model only: {args.images / model_times[-1]:.2f} img/s")
    finally:
        undo()

    ingest_rate = args.images * len(ingest_times) / sum(ingest_times)
    model_rate = args.images * len(model_times) / sum(model_times)
    pair_ratios = [(model_times[i] + model_times[i + 1]) / 2 / ingest_times[i] for i in range(len(ingest_times))]
    result = {
        "images": args.images, "model": args.model, "pretrained": args.pretrained, "batch_size": args.batch_size,
        "workers": workers, "device": str(encoder.device), "torch_threads": torch.get_num_threads(),
        "precision": encoder.precision, **machine(),
        "experiment": args.experiment, "rounds": args.rounds,
        "ingest_img_per_s": round(ingest_rate, 2), "model_only_img_per_s": round(model_rate, 2),
        "ratio": round(ingest_rate / model_rate, 3), "pair_ratios": [round(x, 3) for x in pair_ratios],
        "decode_img_per_s": round(decode_rate, 1),
        "decode_first_batch_s": round(first_batch_s, 2), "optimize_s": round(float(np.mean(optimize_times)), 3),
        "model_only_passes_img_per_s": [round(args.images / t, 2) for t in model_times],
        "ingest_passes_img_per_s": [round(args.images / t, 2) for t in ingest_times],
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
