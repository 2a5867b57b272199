"""Query latency through the library API on a 100k-point store (issue 8: "benchmarks/query.py --json").

One embedded store under ``.bench/`` holds ``--points`` synthetic, clustered unit vectors with the
payload ingest writes (path, folder, ancestors, size), HNSW-indexed; it is built once and reused.
The queries go through the real ``Index`` with a real model (ViT-B-32, random weights saved once as a
``local-dir:`` folder: speed does not depend on the weights), at the default precision unless
``--precision`` says otherwise, on the default query engine (ONNX Runtime, exported once before the timing;
``--engine torch`` for the torch path):

* ``text``: ``index.search(text=...)``, a different caption each time (no LRU cache hit), warm model;
* ``image``: ``index.search(image=...)`` of a 1024x768 JPEG (decode, preprocess, encode, search);
* ``like``: ``index.search(like=[path])`` by a stored point (no decode, no encode);

the store's files are read into the page cache first, as ``clipdex serve`` does at start (``--cold-pages``:
not; then the first searches read the memory-mapped vectors' pages from disk);
* ``cli_search_s``: a whole ``clipdex search "..."`` process against the same store (median of 3).

Prints one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

NOUNS = ["dog", "cat", "beach", "mountain", "car", "bicycle", "city street", "forest", "bowl of soup", "child",
         "sunset", "boat", "bridge", "train", "flower", "birthday cake", "snowy field", "kitchen", "guitar", "horse"]
PLACES = ["at night", "in the rain", "on a sunny day", "from above", "in black and white", "close up"]


def log(msg: str) -> None:
    print(f"[query-bench] {msg}", file=sys.stderr, flush=True)


def captions(n: int) -> list[str]:
    """``n`` distinct realistic queries (5-12 tokens), so every one is really encoded."""
    out = [f"a photo of a {noun} {place}" for place in PLACES for noun in NOUNS]
    out += [f"a {noun} {place}, number {i}" for i in range(n) for noun, place in [(NOUNS[i % 20], PLACES[i % 6])]]
    return out[:n]


def synthetic_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors (200 centres, noise), closer to real embeddings than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 200, n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fill_store(index: Any, n: int, dim: int, precision: str) -> list[str]:
    """Create and fill the collection (if it does not hold ``n`` points yet); returns the stored paths."""
    from ingest.records import ancestors, point_id
    from retrieval.store import CollectionMeta

    paths = [f"/bench/photos/{i // 1000:03d}/img_{i:06d}.jpg" for i in range(n)]
    store = index.store
    if store.meta() is not None and store.count() == n:
        return paths
    if store.meta() is None:
        enc = index.encoder
        store.create(CollectionMeta(enc.identity.name, enc.identity.pretrained, enc.dim, enc.precision,
                                    weights=enc.identity.weights))
    vectors = synthetic_vectors(n, dim)
    t0 = time.perf_counter()
    for start in range(0, n, 2048):
        chunk = paths[start : start + 2048]
        payloads = [{"path": p, "folder": p.rsplit("/", 1)[0], "ancestors": ancestors(p), "size": 1000}
                    for p in chunk]
        store.upsert([point_id(p) for p in chunk], vectors[start : start + len(chunk)], payloads)
    log(f"upserted {n} points in {time.perf_counter() - t0:.1f} s; building the HNSW index")
    t0 = time.perf_counter()
    store.optimize()
    log(f"optimize: {time.perf_counter() - t0:.1f} s")
    return paths


def timed(fn: Any, rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def ensure_model(folder: Path, arch: str) -> Path:
    """A random-init ``arch`` (seed 0) saved as a ``local-dir:`` model folder, made once."""
    model_dir = folder / f"query-model-{arch}"
    if (model_dir / "open_clip_model.safetensors").is_file():
        return model_dir
    import torch

    from retrieval.model.torch_backend import open_clip, save_model_folder

    log(f"saving a random-init {arch} to {model_dir}")
    torch.manual_seed(0)
    model = open_clip.create_model(arch).eval()
    preprocess = {k: list(v) if isinstance(v, tuple) else v for k, v in model.visual.preprocess_cfg.items()}
    return save_model_folder(model, open_clip.get_model_config(arch), model_dir, preprocess)


def cli_search(config: Path, text: str) -> float:
    t0 = time.perf_counter()
    env = {**os.environ, "CLIPDEX_TEXT_CACHE": "0"}  # a first query: no vector kept from an earlier run
    proc = subprocess.run([sys.executable, "-m", "retrieval.cli", "search", text, "--config", str(config),
                           "--limit", "10"], capture_output=True, text=True, cwd=REPO, env=env)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"clipdex search failed: {proc.stderr.strip()}")
    return dt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=40, help="queries of each kind")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "int8", "fp16"))
    parser.add_argument("--engine", default="auto", choices=("auto", "torch"))
    parser.add_argument("--compare-torch", action="store_true",
                        help="also time whole `clipdex search` processes with engine = torch, alternating rounds")
    parser.add_argument("--folder", type=Path, default=REPO / ".bench")
    parser.add_argument("--cold-pages", action="store_true",
                        help="do not read the store's files into the page cache first (a server does, at start)")
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed)")
    args = parser.parse_args(argv)

    from benchmarks.ingest import ensure_images
    from benchmarks.machine import byte_compile, machine
    from retrieval.index import Index
    from retrieval.settings import load_settings

    compiled = byte_compile()  # as an installed clipdex has its .pyc files
    folder = args.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    images = sorted(ensure_images(folder / "jpegs-1024x768", 8).glob("*.jpg"))[:8]
    model_dir = ensure_model(folder, args.model)
    config = folder / f"query-{args.model}-{args.precision}-{args.engine}.toml"
    config.write_text("\n".join([
        "[model]", f'name = "local-dir:{model_dir}"', 'pretrained = ""', f'precision = "{args.precision}"',
        f'engine = "{args.engine}"', "[store]", f'path = "{folder / f"query-store-{args.points}"}"',
        f'collection = "{args.model}"', ""]))
    settings = load_settings(config)
    export_s = None
    if args.engine != "torch":
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "retrieval.cli", "model", "export", "--config", str(config)],
                       check=True, cwd=REPO, capture_output=True)
        export_s = round(time.perf_counter() - t0, 1)
        log(f"clipdex model export: {export_s} s (once per model)")

    t0 = time.perf_counter()
    with Index.open(settings, create=True) as index:
        encoder = index.encoder
        log(f"model {args.model} loaded at {encoder.precision} in {time.perf_counter() - t0:.1f} s")
        paths = fill_store(index, args.points, encoder.dim, encoder.precision)
        warm_bytes = index.store.warm() if not args.cold_pages else 0  # as `clipdex serve` does at start
        texts = captions(args.rounds + 5)
        for i in range(5):  # warm-up: first calls allocate, page the store in
            index.search(text=texts[-1 - i], limit=10)
            index.search(image=images[i % len(images)], limit=10)
        text_ms = timed(lambda i: index.search(text=texts[i], limit=10), args.rounds)
        cached_ms = timed(lambda i: index.search(text=texts[i], limit=10), args.rounds)
        image_ms = timed(lambda i: index.search(image=images[i % len(images)], limit=10), args.rounds)
        try:
            like_ms: list[float] | None = timed(
                lambda i: index.search(like=[paths[(i * 7919) % len(paths)]], limit=10), args.rounds)
        except TypeError:  # an Index without like/unlike search
            like_ms = None
        precision = encoder.precision
        engines = encoder.engines
    torch_config = config.with_name(config.stem + "-vs-torch.toml")
    torch_config.write_text(config.read_text().replace(f'engine = "{args.engine}"', 'engine = "torch"'))
    cli_s, torch_s = [], []
    for i in range(3):  # alternating who goes first
        for which in ([cli_s, torch_s] if i % 2 == 0 else [torch_s, cli_s]):
            if which is cli_s:
                cli_s.append(cli_search(config, texts[i]))
            elif args.compare_torch:
                torch_s.append(cli_search(torch_config, texts[i]))
    result = {
        "points": args.points, "model": args.model, "precision": precision, "rounds": args.rounds,
        "text_p50_ms": pct(text_ms, 50), "text_p95_ms": pct(text_ms, 95),
        "image_p50_ms": pct(image_ms, 50), "image_p95_ms": pct(image_ms, 95),
        "like_p50_ms": pct(like_ms, 50) if like_ms else None,
        "like_p95_ms": pct(like_ms, 95) if like_ms else None,
        "cli_search_s": round(statistics.median(cli_s), 2), "cli_search_runs_s": [round(x, 2) for x in cli_s],
        "cli_search_torch_runs_s": [round(x, 2) for x in torch_s] or None,
        "text_cached_p50_ms": pct(cached_ms, 50), "store_warmed_mb": round(warm_bytes / 2**20),
        "engines": engines, "export_s": export_s, "byte_compiled": compiled, **machine(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
