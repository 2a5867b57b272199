"""Suggest: cluster what no concept covers yet (stored vectors only), so a few clicks turn a cluster into a concept.

k-means (scikit-learn, chosen over HDBSCAN by ``benchmarks/concepts.py``: docs/concepts.md) on the unit vectors of
the points whose payload lists no concept. Each cluster comes with its most typical photos (nearest its centre),
a name guessed from a zero-shot vocabulary (the word whose prompt is nearest the centre, with that cosine), and
the most frequent words of its recognised text where OCR found some. Clustering is seeded, so the same library
gives the same clusters, and ``accept`` can name one by its number.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.concepts import tagging
from retrieval.concepts.book import ConceptError

if TYPE_CHECKING:
    from retrieval.search.context import SearchContext

MAX_POINTS = 100_000
"""Uncovered points clustered at most (a seeded random sample beyond it)."""
MAX_CLUSTERS = 50
TYPICAL = 8
VOCABULARY = (
    "person", "man", "woman", "child", "baby", "family", "friends", "crowd", "face", "portrait", "selfie",
    "dog", "cat", "bird", "horse", "fish", "cow", "sheep", "insect", "flower", "tree", "plant", "garden", "forest",
    "mountain", "beach", "sea", "lake", "river", "sky", "sunset", "snow", "desert", "field", "park", "city",
    "street", "building", "house", "church", "bridge", "road", "car", "bicycle", "motorcycle", "bus", "train",
    "boat", "airplane", "kitchen", "bedroom", "living room", "office", "restaurant", "shop", "food", "cake",
    "coffee", "drink", "fruit", "vegetable", "meal", "table", "chair", "sofa", "bed", "window", "door", "book",
    "document", "receipt", "screenshot", "text", "sign", "map", "chart", "drawing", "painting", "toy", "ball",
    "computer", "phone", "camera", "clock", "lamp", "bottle", "cup", "glass", "vase", "box", "bag", "shoe",
    "sneaker", "sandal", "boot", "ankle boot", "t-shirt", "shirt", "pullover", "dress", "coat", "trouser",
    "jacket", "hat", "clothing", "jewelry", "watch", "concert", "party", "wedding", "sport", "game", "pattern",
    "texture", "logo", "night", "fireworks", "christmas tree", "snowman", "pool", "playground", "stadium",
)


@dataclass
class Cluster:
    """One suggestion: its number, size, typical photos, guessed name and OCR words."""

    number: int
    size: int
    typical: list[str]
    typical_ids: list[str]
    name: str
    name_score: float
    words: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "size": self.size, "name": self.name,
                "name_score": round(self.name_score, 4), "typical": self.typical, "words": self.words}


@dataclass
class SuggestResults:
    """The clusters, largest first, and how many points none of the concepts covered."""

    uncovered: int
    clusters: list[Cluster]

    def as_dict(self) -> dict[str, Any]:
        return {"uncovered": self.uncovered, "clusters": [c.as_dict() for c in self.clusters]}

    def get(self, number: int) -> Cluster:
        for cluster in self.clusters:
            if cluster.number == number:
                return cluster
        raise ConceptError(f"no suggestion number {number} (there are {len(self.clusters)})")


def kmeans(vectors: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and unit centres of ``k`` clusters of unit vectors (k-means on the sphere's chord distance)."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(vectors)
    centres = model.cluster_centers_
    return model.labels_, centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)


def default_k(n: int) -> int:
    return max(2, min(MAX_CLUSTERS, round(math.sqrt(n / 4))))


def suggest(ctx: SearchContext, k: int | None = None, typical: int = TYPICAL) -> SuggestResults:
    """Clusters of the points no concept covers (see the module docstring)."""
    if ctx.store.meta() is None:
        raise ConceptError("the collection is empty or missing (run `clipdex ingest DIR` first)")
    if k is not None and not 2 <= k <= MAX_CLUSTERS:
        raise ConceptError(f"--clusters must be between 2 and {MAX_CLUSTERS}")
    ids, rows, payloads = [], [], []
    for page_ids, vectors, pays in ctx.store.scroll_vectors(  # type: ignore[attr-defined]
            (tagging.FIELD, "path", "ocr_text")):
        keep = [i for i, p in enumerate(pays) if not p.get(tagging.FIELD)]
        ids += [page_ids[i] for i in keep]
        rows.append(vectors[keep])
        payloads += [pays[i] for i in keep]
    if len(ids) < 4:
        return SuggestResults(len(ids), [])
    vectors = np.vstack(rows).astype(np.float32)
    if len(ids) > MAX_POINTS:
        pick = np.sort(np.random.default_rng(0).choice(len(ids), MAX_POINTS, replace=False))
        vectors, ids, payloads = vectors[pick], [ids[i] for i in pick], [payloads[i] for i in pick]
    k = min(k or default_k(len(ids)), len(ids) // 2)
    labels, centres = kmeans(vectors, k)
    vocab = ctx.encoder.encode_texts([f"a photo of a {w}." for w in VOCABULARY])
    naming = centres @ vocab.T
    clusters = []
    for c in range(k):
        rows_c = np.flatnonzero(labels == c)
        if not len(rows_c):
            continue
        near = rows_c[np.argsort(-(vectors[rows_c] @ centres[c]))[:typical]]
        words = Counter(w for i in rows_c for w in str(payloads[i].get("ocr_text") or "").lower().split()
                        if len(w) > 2 and w.isalnum())
        best = int(np.argmax(naming[c]))
        clusters.append(Cluster(0, len(rows_c), [str(payloads[i].get("path", "")) for i in near],
                                [ids[i] for i in near], VOCABULARY[best], float(naming[c, best]),
                                [w for w, _ in words.most_common(5)]))
    clusters.sort(key=lambda cl: (-cl.size, cl.typical[0]))
    for number, cluster in enumerate(clusters, 1):
        cluster.number = number
    return SuggestResults(len(ids), clusters)


def accept(ctx: SearchContext, number: int, name: str, k: int | None = None) -> Any:
    """Teach concept ``name`` from suggestion ``number``'s typical photos (clusters as :func:`suggest` gives)."""
    from retrieval.concepts.book import check_name
    from retrieval.concepts.teach import teach

    check_name(name)
    cluster = suggest(ctx, k).get(number)
    return teach(ctx, name, cluster.typical_ids)
