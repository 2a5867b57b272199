"""Embedded store comparison through clipdex's own classes: EdgeStore (qdrant-edge) vs ServerStore local mode.

For each store and size, a child process (so peak RSS is per case) fills a fresh on-disk collection with
clustered unit vectors and clipdex-like payloads, then measures upsert/s (batches of 256), index build
(``optimize()``), top-10 query latency, recall@10 against exact numpy search, and close + reopen time.
Prints one JSON line ``{"dim": ..., "rows": [...]}`` on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STORES = ("edge", "qdrant-client-local")
UPSERT_BATCH = 256


def log(msg: str) -> None:
    print(f"[stores-bench] {msg}", file=sys.stderr, flush=True)


def clustered(n: int, dim: int, rng: np.random.Generator, centers: np.ndarray, spread: float = 0.7) -> np.ndarray:
    """``n`` unit vectors around random cluster centres (noise of norm about ``spread``)."""
    assign = rng.integers(0, centers.shape[0], n)
    vectors = centers[assign] + rng.standard_normal((n, dim), dtype=np.float32) * (spread / np.sqrt(dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def payload(i: int, rng: np.random.Generator) -> dict[str, Any]:
    """A payload shaped like clipdex's (path, folder, ancestors, size, mtime, hash)."""
    from ingest.records import ancestors

    path = f"/home/user/Pictures/{2010 + i % 15}/album-{(i // 97) % 400:03d}/IMG_{i:07d}.jpg"
    chain = ancestors(path)
    mtime_ns = 1_500_000_000_000_000_000 + i * 1_000_003_000
    return {"path": path, "folder": chain[-1], "ancestors": chain, "size": int(rng.integers(200_000, 6_000_000)),
            "mtime": mtime_ns / 1e9, "mtime_ns": mtime_ns, "hash": f"{rng.integers(0, 2**63):016x}{i:016x}",
            "width": 4032, "height": 3024, "format": "JPEG"}


def open_store(kind: str, folder: Path) -> Any:
    from retrieval.store.edge import EdgeStore
    from retrieval.store.server import ServerStore

    if kind == "edge":
        return EdgeStore(folder / "collection")
    return ServerStore("bench", path=str(folder / "qdrant-local"))


def dir_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_case(kind: str, n: int, dim: int, queries: int, seed: int, budget_s: float) -> dict[str, Any]:
    """One store at one size, in this (child) process.

    If upserting takes longer than ``budget_s``, loading stops there (``partial``: true, ``points_loaded``)
    and the other figures are taken on the points loaded so far, against exact search over those points.
    """
    from ingest.records import point_id
    from retrieval.store.base import CollectionMeta, SearchFilter

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((200, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    vectors = clustered(n, dim, rng, centers)
    probes = clustered(queries, dim, rng, centers)
    payloads = [payload(i, rng) for i in range(n)]
    ids = [point_id(p["path"]) for p in payloads]
    index_of = {pid: i for i, pid in enumerate(ids)}
    row: dict[str, Any] = {"store": kind, "points": n, "dim": dim}
    with tempfile.TemporaryDirectory(prefix="clipdex-stores-", dir=REPO / ".bench") as tmp:
        folder = Path(tmp)
        store = open_store(kind, folder)
        store.create(CollectionMeta("bench", "", dim))
        t0 = time.perf_counter()
        loaded = 0
        while loaded < n and time.perf_counter() - t0 < budget_s:
            end = loaded + UPSERT_BATCH
            store.upsert(ids[loaded:end], vectors[loaded:end], payloads[loaded:end])
            loaded = min(end, n)
            if (loaded // UPSERT_BATCH) % 100 == 0:
                log(f"{kind} n={n}: {loaded} upserted ({time.perf_counter() - t0:.0f} s)")
        row["upsert_per_s"] = round(loaded / (time.perf_counter() - t0), 1)
        row["partial"] = loaded < n
        row["points_loaded"] = loaded
        if loaded < n:
            log(f"{kind} n={n}: upsert budget of {budget_s:.0f} s spent after {loaded} points; measuring those")
        exact = np.argsort(-(probes @ vectors[:loaded].T), axis=1)[:, :10]
        t0 = time.perf_counter()
        store.optimize()
        row["index_build_s"] = round(time.perf_counter() - t0, 3) if kind == "edge" else None
        log(f"{kind} n={n}: upsert {row['upsert_per_s']}/s, build {row['index_build_s']} s")
        row.update(query_figures(store, probes, exact, index_of, SearchFilter()))
        t0 = time.perf_counter()
        store.close()
        row["close_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        store = open_store(kind, folder)
        count = store.count()
        row["reopen_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        store.query(probes[0], 10, SearchFilter())
        row["first_query_after_reopen_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        if count != loaded:
            raise RuntimeError(f"{kind}: {count} points after reopen, expected {loaded}")
        store.close()
        row["disk_mb"] = round(dir_size(folder) / 2**20, 1)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return row


def query_figures(store: Any, probes: np.ndarray, exact: np.ndarray, index_of: dict[str, int],
                  where: Any) -> dict[str, Any]:
    """Top-10 latency (after 5 warm-up queries) and mean recall@10 against exact search."""
    for q in probes[:5]:
        store.query(q, 10, where)
    latencies, recalls = [], []
    for q, truth in zip(probes, exact, strict=True):
        t0 = time.perf_counter()
        hits = store.query(q, 10, where)
        latencies.append((time.perf_counter() - t0) * 1e3)
        found = {index_of[h.id] for h in hits}
        recalls.append(len(found & set(truth.tolist())) / 10)
    return {"query_p50_ms": round(float(np.percentile(latencies, 50)), 3),
            "query_p95_ms": round(float(np.percentile(latencies, 95)), 3),
            "recall_at_10": round(float(np.mean(recalls)), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="10000,100000", help="comma-separated collection sizes")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--stores", default=",".join(STORES), help=f"comma-separated subset of {STORES}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="per-case upsert time budget; a case over it is measured on the points loaded")
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed; kept for CLI)")
    parser.add_argument("--child", nargs=2, metavar=("STORE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    (REPO / ".bench").mkdir(exist_ok=True)
    if args.child:
        row = run_case(args.child[0], int(args.child[1]), args.dim, args.queries, args.seed, args.budget_s)
        print(json.dumps(row), flush=True)
        return 0
    rows = []
    for n in (int(x) for x in args.points.split(",")):
        for kind in args.stores.split(","):
            if kind not in STORES:
                parser.error(f"unknown store {kind}")
            log(f"{kind} n={n} ...")
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind, str(n), "--dim",
                                   str(args.dim), "--queries", str(args.queries), "--seed", str(args.seed),
                                   "--budget-s", str(args.budget_s)],
                                  stdout=subprocess.PIPE, text=True, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["case_wall_s"] = round(time.perf_counter() - t0, 1)
            log(json.dumps(row))
            rows.append(row)
    print(json.dumps({"dim": args.dim, "queries": args.queries, "upsert_batch": UPSERT_BATCH, "rows": rows}),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
