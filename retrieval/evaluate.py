"""The retrieval benchmark: embed an :class:`ImageSet` with a :class:`TorchEncoder` and score it.

Captioned sets give ``t2i_recall@K`` / ``i2t_recall@K``; labelled sets give ``zero_shot_accuracy``
(prompt-ensembled class vectors), ``t2i_precision@10`` (every class prompt as a query),
``i2i_precision@10`` and ``i2i_map`` (every image as a query against all others), and, given a
training split (or a held-out part of the set itself), the probes ``knn_accuracy`` and
``linear_probe_accuracy`` (:mod:`retrieval.probes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from retrieval import _torchvision_shim, metrics, probes  # noqa: F401  (shim before open_clip)
from retrieval.datasets import ImageSet, class_prompts
from retrieval.model.torch_backend import TorchEncoder

RECALL_KS = (1, 5, 10)
CHUNK = 1024


def embed_images(encoder: TorchEncoder, data: ImageSet, batch_size: int = 256,
                 on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Unit vectors for every image of ``data``, through the encoder's own preprocessing."""
    out = []
    for start in range(0, len(data), batch_size):
        stop = min(start + batch_size, len(data))
        pixels = torch.stack([encoder.preprocess(data.load(i)) for i in range(start, stop)])
        out.append(encoder.encode_images(pixels))
        if on_batch:
            on_batch(stop - start)
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), dtype=np.float32)


def embed_texts(encoder: TorchEncoder, texts: list[str], batch_size: int = 256) -> np.ndarray:
    return np.concatenate([encoder.encode_texts(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)])


def _chunks(n: int) -> Iterator[slice]:
    for start in range(0, n, CHUNK):
        yield slice(start, min(start + CHUNK, n))


def recall_metrics(image_vecs: np.ndarray, text_vecs: np.ndarray, text_image: np.ndarray) -> dict[str, float]:
    """t2i / i2t recall@1/5/10 for texts ``text_vecs`` captioning images ``text_image``."""
    n_img = len(image_vecs)
    t2i = {k: [] for k in RECALL_KS}
    i2t = {k: [] for k in RECALL_KS}
    for rows in _chunks(len(text_vecs)):
        scores = text_vecs[rows] @ image_vecs.T
        pos = metrics.t2i_positives(text_image[rows], n_img)
        for k in RECALL_KS:
            t2i[k].append(metrics.hits_at_k(scores, pos, k))
    for rows in _chunks(n_img):
        scores = image_vecs[rows] @ text_vecs.T
        pos = metrics.i2t_positives(text_image, n_img)[rows]
        for k in RECALL_KS:
            i2t[k].append(metrics.hits_at_k(scores, pos, k))
    out = {f"t2i_recall@{k}": float(np.concatenate(t2i[k]).mean()) for k in RECALL_KS}
    out.update({f"i2t_recall@{k}": float(np.concatenate(i2t[k]).mean()) for k in RECALL_KS})
    return out


def label_metrics(image_vecs: np.ndarray, labels: np.ndarray, prompt_vecs: np.ndarray) -> dict[str, float]:
    """Zero-shot accuracy, t2i/i2i precision@10 and i2i mAP; ``prompt_vecs`` is (classes, templates, dim)."""
    n_cls, n_tmpl, dim = prompt_vecs.shape
    class_vecs = metrics.class_vectors(prompt_vecs)
    zs, p_i2i, ap = [], [], []
    for rows in _chunks(len(image_vecs)):
        q = image_vecs[rows]
        zs.append(metrics.zero_shot_correct(q, class_vecs, labels[rows]))
        scores = q @ image_vecs.T
        self_idx = np.arange(rows.start, rows.stop)
        p_i2i.append(metrics.precision_at_k(scores, labels[rows], labels, 10, exclude=self_idx))
        ap.append(metrics.average_precision(scores, labels[rows], labels, exclude=self_idx))
    prompts = prompt_vecs.reshape(n_cls * n_tmpl, dim)
    prompt_labels = np.repeat(np.arange(n_cls), n_tmpl)
    p_t2i = metrics.precision_at_k(prompts @ image_vecs.T, prompt_labels, labels, 10)
    return {"zero_shot_accuracy": float(np.concatenate(zs).mean()),
            "t2i_precision@10": float(p_t2i.mean()),
            "i2i_precision@10": float(np.concatenate(p_i2i).mean()),
            "i2i_map": float(np.concatenate(ap).mean())}


def probe_metrics(train_vecs: np.ndarray, train_labels: np.ndarray, test_vecs: np.ndarray,
                  test_labels: np.ndarray) -> dict[str, float]:
    """k-NN and linear-probe accuracy of test vectors, learnt from training vectors."""
    return {"knn_accuracy": probes.knn_accuracy(train_vecs, train_labels, test_vecs, test_labels),
            "linear_probe_accuracy": probes.linear_probe_accuracy(train_vecs, train_labels, test_vecs, test_labels)}


def evaluate(encoder: TorchEncoder, data: ImageSet, on_batch: Callable[[int], None] | None = None,
             train: ImageSet | None = None, holdout: bool = False) -> dict[str, float]:
    """Every metric that applies to ``data``.

    Probes, for labelled ``data``: learnt from ``train`` (its labelled training split), or with
    ``holdout`` from :func:`retrieval.probes.holdout_split` of ``data`` itself (every 5th image of each
    class is a test image).
    """
    image_vecs = embed_images(encoder, data, on_batch=on_batch)
    result: dict[str, float] = {}
    if data.labels is not None and data.class_names:
        prompts = class_prompts(data.class_names, data.templates)
        flat = embed_texts(encoder, [p for group in prompts for p in group])
        result.update(label_metrics(image_vecs, data.labels, flat.reshape(len(prompts), len(prompts[0]), -1)))
    elif data.captions:
        texts = [c for caps in data.captions for c in caps]
        text_image = np.repeat(np.arange(len(data)), [len(c) for c in data.captions])
        result.update(recall_metrics(image_vecs, embed_texts(encoder, texts), text_image))
    if data.labels is not None and train is not None and train.labels is not None:
        train_vecs = embed_images(encoder, train, on_batch=on_batch)
        result.update(probe_metrics(train_vecs, train.labels, image_vecs, data.labels))
    elif data.labels is not None and holdout:
        fit, test = probes.holdout_split(data.labels)
        if len(fit) and len(test):
            result.update(probe_metrics(image_vecs[fit], data.labels[fit], image_vecs[test], data.labels[test]))
    return result
