"""A million photos: clipdex's real ingest bookkeeping and store path at scale, without a model.

    .venv/bin/python benchmarks/scale.py --points 100000 --json

What runs for real: :func:`ingest.plan.plan_ingest` (the store scroll and comparison with the listing),
:class:`ingest.bookkeeping.Bookkeeper` (payloads, point ids, reuse look-ups), the
:class:`ingest.writer.AsyncUpserter`, :func:`ingest.finish.finish` (deletions, the HNSW build once
``index_threshold`` is crossed) and the embedded qdrant-edge store with the ``[store]`` index settings.
What is synthetic: the listing (``ScannedFile`` entries with realistic paths, sizes and mtimes; no
image file is written or walked, so ``scan`` and the reader's hashing/decoding are not exercised) and
the encoder (a stand-in that returns clustered 512-d unit vectors, so no model time is counted).

Then: 200 queries (data vectors plus noise; one untimed pass first at the largest ef, whose p50 is
``first_pass_p50_ms``: what the first searches after an ingest see), recall@10 against an exact numpy search over all N
vectors (regenerated chunk by chunk, never held at once) and latency percentiles at each ``--ef`` of the
sweep (``ef_sweep``; ``p50_ms`` / ``recall@10`` are at ``--hnsw-ef``, ``ef_at_recall99`` is the smallest
swept ef whose recall@10 is at least 0.99, with its ``p50_at_recall99_ms``), size on disk, close and
reopen time, and ``resync_s``: a second ingest of the unchanged N, which must upsert and delete nothing.
Prints one JSON line with the machine (CPU, flags, load average at the start and at the end); progress
goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # first: benchmarks/ingest.py must not shadow the ingest package

from benchmarks.machine import machine  # noqa: E402
from ingest.bookkeeping import Bookkeeper  # noqa: E402
from ingest.file_result import FileResult  # noqa: E402
from ingest.finish import finish, start_report  # noqa: E402
from ingest.plan import plan_ingest  # noqa: E402
from ingest.records import point_id  # noqa: E402
from ingest.scan import Listing, RootListing, ScannedFile  # noqa: E402
from ingest.writer import AsyncUpserter  # noqa: E402
from retrieval.settings import Settings  # noqa: E402
from retrieval.store import CollectionMeta, SearchFilter, open_store  # noqa: E402

GEN_CHUNK = 4096  # vectors are generated (and regenerated for the exact search) in fixed chunks
CAMERAS = (("Apple", "iPhone 14"), ("Canon", "EOS R6"), ("NIKON", "D750"), ("SONY", "ILCE-7M3"))


STARTED = time.perf_counter()


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def status_mb(key: str) -> int:
    """A memory line of /proc/self/status in MB: ``RssAnon`` (heap, not the page cache of mapped files)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024)
    return -1


PEAK_ANON = [0]


def log(msg: str) -> None:
    anon = status_mb("RssAnon")
    PEAK_ANON[0] = max(PEAK_ANON[0], anon)
    print(f"[scale {time.perf_counter() - STARTED:7.1f} s, CPU {time.process_time():7.1f} s, "
          f"peak RSS {peak_rss_mb():,} MB, RssAnon {anon:,} MB, "
          f"RSS {status_mb('VmRSS'):,} MB] {msg}", file=sys.stderr, flush=True)


def rss_parts() -> dict[str, int]:
    """This process's RSS in MB by what is mapped (``/proc/self/smaps``): the heap (``anon``), the store's
    files by kind (``vectors``, ``payload``, ``payload_index``, ``graph``, ``wal``, the optimizer's
    ``builder`` copy of the segment being sealed), ``libs`` and the rest."""
    parts: dict[str, int] = {}
    name = "other"
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split(None, 5)
            if head and "-" in head[0] and not head[0].endswith(":"):
                path = head[5].strip() if len(head) > 5 else ""
                name = ("anon" if not path or path.startswith("[") else "builder" if "/temp_segments/" in path
                        else "wal" if "/wal/" in path else "vectors" if "/vector_storage/" in path
                        else "graph" if "/vector_index/" in path else "payload_index" if "/payload_index/" in path
                        else "payload" if "/payload_storage/" in path else "libs" if ".so" in path else "other")
            elif line.startswith("Rss:"):
                parts[name] = parts.get(name, 0) + int(line.split()[1])
    return {k: round(v / 1024) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}


PEAK_PARTS: list[dict[str, int]] = [{}]  # [0]: replaced whole (the main thread may read it meanwhile)


def watch_memory(every_s: float = 0.2, log_every_s: float = 30.0) -> None:
    """Read the RSS every ``every_s``; at each new high, break it down by part (``PEAK_PARTS[0]``: what
    the peak held, within the sampling interval). Log the peak RSS now and then (so a run stopped by a time
    limit still tells its memory)."""
    def loop() -> None:
        last_log, high = time.perf_counter(), 0
        while True:
            time.sleep(every_s)
            if (rss := status_mb("VmRSS")) > high + 8:  # a new high (by more than noise): where it sits
                high = rss
                PEAK_PARTS[0] = rss_parts()
            if time.perf_counter() - last_log >= log_every_s:
                last_log = time.perf_counter()
                log("…")

    threading.Thread(target=loop, daemon=True).start()


class StandIn:
    """The stand-in encoder: vector ``i`` is the same clustered unit vector every time it is asked for."""

    def __init__(self, dim: int, clusters: int, seed: int):
        self.dim, self.seed = dim, seed
        self._cached: tuple[int, np.ndarray] = (-1, np.empty(0))
        centers = np.random.default_rng(seed).standard_normal((clusters, dim), dtype=np.float32)
        self.centers = centers / np.linalg.norm(centers, axis=1, keepdims=True)

    def chunk(self, number: int) -> np.ndarray:
        """Vectors ``number * GEN_CHUNK`` … ``+ GEN_CHUNK`` (the last one asked for is cached)."""
        if self._cached[0] == number:
            return self._cached[1]
        rng = np.random.default_rng((self.seed, number))
        assign = rng.integers(0, self.centers.shape[0], GEN_CHUNK)
        noise = rng.standard_normal((GEN_CHUNK, self.dim), dtype=np.float32) * np.float32(0.7 / np.sqrt(self.dim))
        vectors = self.centers[assign] + noise
        self._cached = (number, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
        return self._cached[1]

    def vectors(self, numbers: np.ndarray) -> np.ndarray:
        """Vectors number ``numbers`` (ascending runs are cheap: one chunk generated per 4,096)."""
        out = np.empty((len(numbers), self.dim), np.float32)
        for c in np.unique(numbers // GEN_CHUNK):
            rows = np.nonzero(numbers // GEN_CHUNK == c)[0]
            out[rows] = self.chunk(int(c))[numbers[rows] - c * GEN_CHUNK]
        return out


def listing(n: int, root: str) -> Listing:
    """``n`` photo-library entries in year/month/event folders of 200 files each, in path order."""
    files = []
    for i in range(n):
        event = i // 200
        folder = f"{2000 + event // 240}/{1 + (event // 20) % 12:02d}/event-{event:05d}"
        files.append(ScannedFile(f"{root}/{folder}/IMG_{i:07d}.jpg", 180_000 + (i * 7919) % 6_000_000,
                                 1_400_000_000_000_000_000 + i * 1_000_003_000, root))
    return Listing(files, [], [RootListing(root)])


def number(file: ScannedFile) -> int:
    """The synthetic file's index (its vector's number)."""
    return int(file.path[-11:-4])


def file_result(file: ScannedFile) -> FileResult:
    """What the reader would make of a decoded photo: content hash, size, EXIF fields."""
    i = number(file)
    make, model = CAMERAS[i % len(CAMERAS)]
    taken = 1_300_000_000 + i * 317
    meta = {"width": 4032, "height": 3024, "format": "JPEG", "camera_make": make, "camera_model": model,
            "taken_ts": float(taken), "taken_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(taken))}
    return FileResult(file, "image", hash=f"{i * 2654435761 % 2**64:016x}{i:016x}", meta=meta)


def ingest_pass(files: Listing, store: Any, stand_in: StandIn, settings: Settings, batch: int) -> dict[str, Any]:
    """One ingest through the real plan → bookkeeping → finish path; returns its counts and timings."""
    start, cpu_start = time.perf_counter(), time.process_time()
    plan = plan_ingest(files, store)
    planned = time.perf_counter()
    report = start_report(plan)
    writer = AsyncUpserter(store)
    standin_s = 0.0
    try:
        book = Bookkeeper(plan, store, writer, report, chunk=settings.ingest.upsert_batch)
        for lo in range(0, len(plan.todo), batch):
            todo = plan.todo[lo:lo + batch]
            t = time.perf_counter()
            results = [file_result(f) for f in todo]
            vectors = stand_in.vectors(np.array([number(f) for f in todo]))
            standin_s += time.perf_counter() - t
            book.handle(results, vectors)
            if lo // batch % 200 == 0:
                log(f"  {lo + len(todo):,}/{len(plan.todo):,} upserted")
    finally:
        writer.close()
    upserted, cpu_upserted = time.perf_counter(), time.process_time()

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "index":
            log(f"  building the HNSW index for {total:,} points" if done == 0 else "  index built")

    finish(plan, book, store, report, prune=False, max_delete_fraction=settings.ingest.max_delete_fraction,
           chunk=settings.ingest.upsert_batch, index_threshold=settings.store.index_threshold, progress=progress)
    store.flush()
    end, cpu_end = time.perf_counter(), time.process_time()
    return {"report": report, "upserts": writer.points, "plan_s": planned - start, "upsert_s": upserted - planned,
            "index_s": end - upserted, "total_s": end - start, "standin_s": standin_s,
            "upsert_cpu_s": cpu_upserted - cpu_start, "index_cpu_s": cpu_end - cpu_upserted}


def exact_top10(stand_in: StandIn, n: int, queries: np.ndarray, allowed: Any = None) -> np.ndarray:
    """Exact top-10 data indices per query, streaming over regenerated chunks (``allowed(numbers)``: a mask of
    the vectors a filter lets through)."""
    best_scores = np.full((len(queries), 10), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 10), np.int64)
    for c in range((n + GEN_CHUNK - 1) // GEN_CHUNK):
        vectors = stand_in.chunk(c)[: n - c * GEN_CHUNK]
        scores = queries @ vectors.T
        if allowed is not None:
            scores[:, ~allowed(np.arange(len(vectors)) + c * GEN_CHUNK)] = -np.inf
        ids = np.broadcast_to(np.arange(len(vectors)) + c * GEN_CHUNK, scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, ids], axis=1)
        keep = np.argpartition(-all_scores, 10, axis=1)[:, :10]
        best_scores = np.take_along_axis(all_scores, keep, 1)
        best_ids = np.take_along_axis(all_ids, keep, 1)
    return best_ids


def filters(n: int) -> dict[str, tuple[SearchFilter, Any]]:
    """Filtered searches measured: a camera (a quarter of the points) and a date range (about 2 %)."""
    lo = 1_300_000_000 + int(n * 0.49) * 317
    hi = lo + int(n * 0.02) * 317
    return {"camera": (SearchFilter(camera="Canon"), lambda i: i % len(CAMERAS) == 1),
            "dates": (SearchFilter(after=float(lo), before=float(hi)),
                      lambda i: (1_300_000_000 + i * 317 >= lo) & (1_300_000_000 + i * 317 < hi))}


def filtered_recall(store: Any, stand_in: StandIn, files: Listing, queries: np.ndarray, where: SearchFilter,
                    keep: Any) -> dict[str, float]:
    """p50 latency and recall@10 of ``queries`` under ``where`` against an exact filtered search."""
    latencies, hits = [], []
    for q in queries:
        t = time.perf_counter()
        found = store.query(q, 10, where)
        latencies.append((time.perf_counter() - t) * 1000)
        hits.append({h.id for h in found})
    truth = exact_top10(stand_in, len(files.files), queries, keep)
    ids = [{point_id(files.files[int(i)].path) for i in row} for row in truth]
    return {"p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "recall@10": round(float(np.mean([len(h & t) / 10 for h, t in zip(hits, ids, strict=True)])), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256, help="files per bookkeeping batch (the runner's batch)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hnsw-ef", type=int, default=128, help="the search setting the main figures use")
    parser.add_argument("--ef", default="64,96,128,256", help="hnsw_ef values of the latency/recall sweep")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construct", type=int, default=100)
    parser.add_argument("--quantization", choices=("none", "int8"), default="none")
    parser.add_argument("--in-ram", action="store_true",
                        help="on_disk_vectors = false: vectors loaded whole at open (the default maps them)")
    parser.add_argument("--index-threshold", type=int, default=20_000)
    parser.add_argument("--datatype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--segment-points", type=int, default=100_000)
    parser.add_argument("--layout", type=int, choices=(1, 2), default=2,
                        help="1: stores made before layout 2 (float32, ancestors lists, one appendable segment)")
    parser.add_argument("--store", help="folder for the store (default: a temporary folder under .bench/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the one JSON line (always printed)")
    args = parser.parse_args()

    base = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="scale-", dir=_bench_dir()))
    settings = Settings.model_validate({
        "store": {"path": str(base), "collection": "scale", "hnsw_ef": args.hnsw_ef, "hnsw_m": args.m,
                  "hnsw_ef_construct": args.ef_construct, "quantization": args.quantization,
                  "on_disk_vectors": not args.in_ram, "index_threshold": args.index_threshold,
                  "vector_datatype": args.datatype, "segment_points": args.segment_points}})
    load_start = machine()["loadavg"]
    stand_in = StandIn(args.dim, args.clusters, args.seed)
    files = listing(args.points, "/home/user/Pictures")
    watch_memory()
    log(f"{args.points:,} synthetic files; store in {base}")
    store = open_store(settings, create=True)
    if args.layout == 1:
        store = _layout1(store, settings, args.dim)
    else:
        store.create(CollectionMeta("stand-in", "", args.dim))
    first = ingest_pass(files, store, stand_in, settings, args.batch)
    assert first["report"].indexed == args.points, first["report"]
    log(f"ingest: plan {first['plan_s']:.1f} s, upserts {first['upsert_s']:.1f} s, index {first['index_s']:.1f} s")
    searchable_anon = status_mb("RssAnon")
    segments = store.shard.info().segments_count

    rng = np.random.default_rng(args.seed + 1)
    queries = stand_in.vectors(np.sort(rng.integers(0, args.points, args.queries + 50)))
    rng.shuffle(queries)
    queries += rng.standard_normal(queries.shape, dtype=np.float32) * np.float32(0.4 / np.sqrt(args.dim))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    timed = queries[50:]
    sweep_efs = sorted({args.hnsw_ef, *(int(e) for e in args.ef.split(","))})
    store.hnsw_ef = sweep_efs[-1]
    cold = []
    for q in [*queries[:50], *timed]:  # the first pass after a build pages the graphs and vectors in
        t = time.perf_counter()
        store.query(q, 10, SearchFilter())
        cold.append((time.perf_counter() - t) * 1000)
    truth = exact_top10(stand_in, args.points, timed)
    id_of = {number(files.files[i]): point_id(files.files[i].path) for i in set(truth.ravel().tolist())}
    sweep = {}
    for ef in sweep_efs:
        store.hnsw_ef = ef
        latencies, hits = [], []
        for q in timed:
            t = time.perf_counter()
            found = store.query(q, 10, SearchFilter())
            latencies.append((time.perf_counter() - t) * 1000)
            hits.append({h.id for h in found})
        sweep[ef] = {"ef": ef, "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                     "p95_ms": round(float(np.percentile(latencies, 95)), 2),
                     "recall@10": round(float(np.mean([len(h & {id_of[int(i)] for i in row}) / 10
                                                       for h, row in zip(hits, truth, strict=True)])), 4)}
        log(f"hnsw_ef {ef}: {sweep[ef]}")
    store.hnsw_ef = args.hnsw_ef
    good = [row for row in sweep.values() if row["recall@10"] >= 0.99]
    warmed_mb = round(store.warm() / 2**20)  # as `clipdex serve` does at start: payload indexes in the page cache
    filtered = {name: filtered_recall(store, stand_in, files, timed[:100], where, keep)
                for name, (where, keep) in filters(args.points).items()}
    log(f"filtered {filtered}")
    store.close()
    disk_mb = sum(p.stat().st_size for p in base.rglob("*") if p.is_file()) / 2**20

    t = time.perf_counter()
    store = open_store(settings)
    store.query(timed[0], 10, SearchFilter())
    reopen_s = time.perf_counter() - t
    log("reopened; unchanged re-sync")
    second = ingest_pass(files, store, stand_in, settings, args.batch)
    resync = second["report"]
    assert second["upserts"] == 0 and resync.deleted == 0 and resync.unchanged == args.points, resync
    store.close()
    row = {"points": args.points, "upsert_per_s": round(args.points / first["upsert_s"]),
           "searchable_s": round(first["total_s"], 1), "p50_ms": sweep[args.hnsw_ef]["p50_ms"],
           "p95_ms": sweep[args.hnsw_ef]["p95_ms"], "recall@10": sweep[args.hnsw_ef]["recall@10"],
           "first_pass_p50_ms": round(float(np.percentile(cold, 50)), 2),
           "ef_at_recall99": good[0]["ef"] if good else None,
           "p50_at_recall99_ms": good[0]["p50_ms"] if good else None, "ef_sweep": list(sweep.values()),
           "peak_rss_mb": peak_rss_mb(),
           "disk_mb": round(disk_mb), "reopen_s": round(reopen_s, 2), "resync_s": round(second["total_s"], 1),
           "resync_upserts": second["upserts"], "index_s": round(first["index_s"], 1),
           "upsert_s": round(first["upsert_s"], 1), "plan_s": round(first["plan_s"], 1),
           "upsert_cpu_s": round(first["upsert_cpu_s"], 1), "index_cpu_s": round(first["index_cpu_s"], 1),
           "resync_cpu_s": round(second["upsert_cpu_s"] + second["index_cpu_s"], 1),
           **{f"{k}_{name}": v for name, row in filtered.items() for k, v in row.items()},
           "filtered_warmed_mb": warmed_mb, "acorn_max_selectivity": edge_acorn_max_selectivity(),
           "peak_rss_parts_mb": PEAK_PARTS[0], "sampled_peak_mb": sum(PEAK_PARTS[0].values()),
           "rss_anon_mb": status_mb("RssAnon"),
           "rss_anon_searchable_mb": searchable_anon,
           "rss_anon_peak_logged_mb": max(PEAK_ANON[0], searchable_anon), "segments": segments,
           "standin_s": round(first["standin_s"], 1), "layout": args.layout, "hnsw_ef": args.hnsw_ef, "m": args.m,
           "ef_construct": args.ef_construct, "quantization": args.quantization, "on_disk": not args.in_ram,
           "datatype": "float32" if args.layout == 1 else args.datatype, "index_threshold": args.index_threshold,
           "segment_points": None if args.layout == 1 else args.segment_points,
           **machine(), "loadavg_start": load_start}
    print(json.dumps(row), flush=True)
    if not args.store:
        shutil.rmtree(base, ignore_errors=True)


def _layout1(store: Any, settings: Settings, dim: int) -> Any:
    """A fresh store made as clipdex made them before layout 2 (float32, ancestors indexed, no segment size)."""
    import qdrant_edge as qe

    from retrieval.store.base import LEGACY_KEYWORD_FIELDS
    from retrieval.store.edge import META_FILE, SHARD_DIR, _write_json

    c = store.config  # main's _edge_config at 33f8e19, verbatim in effect
    quantization = (qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned)
                    if c.quantization == "int8" else None)
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine,
                                    memory=qe.Memory.Cold if c.on_disk else None),
        hnsw_config=qe.HnswIndexConfig(m=c.m, ef_construct=c.ef_construct, full_scan_threshold=c.full_scan_threshold),
        quantization_config=quantization,
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=max(1, c.index_threshold * dim * 4 // 1024)))
    folder = store.folder
    shard = qe.EdgeShard.create(str(folder / SHARD_DIR), config)
    for field in ("path", "hash", "camera_make", "camera_model", "root", *LEGACY_KEYWORD_FIELDS):
        shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
    shard.update(qe.UpdateOperation.create_field_index("taken_ts", qe.PayloadSchemaType.Float))
    shard.close()
    meta = CollectionMeta("stand-in", "", dim).as_dict()
    _write_json(folder / SHARD_DIR / META_FILE, meta)
    _write_json(folder / META_FILE, meta)
    store.close()
    return open_store(settings.with_overrides(store={"segment_points": 10**12}))  # one appendable segment, as then


def edge_acorn_max_selectivity() -> float | None:
    """The ACORN setting filtered searches ran with (retrieval.store.edge)."""
    from retrieval.store import edge

    return None if edge._ACORN is None else edge._ACORN.max_selectivity


def _bench_dir() -> str:
    folder = REPO / ".bench"
    folder.mkdir(exist_ok=True)
    return str(folder)


if __name__ == "__main__":
    main()
