"""Which engine and precision embeds fastest on this CPU: torch fp32 / int8 / bf16 against ONNX Runtime int8.

One process, ViT-B-32 with random weights (seed 0, saved once as a ``local-dir:`` folder under ``.bench``;
speed does not depend on the weights), all cores. In alternating rounds, each engine embeds the same batch
of 32 preprocessed images (model only, best of ``--reps``) and one short query text (trimmed to its real
length, median of ``--reps``). Also the cosine of each engine's image vectors to torch fp32's and the
wall time to get each encoder ready (load, and the int8/bf16 conversion on its first batch). Prints one
JSON line with every round's figure, the CPU and its flags.

    .venv/bin/python benchmarks/precision_speed.py --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

QUERY = "a dog on a beach"


def model_folder(root: Path, arch: str) -> Path:
    """A random-weights ``arch`` saved as clipdex saves models (made once)."""
    folder = root / f"{arch.lower()}-random"
    if (folder / "open_clip_model.safetensors").is_file():
        return folder
    import torch

    from retrieval.model.tokenizer import model_config
    from retrieval.model.torch_backend import open_clip, save_model_folder

    torch.manual_seed(0)
    return save_model_folder(open_clip.create_model(arch), model_config(arch), folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--engines", default="torch-int8,torch-bf16,ort-int8,torch-fp32")
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed)")
    args = parser.parse_args(argv)

    import torch

    from benchmarks.machine import machine
    from retrieval.model.torch_backend import TorchEncoder
    from retrieval.settings import ModelSettings

    folder = model_folder(REPO / ".bench", args.arch)
    name = f"local-dir:{folder}"
    engines = args.engines.split(",")
    ready: dict[str, float] = {}
    image_fns, text_fns, vectors = {}, {}, {}
    torch.manual_seed(1)
    pixels = torch.randn(32, 3, 224, 224)
    for engine in engines:
        kind, precision = engine.split("-")
        t0 = time.perf_counter()
        settings = ModelSettings(name=name, pretrained="", device="cpu", precision=precision)
        if kind == "torch":
            enc = TorchEncoder.load(settings)
            enc.encode_images(pixels[:1])
            enc.encode_texts(["warm-up"])
            image_fns[engine] = lambda enc=enc: enc.encode_images(pixels)
            text_fns[engine] = lambda enc=enc: enc._encode_texts([QUERY])
        else:
            from retrieval.model.loader import _usable_export
            from retrieval.model.onnx_backend import OnnxEncoder

            export = _usable_export(settings, lambda line: print(f"[speed] {line}", file=sys.stderr))
            enc = OnnxEncoder(export, None, {"image": precision, "text": precision})  # type: ignore[arg-type]
            array = pixels.numpy()
            enc._run("image", array[:1])
            enc._run("text", enc.cut(enc.tokenizer([QUERY])))
            image_fns[engine] = lambda enc=enc, array=array: enc._run("image", array)
            text_fns[engine] = lambda enc=enc: enc._run("text", enc.cut(enc.tokenizer([QUERY])))
        ready[engine] = round(time.perf_counter() - t0, 2)
        vectors[engine] = np.asarray(image_fns[engine]())
        print(f"[speed] {engine} ready in {ready[engine]} s", file=sys.stderr, flush=True)

    rounds: list[dict[str, dict[str, float]]] = []
    for r in range(args.rounds):
        order = engines[r % len(engines):] + engines[: r % len(engines)]
        row = {}
        for engine in order:
            times = []
            for _ in range(args.reps):
                t = time.perf_counter()
                image_fns[engine]()
                times.append(time.perf_counter() - t)
            texts = []
            for _ in range(max(args.reps, 5)):
                t = time.perf_counter()
                text_fns[engine]()
                texts.append(time.perf_counter() - t)
            row[engine] = {"img_per_s": round(32 / min(times), 1), "text_ms": round(1000 * statistics.median(texts), 1)}
        rounds.append(row)
        print(f"[speed] round {r + 1}: {json.dumps(row)}", file=sys.stderr, flush=True)
    ref = vectors.get("torch-fp32")
    result = {"arch": args.arch, "batch": 32, "threads": torch.get_num_threads(), **machine(), "ready_s": ready,
              "rounds": rounds,
              "img_per_s_median": {e: statistics.median(r[e]["img_per_s"] for r in rounds) for e in engines},
              "text_ms_median": {e: statistics.median(r[e]["text_ms"] for r in rounds) for e in engines}}
    if ref is not None:
        result["image_cos_to_fp32_min"] = {e: round(float(np.sum(ref * v, axis=1).min()), 5)
                                           for e, v in vectors.items()}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
