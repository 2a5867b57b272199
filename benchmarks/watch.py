"""Searching while ``clipdex serve --watch`` ingests (issue 7, "Search while ingesting").

One process, the real server (uvicorn on a loopback port, ``create_app(..., watch=[LIB])``), its real
sync thread and watchdog observer, a fresh embedded store, and an HTTP client:

* ``during_*``: text searches sent back to back while the initial sync of ``--images`` new files runs
  (``search_errors`` counts answers other than 200);
* ``idle_*``: the same searches after the sync;
* ``new_file_searchable_*``: a new image file is written into the watched folder; seconds until the
  server holds its point (polled every 20 ms), over ``--new-files`` files one after another;
* ``deleted_file_dropped_s``: the same for a deleted file.

The library: distinct noisy variants of the bundled Fashion-MNIST samples (28x28 PNGs) unless
``--size`` asks for bigger pictures. Model: the ``[model]`` of ``--config`` (default
configs/demo.toml, the bundled model). Prints one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(f"[watch-bench] {msg}", file=sys.stderr, flush=True)


def write_images(folder: Path, count: int, start: int, size: int) -> list[Path]:
    """Distinct pictures: a bundled sample plus per-file noise, saved as PNG."""
    samples = sorted((REPO / "samples" / "fashion-mnist").rglob("*.png"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        rng = np.random.default_rng(i)
        with Image.open(samples[i % len(samples)]) as im:
            base = np.asarray(im.convert("L").resize((size, size)), dtype=np.int16)
        noisy = np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:06d}.png"
        Image.fromarray(noisy).save(path)
        paths.append(path)
    return paths


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "max_ms": 0.0}
    ms = np.asarray(values) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "max_ms": round(float(ms.max()), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=28, help="image side in pixels")
    parser.add_argument("--new-files", type=int, default=10)
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.toml"))
    parser.add_argument("--json", action="store_true", help="(the output is always one JSON line)")
    args = parser.parse_args()

    import httpx

    from retrieval import load_settings
    from retrieval.index import Index
    from retrieval.server import create_app
    from tests.test_server import serving

    with tempfile.TemporaryDirectory(prefix="clipdex-watch-bench-") as tmp:
        lib = Path(tmp) / "lib"
        log(f"writing {args.images} images")
        write_images(lib, args.images, 0, args.size)
        base = load_settings(args.config)
        settings = base.with_overrides(store={"path": str(Path(tmp) / "store"), "url": ""})
        query = {"q": "a photo of a sneaker", "limit": 10}
        with (Index.open(settings, create=True) as index,
              serving(create_app(index, watch=[str(lib)])) as url, httpx.Client(base_url=url, timeout=600) as http):
            index.encoder  # noqa: B018  (serve loads the model before it listens)
            during: list[float] = []
            errors = 0
            log("initial sync, searching meanwhile")
            while (status := http.get("/api/status").json())["sync"]["syncs"] == 0:
                t = time.perf_counter()
                response = http.get("/api/search", params=query)
                elapsed = time.perf_counter() - t
                if status["points"] > 0 or response.status_code == 200:  # before the collection exists: 400
                    during.append(elapsed)
                    errors += response.status_code != 200
            last = status["sync"]["last"]
            log(f"sync: {last}")
            idle = []
            for _ in range(100):
                t = time.perf_counter()
                http.get("/api/search", params=query).raise_for_status()
                idle.append(time.perf_counter() - t)

            def held(path: Path) -> bool:  # a search below its folder, with every result, lists it
                rows = http.get("/api/search", params={**query, "folder": str(path.parent), "limit": 10000}).json()
                return str(path) in {row["path"] for row in rows}

            def wait(check: Any) -> float:
                t = time.perf_counter()
                while not check():
                    if time.perf_counter() - t > 120:
                        raise SystemExit("timed out waiting for the watcher")
                    time.sleep(0.02)
                return time.perf_counter() - t

            searchable = []
            for i in range(args.new_files):
                path = write_images(lib / "new", 1, 10**6 + i, args.size)[0]
                searchable.append(wait(lambda p=path: held(p)))
            gone = lib / "new" / f"{10**6:06d}.png"
            gone.unlink()
            dropped = wait(lambda: not held(gone))
        result = {
            "images": args.images, "size": args.size, "model": settings.model.name.rsplit("/", 1)[-1],
            "sync_s": last["seconds"], "sync_img_per_s": round(args.images / last["seconds"], 1),
            "sync_error": last["error"], "searches_during_sync": len(during), "search_errors": errors,
            **{f"during_{k}": v for k, v in percentiles(during).items()},
            **{f"idle_{k}": v for k, v in percentiles(idle).items()},
            "new_file_searchable_p50_s": round(float(np.median(searchable)), 3),
            "new_file_searchable_max_s": round(max(searchable), 3),
            "deleted_file_dropped_s": round(dropped, 3), "debounce_s": settings.serve.debounce_s,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
