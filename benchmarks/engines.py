"""Which engine runs the image tower fastest at the ingest batch size: torch, ONNX Runtime or OpenVINO.

One process, ViT-B-32 with random weights (seed 0, saved once as a ``local-dir:`` folder under ``.bench``;
speed does not depend on the weights), all cores. The inputs are ``--batch`` photo-like 1024x768 JPEGs (the
ingest benchmark's) through the model's own preprocessing. In alternating rounds (the order rotates), each
engine embeds the whole batch ``--reps`` times (best and median kept):

* ``torch-bf16`` / ``torch-int8`` / ``torch-fp32``: clipdex's TorchEncoder (``auto`` is bf16 with AMX or
  AVX512-BF16, int8 elsewhere);
* ``ort-fp32`` / ``ort-int8``: the exported image graph on ONNX Runtime (clipdex's session options);
* ``ov-<precision>-<hint><streams>``: the exported fp32 image graph compiled by OpenVINO's CPU plugin with
  ``INFERENCE_PRECISION_HINT`` bf16 or f32, ``PERFORMANCE_HINT`` LATENCY or THROUGHPUT and that many streams;
  with more than one stream the batch is split into as many parts, run at once (``AsyncInferQueue``);
  ``ovq-…``: the same on the exported int8 graph (ONNX Runtime's dynamic quantization).

Also each engine's worst per-vector cosine to torch fp32's vectors on the same inputs (quality holds at
>= 0.99, as benchmarks/precision_drift.py demands) and the time to get it ready. One JSON line with every
round, the CPU, its flags and the load average.

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.engines --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_ENGINES = ("torch-bf16,torch-int8,ort-fp32,ort-int8,ov-bf16-latency1,ov-bf16-throughput2,"
                   "ov-f32-latency1,ov-f32-throughput2")


def log(msg: str) -> None:
    print(f"[engines] {msg}", file=sys.stderr, flush=True)


def photo_pixels(preprocess: Callable[[Any], Any], n: int) -> np.ndarray:
    """``n`` photo-like 1024x768 JPEGs (benchmarks/ingest.py's) decoded and preprocessed: (n, 3, H, W) float32."""
    from PIL import Image

    from benchmarks.ingest import make_jpeg

    rows = []
    with tempfile.TemporaryDirectory(prefix="clipdex-engines-") as tmp:
        for i in range(n):
            path = Path(tmp) / f"{i}.jpg"
            make_jpeg(path, i)
            with Image.open(path) as im:
                rows.append(np.asarray(preprocess(im.convert("RGB")), dtype=np.float32))
    return np.stack(rows)


def openvino_engine(graph: Path, precision: str, hint: str, streams: int, cache: Path | None) -> Callable[[np.ndarray],
                                                                                                          np.ndarray]:
    """A function embedding a batch with OpenVINO: ``graph`` (ONNX) compiled for the CPU with these settings."""
    import openvino as ov

    core = ov.Core()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint.upper(),
                              "NUM_STREAMS": str(streams)}
    if cache is not None:
        config["CACHE_DIR"] = str(cache)
    compiled = core.compile_model(str(graph), "CPU", config)
    if streams == 1:
        request = compiled.create_infer_request()

        def run_one(batch: np.ndarray) -> np.ndarray:
            return np.array(request.infer({0: batch})[0], dtype=np.float32)

        return run_one
    queue = ov.AsyncInferQueue(compiled, streams)

    def run_many(batch: np.ndarray) -> np.ndarray:
        parts = np.array_split(batch, streams)
        out: list[np.ndarray | None] = [None] * len(parts)

        def done(request: Any, index: int) -> None:
            out[index] = np.array(request.get_output_tensor(0).data, dtype=np.float32)

        queue.set_callback(done)
        for i, part in enumerate(parts):
            queue.start_async({0: np.ascontiguousarray(part)}, i)
        queue.wait_all()
        return np.concatenate(out)  # type: ignore[arg-type]

    return run_many


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=64, help="images per batch (the ingest default, 64)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3, help="batches per engine per round")
    parser.add_argument("--engines", default=DEFAULT_ENGINES)
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed)")
    args = parser.parse_args(argv)

    import torch

    from benchmarks.machine import machine
    from benchmarks.precision_speed import model_folder
    from retrieval.model.loader import _usable_export
    from retrieval.model.onnx_backend import session_options
    from retrieval.model.torch_backend import TorchEncoder
    from retrieval.settings import ModelSettings

    folder = model_folder(REPO / ".bench", args.arch)
    settings = ModelSettings(name=f"local-dir:{folder}", pretrained="", device="cpu", precision="fp32",
                             batch_size=args.batch)
    reference = TorchEncoder.load(settings)
    pixels = photo_pixels(reference.preprocess, args.batch)
    want = reference.encode_images(torch.from_numpy(pixels))
    del reference
    export = _usable_export(settings, log)
    engines = args.engines.split(",")
    runs: dict[str, Callable[[], np.ndarray]] = {}
    ready: dict[str, float] = {}
    cosine: dict[str, float] = {}
    versions: dict[str, str] = {"torch": torch.__version__}
    for engine in engines:
        kind, precision, *rest = engine.split("-")
        t0 = time.perf_counter()
        if kind == "torch":
            enc = TorchEncoder.load(settings.model_copy(update={"precision": precision}))
            batch = torch.from_numpy(pixels)
            enc.encode_images(batch[:2])  # the int8 conversion happens on the first batch
            runs[engine] = lambda enc=enc, batch=batch: enc.encode_images(batch)
        elif kind == "ort":
            import onnxruntime as ort

            versions["onnxruntime"] = ort.__version__
            sess = ort.InferenceSession(export.read("visual", precision), session_options(),
                                        providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            runs[engine] = lambda sess=sess, name=name: _unit(sess.run(None, {name: pixels})[0])
        elif kind in ("ov", "ovq"):
            import openvino

            versions["openvino"] = openvino.__version__
            hint, streams = rest[0].rstrip("0123456789"), int(rest[0][len(rest[0].rstrip("0123456789")):] or 1)
            graph = export.folder / export.entry("visual", "int8" if kind == "ovq" else "fp32")["file"]
            fn = openvino_engine(graph, precision, hint, streams, None)
            runs[engine] = lambda fn=fn: _unit(fn(pixels))
        else:
            raise SystemExit(f"unknown engine {engine}")
        vectors = runs[engine]()  # also the warm-up
        ready[engine] = round(time.perf_counter() - t0, 2)
        cosine[engine] = round(float((np.asarray(vectors) * want).sum(-1).min()), 5)
        log(f"{engine}: ready in {ready[engine]} s, worst cosine to torch fp32 {cosine[engine]}")

    rounds: list[dict[str, dict[str, float]]] = []
    for r in range(args.rounds):
        order = engines[r % len(engines):] + engines[: r % len(engines)]
        row: dict[str, dict[str, float]] = {}
        for engine in order:
            time.sleep(0.3)  # let the previous engine's threads go idle
            times = []
            for _ in range(args.reps):
                t = time.perf_counter()
                runs[engine]()
                times.append(time.perf_counter() - t)
            row[engine] = {"best_img_per_s": round(args.batch / min(times), 1),
                           "median_img_per_s": round(args.batch / statistics.median(times), 1)}
        rounds.append({e: row[e] for e in engines})
        log(f"round {r + 1} (load {machine()['loadavg']}): "
            + ", ".join(f"{e} {row[e]['best_img_per_s']}" for e in engines))
    base = engines[0]
    result = {"arch": args.arch, "batch": args.batch, "reps": args.reps, "threads": torch.get_num_threads(),
              **machine(), "versions": versions, "ready_s": ready, "cos_to_fp32_min": cosine, "rounds": rounds,
              "median_best_img_per_s": {e: statistics.median(r[e]["best_img_per_s"] for r in rounds)
                                        for e in engines},
              f"ratio_to_{base}_per_round": {e: [round(r[e]["best_img_per_s"] / r[base]["best_img_per_s"], 3)
                                                for r in rounds] for e in engines}}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
