"""Which qdrant-edge calls let other Python threads run (what ``serve --watch`` can overlap).

A ticker thread sleeps 1 ms in a loop and records the longest gap between its wake-ups while the
main thread makes one qdrant-edge call after another on a fresh shard: one ``update`` (an upsert of
``--points`` vectors), ``--queries`` exact queries, ``flush``, then ``optimize`` (the HNSW build; the
point count and dimension exceed qdrant-edge's default indexing threshold), then one more point and
``optimize`` again (what a watched folder's single new photo costs). A gap as long as the
call means the call holds Python's interpreter lock: no other thread of the process (a server's
event loop included) runs until it returns. Prints one JSON line:
``{"<call>_s": wall time, "<call>_max_gap_s": longest ticker gap, ...}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable

import numpy as np
import qdrant_edge as qe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=8000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="(the output is always one JSON line)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.points, args.dim)).astype(np.float32)
    points = [qe.Point(str(uuid.UUID(int=i + 1)), v.tolist(), {"path": f"/p/{i}"}) for i, v in enumerate(vectors)]
    gaps: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    result: dict[str, float | int] = {"points": args.points, "dim": args.dim}

    def measure(name: str, call: Callable[[], object]) -> None:
        time.sleep(0.05)
        gaps.clear()
        start = time.perf_counter()
        call()
        result[f"{name}_s"] = round(time.perf_counter() - start, 4)
        time.sleep(0.01)  # let the ticker record the gap that ends after the call
        result[f"{name}_max_gap_s"] = round(max(gaps, default=0.0), 4)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    with tempfile.TemporaryDirectory(prefix="clipdex-edge-threads-") as tmp:
        config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=args.dim, distance=qe.Distance.Cosine))
        shard = qe.EdgeShard.create(f"{tmp}/shard", config)
        measure("update", lambda: shard.update(qe.UpdateOperation.upsert_points(points)))
        requests = [qe.QueryRequest(limit=10, query=qe.Query.Nearest(v.tolist()), with_payload=True)
                    for v in vectors[: args.queries]]
        measure("queries", lambda: [shard.query(r) for r in requests])
        measure("flush", shard.flush)
        measure("optimize", shard.optimize)
        extra = rng.standard_normal(args.dim).astype(np.float32)
        shard.update(qe.UpdateOperation.upsert_points([qe.Point(str(uuid.uuid4()), extra.tolist(), {"path": "/new"})]))
        measure("optimize_after_one_upsert", shard.optimize)
        shard.close()
    stop.set()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
