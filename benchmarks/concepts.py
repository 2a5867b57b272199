"""Personal concepts (issue 25): how well a concept taught from k examples finds the rest, against ``--like`` and
the zero-shot prompt, before and after rounds of feedback; and how fast teaching and tagging are.

Domains (vectors from the bundled model, ``benchmarks/concept_data.py``, cached in ``--cache``):

* ``fashion_mnist``: the test split (10,000 images), each class a concept named by its class word;
* ``glyphs``: 10,000 rendered pictures in 10 families the model never saw and cannot name (the family's word
  is the concept's name; the model's text tower has never read it).

For each class, k = 1, 4, 16 examples drawn at random (``--draws`` draws): AP@100 normalised by
min(100, members not yet labelled), on what is not labelled, of

* ``concept``: :func:`retrieval.concepts.learner.fit` with a random library sample of 2,048 vectors;
* ``like``: the mean of the same examples (``--like``: Qdrant's average_vector with no negatives);
* ``zero_shot``: the name's prompt (Fashion-MNIST: "a photo of a {class}.");
* ``top10_rounds``: after 1, 2, 3 rounds in which the 10 best unlabelled results are answered;
* ``review_rounds``: the same with the 10 that ``clipdex concept review`` asks (the 10 nearest the threshold:
  :func:`retrieval.concepts.learner.uncertain`);
* ``supervised`` (glyphs): a ridge head fitted on half the domain with every label, scored on the other half.

Timing (``--points``, default 100,000 random unit vectors of the model's width): teach (fit + threshold + scoring
every point) and refit after one answer, p50 of ``--repeats``; ``--baseline path/to/learner.py`` times another
learner (main's) in alternating rounds in the same run. Tagging (``--tag-points``, default 1,000,000
synthetic points in a real embedded store loaded without HNSW graphs, 0 to skip): one concept tagged over every
point (:func:`retrieval.concepts.tagging.tag_vectors_store`: scroll with vectors, score, write what changed).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]
sys.path.insert(0, str(REPO))

from benchmarks.concept_data import embedded  # noqa: E402
from retrieval.concepts import learner  # noqa: E402

LIBRARY_SAMPLE = 2048
KS = (1, 4, 16)
ROUNDS = 3
PER_ROUND = 10


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def ap100(scores: np.ndarray, relevant: np.ndarray, labelled: np.ndarray) -> float:
    """AP@100 over the unlabelled rows, normalised by min(100, relevant rows not labelled)."""
    s = scores.astype(np.float64).copy()
    s[labelled] = -np.inf
    order = np.argsort(-s)[:100]
    hits = relevant[order].astype(np.float64)
    left = int(relevant.sum() - relevant[labelled].sum())
    if left <= 0:
        return 1.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / min(100, left))


def one_draw(vectors: np.ndarray, relevant: np.ndarray, text: np.ndarray, k: int, rng: np.random.Generator,
             select: str) -> list[float]:
    """AP@100 of the concept before and after each feedback round."""
    pos = list(rng.choice(np.flatnonzero(relevant), k, replace=False))
    neg: list[int] = []
    library = vectors[rng.choice(len(vectors), LIBRARY_SAMPLE, replace=False)]
    out = []
    for _ in range(ROUNDS + 1):
        labelled = np.array(pos + neg, np.int64)
        head = learner.fit(vectors[pos], vectors[neg], library, text)
        scores = head.score(vectors)
        out.append(ap100(scores, relevant, labelled))
        if select == "top":
            s = scores.astype(np.float64).copy()
            s[labelled] = -np.inf
            asked = np.argsort(-s)[:PER_ROUND]
        else:
            asked = learner.uncertain(scores, learner.threshold(head, library), labelled, PER_ROUND)
        for i in asked:
            (pos if relevant[i] else neg).append(int(i))
    return out


def domain(vectors: np.ndarray, labels: np.ndarray, names: np.ndarray, prompts: np.ndarray, draws: int) -> dict:
    names, prompts = unit(names), unit(prompts)
    out: dict = {"zero_shot": float(np.mean([ap100(vectors @ prompts[c], labels == c, np.zeros(0, np.int64))
                                             for c in range(len(names))]))}
    for k in KS:
        like, top, review, knows = [], [], [], []
        for c in range(len(names)):
            relevant = labels == c
            for d in range(draws):
                seed = 1000 * c + d
                rng = np.random.default_rng(seed)
                pos = rng.choice(np.flatnonzero(relevant), k, replace=False)
                like.append(ap100(vectors @ unit(vectors[pos].mean(0)), relevant, pos))
                knows.append(learner.knows_word(vectors[pos], vectors[rng.choice(len(vectors), LIBRARY_SAMPLE)],
                                                names[c]))
                top.append(one_draw(vectors, relevant, names[c], k, np.random.default_rng(seed), "top"))
                review.append(one_draw(vectors, relevant, names[c], k, np.random.default_rng(seed), "review"))
        top_m, review_m = np.mean(top, 0), np.mean(review, 0)
        out[f"k{k}"] = {"concept": round(float(top_m[0]), 4), "like": round(float(np.mean(like)), 4),
                        "top10_rounds": [round(float(x), 4) for x in top_m[1:]],
                        "review_rounds": [round(float(x), 4) for x in review_m[1:]],
                        "knows_word": round(float(np.mean(knows)), 3)}
    return out


def supervised(vectors: np.ndarray, labels: np.ndarray) -> float:
    """A ridge head per class fitted on half the rows with every label, AP@100 on the other half."""
    idx = np.random.default_rng(0).permutation(len(vectors))
    train, test = idx[: len(idx) // 2], idx[len(idx) // 2:]
    aps = []
    for c in np.unique(labels):
        x, y = vectors[train].astype(np.float64), np.where(labels[train] == c, 1.0, -1.0)
        w = np.linalg.solve(x.T @ x + 0.1 * np.eye(x.shape[1]), x.T @ y)
        aps.append(ap100(vectors[test] @ w, labels[test] == c, np.zeros(0, np.int64)))
    return float(np.mean(aps))


def load_learner(path: str):  # type: ignore[no-untyped-def]
    """Another learner.py (e.g. main's) as a module, to time side by side with this one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_learner", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_learner"] = module
    spec.loader.exec_module(module)
    return module


def timing(dim: int, points: int, repeats: int, baseline: str | None = None) -> dict:
    """:func:`timing_of` this learner, and with ``baseline`` (another learner.py) in alternating rounds."""
    if baseline is None:
        return timing_of(learner, dim, points, repeats)
    other = load_learner(baseline)
    runs: dict[str, list[dict]] = {"this": [], "baseline": []}
    for _ in range(repeats):
        runs["this"].append(timing_of(learner, dim, points, 1))
        runs["baseline"].append(timing_of(other, dim, points, 1))
    out: dict = {"points": points, "baseline": baseline}
    for who, rounds in runs.items():
        for key in ("teach_ms", "teach_cpu_ms", "refit_ms", "refit_cpu_ms"):
            values = [r[key][0] for r in rounds]
            out[f"{who}_{key}"] = values
            out[f"{who}_{key[:-3]}_p50_ms"] = round(float(np.median(values)), 1)
    return out


def timing_of(learner, dim: int, points: int, repeats: int) -> dict:  # type: ignore[no-untyped-def]
    """Teach (fit, threshold, score every point) and a refit after one more answer (which also picks the next 10
    questions): wall ms and CPU ms (``time.process_time``: the work itself, apart from waiting on a busy machine),
    every round and the p50. The name's text vector is random: the word is unknown, the head whitened."""
    rng = np.random.default_rng(0)
    vectors = unit(rng.normal(size=(points, dim)).astype(np.float32))
    text = unit(rng.normal(size=dim).astype(np.float32))
    rows: dict[str, list[float]] = {"teach_ms": [], "teach_cpu_ms": [], "refit_ms": [], "refit_cpu_ms": []}

    def timed(name: str, fn) -> object:  # type: ignore[no-untyped-def]
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        rows[f"{name}_ms"].append(round((time.perf_counter() - w0) * 1000, 1))
        rows[f"{name}_cpu_ms"].append(round((time.process_time() - c0) * 1000, 1))
        return out

    for r in range(repeats):
        pos, neg = list(range(r, r + 4)), []
        library = vectors[rng.choice(points, LIBRARY_SAMPLE, replace=False)]

        def teach(pos: list[int] = pos, neg: list[int] = neg, library: np.ndarray = library) -> tuple:
            head = learner.fit(vectors[pos], vectors[neg], library, text)
            return head.score(vectors), learner.threshold(head, library)

        scores, cut = timed("teach", teach)
        neg.append(int(learner.uncertain(scores, cut, np.array(pos), 10)[0]))

        def refit(pos: list[int] = pos, neg: list[int] = neg, library: np.ndarray = library) -> np.ndarray:
            head = learner.fit(vectors[pos], vectors[neg], library, text)
            return learner.uncertain(head.score(vectors), learner.threshold(head, library), np.array(pos + neg), 10)

        timed("refit", refit)
    return {"points": points, **rows, **{f"{k[:-3]}_p50_ms": round(float(np.median(v)), 1) for k, v in rows.items()}}


def tagging(dim: int, points: int) -> dict:
    """Seconds to tag one concept over ``points`` synthetic points in a real embedded store."""
    from retrieval.concepts.tagging import tag_vectors_store
    from retrieval.store import CollectionMeta
    from retrieval.store.base import IndexConfig
    from retrieval.store.edge import EdgeStore

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="clipdex-concepts-") as tmp:
        # no HNSW graph is built while loading (tagging scrolls every point and never searches the graph)
        store = EdgeStore(Path(tmp) / "c", config=IndexConfig(index_threshold=10**9, segment_points=10**9))
        store.create(CollectionMeta("synthetic", "", dim))
        t0 = time.perf_counter()
        import uuid
        for start in range(0, points, 8192):
            n = min(8192, points - start)
            ids = [str(uuid.UUID(int=start + i + 1)) for i in range(n)]
            store.upsert(ids, unit(rng.normal(size=(n, dim)).astype(np.float32)),
                         [{"path": f"/p/{start + i}.jpg", "hash": f"h{start + i}"} for i in range(n)])
        load_s = time.perf_counter() - t0
        pos = unit(rng.normal(size=(4, dim)).astype(np.float32))
        library = store.sample_vectors(LIBRARY_SAMPLE)
        head = learner.fit(pos, np.zeros((0, dim), np.float32), library)
        judges = {"synthetic": (head, learner.threshold(head, library), set(), set())}
        t0, c0 = time.perf_counter(), time.process_time()
        report = tag_vectors_store(store, judges)  # first tagging: every point gets its list and marker
        tag_s, tag_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        again = tag_vectors_store(store, judges)  # the same concept again: everything scanned, nothing written
        retag_s, retag_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        store.close()
    return {"points": points, "load_s": round(load_s, 1), "tag_s": round(tag_s, 1), "tag_cpu_s": round(tag_cpu_s, 1),
            "retag_unchanged_s": round(retag_s, 1), "retag_unchanged_cpu_s": round(retag_cpu_s, 1),
            "retag_written": again["written"], **report}


def clustering(vectors: np.ndarray, labels: np.ndarray) -> dict:
    """``concept suggest``'s candidates on one domain: NMI and purity against the classes, seconds, clusters."""
    from sklearn.cluster import HDBSCAN
    from sklearn.metrics import normalized_mutual_info_score

    from retrieval.concepts.suggest import default_k, kmeans

    def scored(found: np.ndarray, seconds: float) -> dict:
        kept = found >= 0
        purity = sum(np.bincount(labels[kept & (found == c)]).max() for c in np.unique(found[kept])) / len(found)
        return {"nmi": round(float(normalized_mutual_info_score(labels, found)), 4), "purity": round(float(purity), 4),
                "clusters": int(len(np.unique(found[kept]))), "noise": round(float(np.mean(~kept)), 4),
                "seconds": round(seconds, 2)}

    out = {}
    for k in (len(np.unique(labels)), default_k(len(vectors))):
        t0 = time.perf_counter()
        found, _ = kmeans(vectors, k)
        out[f"kmeans_k{k}"] = scored(found, time.perf_counter() - t0)
    for size in (25, 100):
        t0 = time.perf_counter()
        found = HDBSCAN(min_cluster_size=size).fit(vectors).labels_
        out[f"hdbscan_min{size}"] = scored(found, time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.toml"))
    parser.add_argument("--data", default=None, help="Fashion-MNIST folder [default: the Debian package's]")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "clipdex-concepts", "vectors.npz"))
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--tag-points", type=int, default=1_000_000)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--timing-dim", type=int, default=0, help="width of the timing's random vectors [the model's]")
    parser.add_argument("--baseline", default=None, help="another learner.py to time side by side (alternating)")
    parser.add_argument("--only-suggest", action="store_true", help="only the clustering of concept suggest")
    args = parser.parse_args()
    z = embedded(args.config, Path(args.cache), args.data)
    out: dict = {"method": "ridge head vs library sample + text prior when the word is known + example cache; "
                           "whitened by the library sample when it is not; review asks nearest the threshold"}
    if args.only_suggest:
        out = {"suggest": {"fashion_mnist": clustering(z["fm_vectors"], z["fm_labels"]),
                           "glyphs": clustering(z["gl_vectors"], z["gl_labels"])}}
        print(json.dumps(out))
        return
    if not args.skip_quality:
        out["fashion_mnist"] = domain(z["fm_vectors"], z["fm_labels"], z["fm_names"], z["fm_zero_shot"], args.draws)
        gl = domain(z["gl_vectors"], z["gl_labels"], z["gl_names"], z["gl_names"], args.draws)
        gl["supervised"] = round(supervised(z["gl_vectors"], z["gl_labels"]), 4)
        out["glyphs"] = gl
    dim = z["fm_vectors"].shape[1]
    width = args.timing_dim or dim
    out["timing"] = {"dim": width, **timing(width, args.points, args.repeats, args.baseline)}
    if args.tag_points:
        out["tagging"] = tagging(dim, args.tag_points)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
