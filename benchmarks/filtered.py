"""Filtered-search settings side by side on a store ``benchmarks/scale.py --store DIR`` kept (issue 27).

    .venv/bin/python benchmarks/scale.py --points 60000 --segment-points 60000 --store .bench/scale60k
    .venv/bin/python benchmarks/filtered.py --points 60000 --store .bench/scale60k --json

For each variant (ACORN on or off, the ``hnsw_ef`` of the walk, and the default: the unfiltered graph's
shortlist for broad filters, else ACORN at ef 24; retrieval.store.edge) and each filter of scale.py (camera: a quarter
of the points; dates: about 2 %) plus a folder holding a fifth of a 60k library, in ``--rounds`` alternating
rounds: p50 latency and recall@10 against an exact filtered search (scale.py's own functions). The store is
read into the page cache first, as ``clipdex serve`` does. Prints one JSON line; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # first: benchmarks/ingest.py must not shadow the ingest package

import qdrant_edge as qe  # noqa: E402

import benchmarks.scale as sc  # noqa: E402
from benchmarks.machine import machine  # noqa: E402
from retrieval.settings import Settings  # noqa: E402
from retrieval.store import SearchFilter, edge, open_store  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, required=True, help="the points the kept scale.py store holds")
    parser.add_argument("--store", required=True, help="the folder given to scale.py --store")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--efs", default="10,24,64,128", help="hnsw_ef values of the ACORN walk")
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed)")
    args = parser.parse_args(argv)

    n = args.points
    store = open_store(Settings.model_validate({"store": {"path": args.store, "collection": "scale"}}))
    warmed = store.warm()
    stand_in = sc.StandIn(512, 1000, 0)
    files = sc.listing(n, "/home/user/Pictures")
    rng = np.random.default_rng(1)
    queries = stand_in.vectors(np.sort(rng.integers(0, n, args.queries + 50)))
    rng.shuffle(queries)
    queries += rng.standard_normal(queries.shape, dtype=np.float32) * np.float32(0.4 / np.sqrt(512))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for q in queries[:50]:  # untimed: the first walks
        store.query(q, 10, SearchFilter())
    timed = queries[50:]
    filters = dict(sc.filters(n))
    if n > 48_000:  # scale.py's listing: 48,000 photos a year, so 2001 begins at photo 48,000
        filters["folder"] = (SearchFilter(folder="/home/user/Pictures/2001"), lambda i: (i // 48000) == 1)
    off = 2.0  # a share no filter reaches: the shortlist never used
    variants = {f"acorn ef{ef}": (qe.AcornSearchParams(enable=True), int(ef), off) for ef in args.efs.split(",")}
    variants["no acorn ef128"] = (None, 128, off)
    variants["shortlist, else acorn ef24 (default)"] = (qe.AcornSearchParams(enable=True), 24,
                                                        edge.SHORTLIST_SELECTIVITY)
    rows: dict[str, list[dict[str, float]]] = {}
    saved = (edge._ACORN, edge.FILTERED_EF, edge.SHORTLIST_SELECTIVITY, store.hnsw_ef)
    try:
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                acorn, ef, share = variants[name]
                edge._ACORN, edge.FILTERED_EF, edge.SHORTLIST_SELECTIVITY = acorn, ef, share
                store.hnsw_ef = ef if share == off else saved[3]
                for fname, (where, keep) in filters.items():
                    row = sc.filtered_recall(store, stand_in, files, timed, where, keep)
                    rows.setdefault(f"{name} {fname}", []).append(row)
                    print(f"[filtered] round {r + 1} {name} {fname}: {row}", file=sys.stderr, flush=True)
    finally:
        edge._ACORN, edge.FILTERED_EF, edge.SHORTLIST_SELECTIVITY, store.hnsw_ef = saved
        store.close()
    print(json.dumps({"points": n, "queries": args.queries, "warmed_mb": round(warmed / 2**20), "rounds": rows,
                      **machine()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
