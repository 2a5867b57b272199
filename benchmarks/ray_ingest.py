"""`clipdex ingest --ray local` against the plain local ingest, same folder, same model, same machine.

Starts one local Ray cluster (its start-up is reported apart, ``ray_init_s``), then alternates rounds:
a local ``Index.ingest`` and a Ray ``Index.ingest(ray="local")``, each into a fresh embedded store,
scan to last upsert. The order inside a round alternates too (local first in odd rounds), so drift of
a shared machine's load hits both sides alike. ``ratio`` = Ray img/s / local img/s per round and over
all rounds. Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python benchmarks/ray_ingest.py --json                       # 128 JPEGs, ViT-B-32, 3 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.ingest import ensure_images  # noqa: E402  (after the path set-up)


def log(msg: str) -> None:
    print(f"[ray-bench] {msg}", file=sys.stderr, flush=True)


def one_pass(settings: Any, encoder: Any, folder: Path, n: int, ray: str) -> float:
    """Seconds for ``Index.ingest`` of ``folder`` into a fresh embedded store ("" = local path)."""
    from retrieval.index import Index

    with tempfile.TemporaryDirectory(prefix="clipdex-ray-bench-") as tmp:
        index = Index.open(settings.with_overrides(store={"path": tmp, "url": ""}), create=True, encoder=encoder)
        with index:
            t0 = time.perf_counter()
            report = index.ingest([str(folder)], ray=ray)
            seconds = time.perf_counter() - t0
            count = index.store.count()
    if report.indexed != n or count != n or report.failed:
        raise RuntimeError(f"{ray or 'local'}: indexed {report.indexed}, stored {count} of {n}: {report.failed[:3]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="", help='"" = random init (speed does not depend on weights)')
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the local path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the local Ray cluster")
    parser.add_argument("--encoder-cpus", type=float, default=1.5, help="[ray] encoder_cpus")
    parser.add_argument("--decode-cpus", type=float, default=0.5, help="[ray] decode_cpus")
    parser.add_argument("--folder", type=Path, default=REPO / ".bench" / "jpegs-1024x768")
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed; kept for CLI)")
    args = parser.parse_args(argv)

    import ray

    from retrieval.model.torch_backend import TorchEncoder
    from retrieval.settings import Settings

    folder = ensure_images(args.folder.resolve(), args.images)
    settings = Settings().with_overrides(
        model={"name": args.model, "pretrained": args.pretrained, "batch_size": args.batch_size},
        ingest={"workers": args.workers},
        ray={"encoder_cpus": args.encoder_cpus, "decode_cpus": args.decode_cpus})
    log(f"loading {args.model} ({args.pretrained or 'random init'})")
    encoder = TorchEncoder.load(settings.model)
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="warning")
    init_s = time.perf_counter() - t0
    log(f"ray.init: {init_s:.1f} s")
    one_pass(settings, encoder, folder, args.images, "local")  # warm-up: worker processes, imports
    local_rates: list[float] = []
    ray_rates: list[float] = []
    try:
        for r in range(args.rounds):
            order = ["", "local"] if r % 2 == 0 else ["local", ""]
            for ray_address in order:
                rate = args.images / one_pass(settings, encoder, folder, args.images, ray_address)
                (ray_rates if ray_address else local_rates).append(rate)
                log(f"round {r + 1}: {'ray' if ray_address else 'local'} {rate:.2f} img/s")
    finally:
        ray.shutdown()
    local = sum(local_rates) / len(local_rates)
    on_ray = sum(ray_rates) / len(ray_rates)
    result = {
        "images": args.images, "model": args.model, "batch_size": args.batch_size, "device": str(encoder.device),
        "cpu_count": os.cpu_count(), "ray_cpus": args.cpus, "encoder_cpus": args.encoder_cpus,
        "decode_cpus": args.decode_cpus, "local_workers": args.workers, "rounds": args.rounds,
        "ray_init_s": round(init_s, 1),
        "local_img_per_s": round(local, 2), "ray_img_per_s": round(on_ray, 2), "ratio": round(on_ray / local, 3),
        "round_ratios": [round(b / a, 3) for a, b in zip(local_rates, ray_rates, strict=True)],
        "local_rounds_img_per_s": [round(x, 2) for x in local_rates],
        "ray_rounds_img_per_s": [round(x, 2) for x in ray_rates],
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
