"""How far int8 vectors drift from fp32 ones, and whether the two may share a collection.

On a labelled set (Fashion-MNIST test split by default, needs Debian's dataset-fashion-mnist) the same
model is loaded at fp32 and at int8, every image and class prompt is embedded with both, and this prints
one JSON line with the cosine between the two versions of each vector (min / mean) and the metrics of
``clipdex eval`` three ways: fp32 throughout, int8 throughout, and mixed (a collection of fp32 image
vectors searched by int8 queries: zero-shot and t2i with int8 prompts, i2i with int8 query images).

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "fmnist-tiny"), help="a model folder")
    parser.add_argument("--data", default=None, help="Fashion-MNIST IDX folder (default: Debian's)")
    parser.add_argument("--limit", type=int, default=0, help="first N test images (0 = all 10,000)")
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed)")
    args = parser.parse_args(argv)

    from retrieval.datasets import class_prompts, fashion_mnist
    from retrieval.evaluate import embed_images, embed_texts, label_metrics
    from retrieval.model.torch_backend import TorchEncoder
    from retrieval.settings import ModelSettings

    data = fashion_mnist(args.data, "test").subset(args.limit)
    prompts = class_prompts(data.class_names, data.templates)
    flat = [p for group in prompts for p in group]
    vecs = {}
    for precision in ("fp32", "int8"):
        encoder = TorchEncoder.load(ModelSettings(name=f"local-dir:{Path(args.model).resolve()}", pretrained="",
                                             device="cpu", precision=precision))
        vecs[precision] = (embed_images(encoder, data), embed_texts(encoder, flat).reshape(len(prompts),
                                                                                           len(prompts[0]), -1))
    (img32, txt32), (img8, txt8) = vecs["fp32"], vecs["int8"]
    labels = data.labels
    img_cos = np.sum(img32 * img8, axis=1)
    txt_cos = np.sum(txt32 * txt8, axis=-1).ravel()
    metrics = {name: {k: round(v, 4) for k, v in label_metrics(i, labels, t).items()}
               for name, (i, t) in vecs.items()}
    mixed = label_metrics(img32, labels, txt8)  # int8 prompts against fp32 images
    mixed["i2i_precision@10"] = mixed_i2i(img8, img32, labels)  # int8 query images against fp32 images
    del mixed["i2i_map"]  # (the full-ranking mAP is computed within one precision only)
    result = {"model": Path(args.model).name, "images": len(data),
              "image_cos_min": round(float(img_cos.min()), 5), "image_cos_mean": round(float(img_cos.mean()), 5),
              "text_cos_min": round(float(txt_cos.min()), 5), "text_cos_mean": round(float(txt_cos.mean()), 5),
              "fp32": metrics["fp32"], "int8": metrics["int8"],
              "mixed_int8_queries_fp32_store": {k: round(v, 4) for k, v in mixed.items()}}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
