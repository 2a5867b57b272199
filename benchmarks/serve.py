"""Load on a real ``clipdex serve`` (issue 10: "benchmarks/serve.py --json").

Ingests ``samples/fashion-mnist`` with the bundled model (``configs/demo.toml``) into a temporary store,
starts the real command (``python -m retrieval.cli serve``) on 127.0.0.1, then runs, at the same time,
``--clients`` threads of ``--searches`` text searches each (class prompts, ``GET /api/search``) and
``--uploaders`` threads of ``--uploads`` example-image searches each (``POST /api/search`` with a
sample PNG). Every request has its own latency; any answer but 200 (or a transport error) is an error.

Prints one JSON line on stdout: ``{"requests", "errors", "p50_ms", "p95_ms", "rps", ...}`` (plus the
same percentiles for text and upload requests apart); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "fashion-mnist"


def log(msg: str) -> None:
    print(f"[serve-bench] {msg}", file=sys.stderr, flush=True)


def clipdex(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "retrieval.cli", *map(str, args)]


class Recorder:
    """Latencies and errors of every request, from all threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {"text": [], "upload": []}
        self.errors: list[str] = []

    def timed(self, kind: str, call: Any) -> None:
        started = time.perf_counter()
        try:
            response = call()
            problem = None if response.status_code == 200 else f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        with self.lock:
            self.latency[kind].append(elapsed)
            if problem:
                self.errors.append(f"{kind}: {problem}")


def text_client(url: str, searches: int, prompts: list[str], seed: int, rec: Recorder) -> None:
    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=url, timeout=120) as http:
        for _ in range(searches):
            prompt = prompts[int(rng.integers(len(prompts)))]
            rec.timed("text", lambda p=prompt: http.get("/api/search", params={"q": p, "limit": 10}))


def upload_client(url: str, uploads: int, images: list[Path], seed: int, rec: Recorder) -> None:
    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=url, timeout=120) as http:
        for _ in range(uploads):
            image = images[int(rng.integers(len(images)))]
            files = {"image": (image.name, image.read_bytes(), "image/png")}
            rec.timed("upload", lambda f=files: http.post("/api/search", files=f, data={"limit": "10"}))


def percentiles(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the one JSON line (always printed)")
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.toml"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--searches", type=int, default=100, help="text searches per client")
    parser.add_argument("--uploaders", type=int, default=2)
    parser.add_argument("--uploads", type=int, default=50, help="example-image searches per uploader")
    args = parser.parse_args()
    if str(REPO) not in sys.path:  # run as a script: `python benchmarks/X.py`
        sys.path.insert(0, str(REPO))
    from benchmarks.server_process import free_port, wait_until_up


    classes = sorted(p.name for p in SAMPLES.iterdir() if p.is_dir())
    prompts = [template.format(c.replace("_", " ")) for c in classes
               for template in ("a photo of a {}.", "a {}", "a black and white photo of a {}.")]
    images = sorted(SAMPLES.rglob("*.png"))
    with tempfile.TemporaryDirectory(prefix="clipdex-serve-bench-") as tmp:
        store = Path(tmp) / "store"
        log(f"ingesting {len(images)} sample images into {store}")
        subprocess.run(clipdex("ingest", SAMPLES, "--config", args.config, "--store", store), check=True,
                       stdout=subprocess.DEVNULL)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(clipdex("serve", "--config", args.config, "--store", store, "--port", str(port),
                                          "--log-level", "warning"), env=os.environ | {"CLIPDEX_API_KEY": ""})
        try:
            wait_until_up(url, server)
            log(f"{args.clients} clients x {args.searches} text searches + {args.uploaders} uploaders x "
                f"{args.uploads} uploads against {url}")
            rec = Recorder()
            threads = [threading.Thread(target=text_client, args=(url, args.searches, prompts, i, rec))
                       for i in range(args.clients)]
            threads += [threading.Thread(target=upload_client, args=(url, args.uploads, images, 100 + i, rec))
                        for i in range(args.uploaders)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    every = rec.latency["text"] + rec.latency["upload"]
    for error in rec.errors[:5]:
        log(f"error: {error}")
    result = {"requests": len(every), "errors": len(rec.errors), **percentiles(every),
              "rps": round(len(every) / seconds, 1), "seconds": round(seconds, 2),
              "clients": args.clients, "uploaders": args.uploaders,
              "text": percentiles(rec.latency["text"]), "upload": percentiles(rec.latency["upload"])}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
