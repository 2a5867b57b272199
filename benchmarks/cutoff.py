"""The adaptive relevance cutoff on Fashion-MNIST (issue 16): F1 of the returned set per class prompt.

The bundled model (``--config``, default configs/fmnist-tiny.toml) embeds the full test split (10,000
images); the vectors go into a real embedded store. For each of the 10 class prompts ("a photo of a
{class}.") the returned set is compared with the class's 1,000 true members (F1):

* ``auto``: ``Index.search(text=prompt, relevant=True, limit=10000)``, the product path (a random sample
  of the store scored against the query, :data:`retrieval.search.cutoff.DEFAULT`);
* each candidate method of :data:`retrieval.search.cutoff.METHODS` on the same sample (``methods``);
* top-k for several k (``topk``), and the single fixed cosine threshold chosen in hindsight with the
  labels, the best over all thresholds for the mean F1 of the 10 prompts (``best_fixed``).

Prints one JSON line: ``{"auto_mean_f1", "best_fixed_mean_f1", "best_topk_mean_f1", "per_class": {...}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]  # benchmarks/ingest.py
sys.path.insert(0, str(REPO))  # would shadow the ingest package

from retrieval import Index, load_settings  # noqa: E402
from retrieval.datasets import FMNIST_CLASSES, FMNIST_TEMPLATES, fashion_mnist  # noqa: E402
from retrieval.evaluate import embed_images  # noqa: E402
from retrieval.model.torch_backend import TorchEncoder  # noqa: E402
from retrieval.search import cutoff  # noqa: E402
from retrieval.store import CollectionMeta  # noqa: E402

TOPK = (10, 100, 500, 1000, 2000)


def f1(returned: np.ndarray, relevant: np.ndarray) -> float:
    """F1 of a boolean returned-set mask against a boolean relevance mask."""
    tp = float(np.sum(returned & relevant))
    if tp == 0:
        return 0.0
    precision, recall = tp / returned.sum(), tp / relevant.sum()
    return 2 * precision * recall / (precision + recall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "fmnist-tiny.toml"))
    parser.add_argument("--data", default=None, help="Fashion-MNIST folder [default: the Debian package's]")
    parser.add_argument("--template", default=FMNIST_TEMPLATES[0])
    parser.add_argument("--json", action="store_true", help="print the one JSON line only (the default too)")
    args = parser.parse_args()
    data = fashion_mnist(args.data, "test")
    labels = np.asarray(data.labels)
    with tempfile.TemporaryDirectory(prefix="clipdex-cutoff-") as tmp:
        settings = load_settings(args.config).with_overrides(store={"path": tmp, "collection": "cutoff"})
        encoder = TorchEncoder.load(settings.model)
        vectors = embed_images(encoder, data)
        with Index.open(settings, create=True, encoder=encoder) as index:
            ident = encoder.identity
            index.store.create(CollectionMeta(ident.name, ident.pretrained, ident.dim, precision=encoder.precision,
                                              weights=ident.weights))
            ids = [str(uuid.UUID(int=i + 1)) for i in range(len(vectors))]
            for s in range(0, len(ids), 1000):
                index.store.upsert(ids[s:s + 1000], vectors[s:s + 1000],
                                   [{"path": f"/fmnist/{i}.png", "label": int(labels[i])} for i in range(s, s + 1000)])
            prompts = [args.template.format(name) for name in FMNIST_CLASSES]
            queries = encoder.encode_texts(prompts)
            auto_sets = []
            for prompt in prompts:
                hits = index.search(text=prompt, relevant=True, limit=len(ids), ocr=False)
                auto_sets.append({int(uuid.UUID(h.id).int) - 1 for h in hits})
            sample = index.store.sample_vectors(cutoff.SAMPLE)  # type: ignore[attr-defined]
    scores = queries @ vectors.T  # (10, N), what the store's exact search scores
    truth = [labels == c for c in range(len(prompts))]
    per_class: dict[str, dict[str, float]] = {}
    auto = []
    for c, name in enumerate(FMNIST_CLASSES):
        mask = np.zeros(len(labels), bool)
        mask[list(auto_sets[c])] = True
        auto.append(f1(mask, truth[c]))
        per_class[name] = {"auto_f1": round(auto[-1], 4), "auto_returned": int(mask.sum())}
    timings = []  # the default method's threshold for one query, as a --relevant search computes it
    for c in range(len(prompts)):
        start = time.perf_counter()
        cutoff.METHODS[cutoff.DEFAULT](sample @ queries[c])
        timings.append((time.perf_counter() - start) * 1000)
    methods = {}
    for m, fn in cutoff.METHODS.items():
        vals = [f1(scores[c] >= fn(sample @ queries[c]), truth[c]) for c in range(len(prompts))]
        methods[m] = round(float(np.mean(vals)), 4)
    topk = {}
    for k in TOPK:
        vals = []
        for c in range(len(prompts)):
            mask = np.zeros(len(labels), bool)
            mask[np.argsort(-scores[c])[:k]] = True
            vals.append(f1(mask, truth[c]))
        topk[k] = round(float(np.mean(vals)), 4)
    grid = np.unique(np.round(scores, 4))
    grid = grid[:: max(1, len(grid) // 2000)]
    fixed = [(float(np.mean([f1(scores[c] >= t, truth[c]) for c in range(len(prompts))])), float(t)) for t in grid]
    best_f1, best_t = max(fixed)
    for c, name in enumerate(FMNIST_CLASSES):
        per_class[name]["best_fixed_f1"] = round(f1(scores[c] >= best_t, truth[c]), 4)
        per_class[name]["top1000_f1"] = round(f1(np.isin(np.arange(len(labels)), np.argsort(-scores[c])[:1000]),
                                                 truth[c]), 4)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    print(json.dumps({
        "auto_mean_f1": round(float(np.mean(auto)), 4), "best_fixed_mean_f1": round(best_f1, 4),
        "best_fixed_threshold": round(best_t, 4), "best_topk_mean_f1": max(topk.values()),
        "topk_mean_f1": topk, "methods_mean_f1": methods, "auto_method": cutoff.DEFAULT,
        "threshold_ms_p50": round(float(np.median(timings)), 2),
        "sample": int(len(sample)), "images": int(len(labels)), "template": args.template, "per_class": per_class,
        "cpu": cpu, "amx_bf16": "amx_bf16" in Path("/proc/cpuinfo").read_text(), "loadavg": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
