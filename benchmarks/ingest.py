"""End-to-end ingest throughput vs. model-only throughput (issue: "benchmarks/ingest.py --json").

Builds (or reuses) a folder of realistic 1024x768 JPEGs, then in one process, with one ingest encoder per
variant (``load_ingest_encoder``: torch, or its image tower on OpenVINO):

* ``decode_img_per_s``: the real reader (``ingest.reader`` DataLoader) iterated without the model;
* ``model_only_img_per_s``: the same encoder and batch size on the pre-decoded, preprocessed tensors;
* ``ingest_img_per_s``: ``Index.ingest`` into a fresh embedded store in a temp dir, scan to last upsert
  (the final ``optimize()`` included; its share is reported as ``optimize_s``).

Model-only passes run right before and right after each ingest so both see the same machine noise;
``ratio`` = ingest / mean(model-only). Prints one JSON line on stdout; progress goes to stderr.
``--experiment`` monkeypatches the loader (never the source files) to try reader/pipeline changes, or changes
the DataLoader workers or the OpenVINO compile settings; ``--variants torch,openvino+workers-1`` runs several
engine/experiment pairs side by side in alternating rounds (every round in the JSON's ``variants``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

EXPERIMENTS = ("none", "nice-workers", "workers-1", "workers-0", "workers-3", "no-draft", "prefetch-2",
               "ov-no-pinning", "ov-streams-1", "ov-latency")
OV_EXPERIMENTS: dict[str, dict[str, Any]] = {
    "ov-no-pinning": {"ENABLE_CPU_PINNING": False},  # OpenVINO's stream threads left to the OS scheduler
    "ov-streams-1": {"NUM_STREAMS": 1},  # one stream of all cores instead of the hint's choice
    "ov-latency": {"PERFORMANCE_HINT": "LATENCY"},
}
"""Changes to the OpenVINO engine's compile settings (retrieval.model.openvino_backend.CONFIG)."""


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


@contextlib.contextmanager
def openvino_config(experiment: str) -> Iterator[None]:
    """The OpenVINO engine's compile settings with ``experiment``'s changes, while an encoder is loaded."""
    changes = OV_EXPERIMENTS.get(experiment)
    if not changes:
        yield
        return
    from retrieval.model import openvino_backend

    original = dict(openvino_backend.CONFIG)
    openvino_backend.CONFIG.update(changes)
    try:
        yield
    finally:
        openvino_backend.CONFIG.clear()
        openvino_backend.CONFIG.update(original)


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
        # the same encoder object as the model-only passes (no reload)
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


def parse_variant(text: str) -> tuple[str, str]:
    """``engine[+experiment]`` (``openvino+workers-1``) as (engine, experiment)."""
    engine, _, experiment = text.partition("+")
    if engine not in ("auto", "torch", "openvino") or (experiment or "none") not in EXPERIMENTS:
        raise SystemExit(f"unknown variant {text!r}: engine auto/torch/openvino, experiment one of {EXPERIMENTS}")
    return engine, experiment or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="", help='"" = random init, seed 0, saved once under .bench as a '
                        "local-dir: folder (so it exports; speed does not depend on the weights)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "int8", "bf16", "fp16"))
    parser.add_argument("--folder", type=Path, default=REPO / ".bench" / "jpegs-1024x768")
    parser.add_argument("--rounds", type=int, default=1, help="ingest passes per variant, each followed by a "
                        "model-only pass (and one model-only pass first)")
    parser.add_argument("--experiment", default="none", choices=EXPERIMENTS,
                        help="monkeypatched reader/pipeline change to apply to the ingest passes (one variant)")
    parser.add_argument("--variants", default="",
                        help="comma-separated ENGINE[+EXPERIMENT] (engine auto/torch/openvino: [model] "
                             "ingest_engine) run side by side in alternating rounds, e.g. torch,openvino; "
                             "default: auto with --experiment")
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed; kept for CLI)")
    args = parser.parse_args(argv)

    import torch

    from benchmarks.machine import machine
    from ingest.scan import scan
    from retrieval.model.loader import load_ingest_encoder
    from retrieval.settings import Settings

    variants = [parse_variant(v) for v in args.variants.split(",")] if args.variants else [("auto", args.experiment)]
    folder = ensure_images(args.folder.resolve(), args.images)
    name = args.model
    if not args.pretrained and ":" not in name:
        from benchmarks.precision_speed import model_folder

        name = f"local-dir:{model_folder(REPO / '.bench', args.model)}"
    base = Settings().with_overrides(
        model={"name": name, "pretrained": args.pretrained, "batch_size": args.batch_size,
               "device": args.device, "precision": args.precision})
    labels = [f"{e}+{x}" if x != "none" else e for e, x in variants]
    settings, encoders = {}, {}
    for label, (engine, experiment) in zip(labels, variants, strict=True):
        workers = {"workers-0": 0, "workers-1": 1, "workers-3": 3}.get(experiment, args.workers)
        settings[label] = base.with_overrides(model={"ingest_engine": engine}, ingest={"workers": workers})
        log(f"loading {args.model} ({args.pretrained or 'random init'}) for {label}")
        with openvino_config(experiment):
            encoders[label] = load_ingest_encoder(settings[label].model, log=log)
        log(f"{label}: {encoders[label].engines['image']}")
    files, _ = scan([str(folder)])

    first = encoders[labels[0]]
    decode_rate, first_batch_s, pixels = decode_pass(first, files, args.batch_size, args.workers)
    log(f"decode only: {decode_rate:.1f} img/s (first batch after {first_batch_s:.2f} s)")
    model_times: dict[str, list[float]] = {}
    ingest_times: dict[str, list[float]] = {label: [] for label in labels}
    optimize_times: dict[str, list[float]] = {label: [] for label in labels}
    for label in labels:
        model_pass(encoders[label], pixels[: 2 * args.batch_size], args.batch_size)  # warm-up
        model_times[label] = [model_pass(encoders[label], pixels, args.batch_size)]
        log(f"{label} model only: {args.images / model_times[label][-1]:.2f} img/s")
    rounds = []
    for r in range(args.rounds):
        order = labels[r % len(labels):] + labels[: r % len(labels)]
        for label in order:
            undo = apply_experiment(variants[labels.index(label)][1])
            try:
                dt, opt = ingest_pass(settings[label], encoders[label], folder, args.images)
            finally:
                undo()
            ingest_times[label].append(dt)
            optimize_times[label].append(opt)
            model_times[label].append(model_pass(encoders[label], pixels, args.batch_size))
            log(f"round {r + 1} {label}: ingest {args.images / dt:.2f} img/s, then model only "
                f"{args.images / model_times[label][-1]:.2f} img/s (load {machine()['loadavg']})")
        rounds.append({label: round(args.images / ingest_times[label][-1], 2) for label in labels})

    def summary(label: str) -> dict[str, Any]:
        ingest, model = ingest_times[label], model_times[label]
        ingest_rate = args.images * len(ingest) / sum(ingest)
        model_rate = args.images * len(model) / sum(model)
        return {"engine": encoders[label].engines["image"], "workers": settings[label].ingest.workers,
                "ingest_img_per_s": round(ingest_rate, 2), "model_only_img_per_s": round(model_rate, 2),
                "ratio": round(ingest_rate / model_rate, 3),
                "pair_ratios": [round((model[i] + model[i + 1]) / 2 / ingest[i], 3) for i in range(len(ingest))],
                "optimize_s": round(float(np.mean(optimize_times[label])), 3) if ingest else 0.0,
                "model_only_passes_img_per_s": [round(args.images / t, 2) for t in model],
                "ingest_passes_img_per_s": [round(args.images / t, 2) for t in ingest]}

    by_variant = {label: summary(label) for label in labels}
    result = {
        "images": args.images, "model": args.model, "pretrained": args.pretrained, "batch_size": args.batch_size,
        "device": str(first.device), "torch_threads": torch.get_num_threads(), "precision": first.precision,
        **machine(), "experiment": variants[0][1], "rounds": args.rounds,
        **by_variant[labels[0]],
        "decode_img_per_s": round(decode_rate, 1), "decode_first_batch_s": round(first_batch_s, 2),
        "variants": by_variant, "round_ingest_img_per_s": rounds, "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
