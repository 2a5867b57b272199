"""``GET /api/browse`` at scale: the library's date and folder orders over N synthetic photos, without a model.

    .venv/bin/python benchmarks/browse.py --points 100000 --json

What runs for real: an embedded qdrant-edge store holding N points (random unit vectors; payloads as ingest
writes them: path, folder, size, mtime, and for 70 % an EXIF time and camera), and the real route of
:mod:`retrieval.serving.browse` called over HTTP (Starlette's TestClient). Timed: the first request (one scroll of
the light fields and both orders built: what the page waits for after the collection changed), then
``--pages`` requests of 200 rows at random cursors by date and by folder (what scrolling costs), with
the rows' size on the wire. Prints one JSON line with the machine (CPU, flags, load average); progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.machine import machine  # noqa: E402
from ingest.records import point_id  # noqa: E402
from retrieval.settings import Settings  # noqa: E402
from retrieval.store import CollectionMeta, open_store  # noqa: E402

DIM = 32
CHUNK = 4096


def payload(i: int, rng: random.Random) -> dict:
    year, folder = 2010 + i % 15, f"/home/user/Pictures/{2010 + i % 15}/{(i // 97) % 40:02d}-trip"
    path = f"{folder}/IMG_{i:07d}.jpg"
    row = {"path": path, "folder": folder, "size": 2_000_000 + i, "mtime": 1.7e9 - i * 60.0, "width": 4032,
           "height": 3024, "format": "JPEG", "hash": f"{i:032x}"}
    if rng.random() < 0.7:
        ts = time.mktime((year, 1 + i % 12, 1 + i % 28, 12, 0, 0, 0, 0, 0))
        row |= {"taken_ts": ts, "taken_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)),
                "camera_make": "Apple", "camera_model": "iPhone 14"}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="(the only output: one JSON line)")
    args = parser.parse_args()

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from retrieval.serving.browse import add_routes

    load_start = machine()["loadavg"]
    with tempfile.TemporaryDirectory(prefix="browse-") as tmp:
        settings = Settings.model_validate({"store": {"path": tmp, "collection": "browse"}})
        store = open_store(settings, create=True)
        store.create(CollectionMeta("stand-in", "", DIM))
        rng, gen = random.Random(1), np.random.default_rng(1)
        started = time.perf_counter()
        for lo in range(0, args.points, CHUNK):
            hi = min(lo + CHUNK, args.points)
            vectors = gen.standard_normal((hi - lo, DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            payloads = [payload(i, rng) for i in range(lo, hi)]
            store.upsert([point_id(p["path"]) for p in payloads], vectors, payloads)
        store.flush()
        print(f"{args.points:,} points stored in {time.perf_counter() - started:.1f} s", file=sys.stderr)

        service = SimpleNamespace(index=SimpleNamespace(store=store), lock=threading.Lock())
        app = FastAPI()
        add_routes(app, service)
        with TestClient(app) as client:
            t0 = time.perf_counter()
            first = client.get("/api/browse", params={"by": "date", "limit": 200, "sections": "true"})
            first_s = time.perf_counter() - t0
            assert first.status_code == 200 and first.json()["total"] == args.points, first.text[:200]
            folders = client.get("/api/browse", params={"by": "folder", "limit": 1, "sections": "true"}).json()
            page_ms, sizes = [], []
            for k in range(args.pages):
                by = ("date", "folder")[k % 2]
                cursor = rng.randrange(0, args.points - 200)
                t0 = time.perf_counter()
                page = client.get("/api/browse", params={"by": by, "cursor": cursor, "limit": 200})
                page_ms.append((time.perf_counter() - t0) * 1000)
                assert page.status_code == 200 and len(page.json()["items"]) == 200
                sizes.append(len(page.content))
        store.close()
    print(json.dumps({
        "benchmark": "browse", "points": args.points, "first_request_s": round(first_s, 3),
        "first_request_bytes": len(first.content), "months": len(first.json()["sections"]),
        "folders": len(folders["sections"]), "pages": args.pages, "page_rows": 200,
        "page_p50_ms": round(statistics.median(page_ms), 1), "page_max_ms": round(max(page_ms), 1),
        "page_ms": [round(m, 1) for m in page_ms], "page_bytes_p50": int(statistics.median(sizes)),
        "machine": machine() | {"loadavg_start": load_start}}))


if __name__ == "__main__":
    main()
