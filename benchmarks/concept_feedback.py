"""Concept feedback on the page (issue 25, item 4): the time from a ✓/✗ to the refreshed result list, on a
``--points`` (default 100,000) point store, through the real HTTP app in-process (Starlette's TestClient).

One round is what the page does on a mark: ``POST /api/concepts/NAME/answer?n=1`` (refit at once, re-tag the
collection from the vectors held in memory, save) and then ``GET /api/search?concept=NAME&limit=40`` (plus
``q`` with ``--text``). The store (under ``.bench/``, built once and reused) holds synthetic clustered unit
vectors of the bundled model's width (models/fmnist-tiny) with ingest's payload, HNSW-indexed; the concept is
taught from 4 points of one cluster. The first answer also loads the review session (every vector into memory,
once per concept and collection state): it is given apart, as ``first_answer_ms``. Rounds are paced under the
server's limit of answers a second; each answers the best result not answered yet (two ✓ then one ✗).

    .venv/bin/python benchmarks/concept_feedback.py [--points 100000] [--rounds 30] [--text "a shoe"]

Prints one JSON line: p50/p95 and every round of the whole mark-to-list time and of its two requests, with the
CPU and load average.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]  # (benchmarks/ingest.py)
sys.path.insert(0, str(REPO))

from benchmarks.query import fill_store, log, synthetic_vectors  # noqa: E402

MODEL = REPO / "models" / "fmnist-tiny"


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--text", default="", help="also a text query beside the concept (the page keeps the query)")
    parser.add_argument("--folder", type=Path, default=REPO / ".bench")
    args = parser.parse_args(argv)

    from fastapi.testclient import TestClient

    from benchmarks.machine import machine
    from retrieval.index import Index
    from retrieval.server import create_app
    from retrieval.settings import load_settings

    folder = args.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "concept-feedback.toml"
    config.write_text("\n".join([
        "[model]", f'name = "local-dir:{MODEL}"', 'pretrained = ""', "[store]",
        f'path = "{folder / f"concept-feedback-store-{args.points}"}"', 'collection = "bench"', ""]))
    with Index.open(load_settings(config), create=True) as index:
        dim = index.encoder.dim
        paths = fill_store(index, args.points, dim, index.encoder.precision)
        vectors = synthetic_vectors(args.points, dim)
        seed = int(np.argmax(vectors @ vectors[0] > 0.9))  # four near neighbours of one point: one cluster
        near = np.argsort(-(vectors @ vectors[seed]))[:4]
        app = create_app(index)
        with TestClient(app) as http:
            name = f"bench {int(time.time())}"
            t0 = time.perf_counter()
            taught = http.post(f"/api/concepts/{name}", json={"examples": [paths[i] for i in near]})
            assert taught.status_code == 200, taught.text
            teach_ms = (time.perf_counter() - t0) * 1000
            params = {"concept": name, "limit": 40, **({"q": args.text} if args.text else {})}
            shown = [r["path"] for r in http.get("/api/search", params=params).json()]
            answered = {paths[i] for i in near}
            total, answer, search, server_ms, members = [], [], [], [], []
            first_ms = None
            for i in range(args.rounds + 1):
                time.sleep(0.06)  # under MAX_ANSWERS_PER_S, and not timed
                path = next(p for p in shown if p not in answered)
                answered.add(path)
                t0 = time.perf_counter()
                done = http.post(f"/api/concepts/{name}/answer", params={"n": 1},
                                 json={"ref": path, "answer": "n" if i % 3 == 2 else "y"})
                t1 = time.perf_counter()
                assert done.status_code == 200, done.text
                got = http.get("/api/search", params=params)
                t2 = time.perf_counter()
                assert got.status_code == 200, got.text
                shown = [r["path"] for r in got.json()]
                if i == 0:
                    first_ms = round((t2 - t0) * 1000, 1)
                    log(f"first answer (loads the review session): {first_ms} ms")
                    continue
                total.append((t2 - t0) * 1000)
                answer.append((t1 - t0) * 1000)
                search.append((t2 - t1) * 1000)
                server_ms.append(done.json()["ms"])
                members.append(done.json()["members"])
            http.delete(f"/api/concepts/{name}")
    print(json.dumps({
        "points": args.points, "rounds": args.rounds, "text": args.text or None, "dim": dim,
        "mark_to_list_p50_ms": pct(total, 50), "mark_to_list_p95_ms": pct(total, 95),
        "answer_p50_ms": pct(answer, 50), "search_p50_ms": pct(search, 50),
        "answer_server_p50_ms": pct(server_ms, 50), "teach_ms": round(teach_ms, 1), "first_answer_ms": first_ms,
        "mark_to_list_ms": [round(x, 1) for x in total], "answer_ms": [round(x, 1) for x in answer],
        "search_ms": [round(x, 1) for x in search], "members": members, **machine(),
    }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
