"""Near-duplicates at scale: a 100k-point store with planted families, through ``clipdex duplicates``' code.

    .venv/bin/python benchmarks/duplicates.py --json            # 100,000 points
    .venv/bin/python benchmarks/duplicates.py --methods --json  # pHash / dHash / SSIM / aligned, measured

What is real: the planted files are procedural photos (tests/photos.py) written to disk: each family is
an original and its five altered copies (resized, JPEG quality 40, a 4 % crop, brightness +12 %,
PNG); the distractors nearest to them are real files too: pairs of shots of one scene with an object
moved 2-5 %, and distinct scenes. They are ingested with the bundled model (configs/fmnist-tiny.toml)
into a real embedded store; the search (:func:`retrieval.duplicates.find_in`) is the command's own:
the store's nearest-neighbour search for every point, then the pixel check of every candidate pair.
What is synthetic: the bulk of the points, clustered unit vectors with payloads of files that do not
exist (they are far from the real photos' vectors, so they cost a search each and are never checked).

Prints one JSON line: ``points``, ``seconds`` (the search; ``cpu_s``: this process's CPU time for it,
which a shared machine's load does not inflate), ``precision`` and ``recall`` over pairs
(a group of n files counts its n(n-1)/2 pairs; the truth is every pair within a family).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from retrieval import duplicates as dups  # noqa: E402
from retrieval.index import Index  # noqa: E402
from retrieval.settings import load_settings  # noqa: E402
from tests.photos import write_family, write_moment_apart  # noqa: E402

BULK_ROOT = "/clipdex-bench-synthetic"


def machine() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    flags = next((line for line in info if line.startswith("flags")), "")
    return {"cpu": cpu, "amx_bf16": " amx_bf16" in flags, "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "cores": os.cpu_count()}


def write_library(lib: Path, families: int, shots: int, distinct: int) -> list[list[str]]:
    """The planted files; returns the families (lists of paths)."""
    truth = []
    for seed in range(families):
        original, copies = write_family(lib / "families" / f"f{seed:04d}", seed)
        truth.append([str(original), *map(str, copies)])
    for i in range(shots):
        write_moment_apart(lib / "shots", 10_000 + i, shift=(0.02, 0.03, 0.05)[i % 3])
    for i in range(distinct):
        write_family(lib / "distinct" / f"d{i:04d}", 20_000 + i, alterations=())
    return truth


def add_bulk(index: Index, count: int, seed: int = 0, chunk: int = 2000) -> None:
    """``count`` synthetic points: clustered random unit vectors, payloads of files that do not exist."""
    meta = index.store.meta()
    assert meta is not None
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, count // 50), meta.dim)).astype(np.float32)
    import uuid

    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        vectors = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, meta.dim)).astype(
            np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids, payloads = [], []
        for i in range(start, start + n):
            path = f"{BULK_ROOT}/{i // 1000:03d}/IMG_{i:06d}.jpg"
            ids.append(str(uuid.uuid5(uuid.NAMESPACE_URL, path)))
            payloads.append({"path": path, "root": BULK_ROOT, "ancestors": ["/", BULK_ROOT], "hash": f"{i:032x}",
                             "size": 2_000_000 + i, "width": 4032, "height": 3024, "format": "JPEG"})
        index.store.upsert(ids, vectors, payloads)


def pairs_of(groups: list[list[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for g in groups for p in combinations(sorted(g), 2)}


def run(points: int, families: int, shots: int, distinct: int, work: Path) -> dict[str, Any]:
    lib = work / "lib"
    t0 = time.perf_counter()
    truth = write_library(lib, families, shots, distinct)
    write_s = time.perf_counter() - t0
    settings = load_settings(str(REPO / "configs" / "fmnist-tiny.toml")).with_overrides(
        store={"path": str(work / "store"), "collection": "bench"}, ingest={"workers": 0})
    with Index.open(settings, create=True) as index:
        t0 = time.perf_counter()
        report = index.ingest([str(lib)])
        ingest_s = time.perf_counter() - t0
        real = index.store.count()
        t0 = time.perf_counter()
        add_bulk(index, max(0, points - real))
        index.store.optimize()
        build_s = time.perf_counter() - t0
        print(f"store ready: {index.store.count():,} points ({real} real files)", file=sys.stderr)
        t0, cpu0 = time.perf_counter(), time.process_time()
        found = dups.find_in(index, dups.options_of(settings))
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        count = index.store.count()
    predicted = pairs_of([[g.keep.path, *(d.path for d in g.duplicates)] for g in found.groups])
    wanted = pairs_of(truth)
    right = len(predicted & wanted)
    kept_original = sum(1 for g in found.groups if g.keep.path in {f[0] for f in truth})
    return {"points": count, "seconds": round(seconds, 2), "precision": round(right / len(predicted), 4) if predicted
            else 1.0, "recall": round(right / len(wanted), 4), "pairs_true": len(wanted), "pairs_found": len(predicted),
            "groups": len(found.groups), "originals_kept": kept_original, "families": families,
            "real_files": real, "indexed": report.indexed, "candidates": found.candidates,
            "verified": found.verified, "checked": found.checked, "stages_s": found.seconds, "cpu_s": round(cpu_s, 1),
            "write_s": round(write_s, 1),
            "ingest_s": round(ingest_s, 1), "build_s": round(build_s, 1),
            "threshold": settings.duplicates.threshold, "neighbours": settings.duplicates.neighbours} | machine()


def methods(seeds: int, work: Path) -> dict[str, Any]:
    """The measurement behind the verifier: each method's worst family score against its best distractor."""
    import imagehash
    from PIL import Image

    from retrieval.duplicates.verify import look_of, similarity

    def grey(path: Path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("L").resize((64, 64), Image.Resampling.BOX), np.float64)

    def ssim(a: Path, b: Path) -> float:
        x, y = grey(a), grey(b)
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        mx, my, cov = x.mean(), y.mean(), ((x - x.mean()) * (y - y.mean())).mean()
        return float((2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (x.var() + y.var() + c2)))

    measures = {  # (score, higher means more alike)
        "phash_distance": (lambda a, b: imagehash.phash(Image.open(a)) - imagehash.phash(Image.open(b)), False),
        "dhash_distance": (lambda a, b: imagehash.dhash(Image.open(a)) - imagehash.dhash(Image.open(b)), False),
        "ssim_64px": (ssim, True),
        "aligned_block_ssim": (lambda a, b: similarity(look_of(str(a)), look_of(str(b))), True),
        "prefilter_phash_distance": (lambda a, b: (look_of(str(a)).phash ^ look_of(str(b)).phash).bit_count(), False),
    }
    scores: dict[str, dict[str, list[float]]] = {m: {} for m in measures}
    seconds = dict.fromkeys(measures, 0.0)
    for seed in range(seeds):
        original, copies = write_family(work / "m", seed)
        pairs = [(original, c, c.stem.rsplit("-", 1)[1]) for c in copies]
        for shift in (0.01, 0.02, 0.03, 0.05):
            a, b = write_moment_apart(work / f"m{shift}", 1000 + seed, shift)
            pairs.append((a, b, f"moved_{round(shift * 100)}pct"))
        other, _ = write_family(work / "o", 5000 + seed, alterations=())
        pairs.append((original, other, "distinct"))
        for a, b, kind in pairs:
            for name, (fn, _) in measures.items():
                t0 = time.perf_counter()
                scores[name].setdefault(kind, []).append(float(fn(a, b)))
                seconds[name] += time.perf_counter() - t0
    out: dict[str, Any] = {"seeds": seeds}
    for name, (_, higher) in measures.items():
        worst, best = (min, max) if higher else (max, min)
        out[name] = {kind: round(worst(v) if not kind.startswith(("moved", "distinct")) else best(v), 4)
                     for kind, v in sorted(scores[name].items())} | {"seconds": round(seconds[name], 2)}
    return out | machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--families", type=int, default=50)
    parser.add_argument("--shots", type=int, default=50, help="pairs of shots a moment apart (distractors)")
    parser.add_argument("--distinct", type=int, default=100, help="distinct scenes (distractors)")
    parser.add_argument("--methods", action="store_true", help="compare pHash, dHash, SSIM and the aligned check")
    parser.add_argument("--seeds", type=int, default=30, help="with --methods: scenes measured")
    parser.add_argument("--json", action="store_true", help="one JSON line (the default output too)")
    parser.add_argument("--keep", default="", help="work folder to keep (default: a temporary one, removed)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="clipdex-dups-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = methods(args.seeds, work) if args.methods else run(args.points, args.families, args.shots,
                                                                   args.distinct, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
