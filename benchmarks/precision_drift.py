"""How far int8 and bf16 vectors drift from fp32 ones, and which precisions may share a collection.

On a labelled set (Fashion-MNIST test split by default, needs Debian's dataset-fashion-mnist) the same
model is loaded at every precision (fp32, int8, bf16), every image and class prompt is embedded with each,
and this prints one JSON line with: the cosine of each precision's vectors to fp32's (min / mean) on the
eval images, on the committed samples/ and on photo-like 1024x768 JPEGs it writes; the metrics of
``clipdex eval`` at each precision throughout; and every mix, a collection of image vectors at one
precision searched by queries at another (zero-shot and t2i with the query precision's prompts, i2i with
its query images), with each metric's largest drop against fp32 throughout.

    .venv/bin/python benchmarks/precision_drift.py --model models/fmnist-tiny --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def mixed_i2i(queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray) -> float:
    """i2i precision@10 of ``queries`` (one precision) against ``gallery`` (the other), itself excluded."""
    from retrieval import metrics

    out = []
    for start in range(0, len(queries), 1024):
        rows = slice(start, min(start + 1024, len(queries)))
        scores = queries[rows] @ gallery.T
        out.append(metrics.precision_at_k(scores, labels[rows], labels, 10, exclude=np.arange(rows.start, rows.stop)))
    return float(np.concatenate(out).mean())


def ort_encoder(settings: object, precision: str) -> object:
    """The engine's ONNX Runtime encoder of the model at ``precision`` (exported on first use)."""
    from retrieval.model.loader import _usable_export, identity
    from retrieval.model.onnx_backend import OnnxEncoder

    export = _usable_export(settings, lambda line: print(f"[drift] {line}", file=sys.stderr))
    return OnnxEncoder(export, identity(settings, export), {"image": precision, "text": precision})


def photo_cosines(encoders: dict, folder: Path) -> dict[str, dict[str, float]]:
    """Per precision: min/mean cosine to fp32 of the image vectors of every picture below ``folder``."""
    from ingest.decode import load_image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    images = [load_image(str(f), max_megapixels=64, draft_size=max(e.image_size for e in encoders.values()))
              for f in files]
    ref = np.concatenate([encoders["fp32"].encode_pil(images[i:i + 64]) for i in range(0, len(images), 64)])
    out = {"images": len(images)}
    for name, encoder in encoders.items():
        if name != "fp32":
            vecs = np.concatenate([encoder.encode_pil(images[i:i + 64]) for i in range(0, len(images), 64)])
            cos = np.sum(ref * vecs, axis=1)
            out[name] = {"min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 5)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "fmnist-tiny"), help="a model folder")
    parser.add_argument("--data", default=None, help="Fashion-MNIST IDX folder (default: Debian's)")
    parser.add_argument("--limit", type=int, default=0, help="first N test images (0 = all 10,000)")
    parser.add_argument("--photos", type=int, default=48, help="photo-like JPEGs to write and compare (0: none)")
    parser.add_argument("--precisions", default="fp32,int8,bf16,ort-int8", help="torch ones, ort-fp32, ort-int8")
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed)")
    args = parser.parse_args(argv)

    from benchmarks.ingest import ensure_images
    from benchmarks.machine import machine
    from retrieval.datasets import class_prompts, fashion_mnist
    from retrieval.evaluate import embed_images, embed_texts, label_metrics
    from retrieval.model.torch_backend import TorchEncoder
    from retrieval.settings import ModelSettings

    data = fashion_mnist(args.data, "test").subset(args.limit)
    prompts = class_prompts(data.class_names, data.templates)
    flat = [p for group in prompts for p in group]
    precisions = args.precisions.split(",")
    if precisions[0] != "fp32":
        precisions.insert(0, "fp32")
    encoders, vecs = {}, {}
    for precision in precisions:
        settings = ModelSettings(name=f"local-dir:{Path(args.model).resolve()}", pretrained="", device="cpu",
                                 precision=precision.removeprefix("ort-"))
        if precision.startswith("ort-"):  # the ONNX Runtime query path (retrieval.model.onnx_backend)
            encoder = ort_encoder(settings, precision.removeprefix("ort-"))
            images = np.concatenate([encoder.encode_pil([data.load(i) for i in range(s, min(s + 256, len(data)))])
                                     for s in range(0, len(data), 256)])
        else:
            encoder = TorchEncoder.load(settings)
            images = embed_images(encoder, data)
        encoders[precision] = encoder
        vecs[precision] = (images, embed_texts(encoder, flat).reshape(len(prompts), len(prompts[0]), -1))
    labels = data.labels
    img32, txt32 = vecs["fp32"]
    result: dict = {"model": Path(args.model).name, "images": len(data), **machine()}
    for name, (img, txt) in vecs.items():
        if name != "fp32":
            img_cos, txt_cos = np.sum(img32 * img, axis=1), np.sum(txt32 * txt, axis=-1).ravel()
            result[f"{name}_cos"] = {"image_min": round(float(img_cos.min()), 5),
                                     "image_mean": round(float(img_cos.mean()), 5),
                                     "text_min": round(float(txt_cos.min()), 5),
                                     "text_mean": round(float(txt_cos.mean()), 5)}
    result["metrics"] = {name: {k: round(v, 4) for k, v in label_metrics(i, labels, t).items()}
                         for name, (i, t) in vecs.items()}
    mixes = {}
    for store in precisions:
        for query in precisions:
            if store == query:
                continue
            mixed = label_metrics(vecs[store][0], labels, vecs[query][1])  # query prompts against store images
            mixed["i2i_precision@10"] = mixed_i2i(vecs[query][0], vecs[store][0], labels)
            del mixed["i2i_map"]  # (the full-ranking mAP is computed within one precision only)
            mixes[f"{store}_store_{query}_queries"] = {k: round(v, 4) for k, v in mixed.items()}
    result["mixed"] = mixes
    base = result["metrics"]["fp32"]
    runs = [*(result["metrics"][p] for p in precisions[1:]), *mixes.values()]
    result["largest_drop_points"] = round(100 * max(base[k] - run[k] for run in runs for k in run), 3)
    result["samples_cos"] = photo_cosines(encoders, REPO / "samples")
    if args.photos:
        result["photos_cos"] = photo_cosines(encoders, ensure_images(REPO / ".bench" / "jpegs-1024x768", args.photos))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
