"""GPU ingest in one step (issue 27): a real ``clipdex ingest`` of JPEGs this script writes, on CUDA.

    python -m benchmarks.gpu                 # 20,000 JPEGs, ViT-B-32 at fp16 on the GPU, decoding in workers
    python -m benchmarks.gpu --cpu-smoke     # a tiny model, 48 images, on the CPU (what the test runs)

It writes ``--images`` distinct 640x480 JPEGs (``--base`` pictures drawn once, each file made distinct by a
JPEG comment so no two share a content hash: ingest encodes every one), saves a random-init ``--model``
(seed 0; speed does not depend on the weights) as a ``local-dir:`` folder, and runs the library's ingest
(``Index.ingest``: scan, hash, decode in ``--workers`` DataLoader processes into pinned memory, encode at
``precision = "auto"`` (fp16 on CUDA), upsert, index) into a fresh embedded store. While it runs, the GPU's
utilisation is sampled (pynvml where installed, else ``nvidia-smi``). Then the model alone (random batches
already on the device) gives the encoder's ceiling. Without a GPU it runs the CPU smoke mode by itself
(``"mode": "cpu-smoke"``). Prints one JSON line; progress on stderr. Everything lives under ``--folder``
(default ``.bench/gpu``); images and model are made once and reused.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
TINY_PREPROCESS = {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def log(msg: str) -> None:
    print(f"[gpu-bench] {msg}", file=sys.stderr, flush=True)


def base_jpeg(seed: int, size: tuple[int, int]) -> bytes:
    """One photo-like JPEG: smooth gradients, shapes and noise (so decoding does real work)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = [127 + 100 * np.sin(x / rng.uniform(20, 90) + rng.uniform(0, 6))
                * np.cos(y / rng.uniform(20, 90) + rng.uniform(0, 6)) for _ in range(3)]
    pixels = np.stack(channels, -1) + rng.normal(0, 12, (h, w, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        draw.ellipse([x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))],
                     fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


def stamped(jpeg: bytes, number: int) -> bytes:
    """``jpeg`` with a comment segment (FF FE) right after its start marker: distinct bytes, the same picture."""
    text = f"clipdex gpu bench {number}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + jpeg[2:]


def ensure_images(folder: Path, n: int, base: int, size: tuple[int, int]) -> Path:
    """``folder`` holding exactly ``n`` distinct JPEGs (made once)."""
    marker = folder / f".complete-{n}-{base}-{size[0]}x{size[1]}"
    if marker.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        pictures = list(pool.map(base_jpeg, range(base), [size] * base))
    for i in range(n):
        sub = folder / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(exist_ok=True)
        (sub / f"img_{i:06d}.jpg").write_bytes(stamped(pictures[i % base], i))
    marker.write_text("")
    log(f"wrote {n:,} JPEGs ({base} pictures, {size[0]}x{size[1]}) in {time.perf_counter() - t0:.1f} s")
    return folder


def ensure_model(folder: Path, arch: str) -> Path:
    """A random-init model (seed 0) saved as a ``local-dir:`` folder; ``arch`` "tiny" is the test-size CLIP."""
    model_dir = folder / f"model-{arch}"
    if (model_dir / "open_clip_model.safetensors").is_file():
        return model_dir
    import torch

    from retrieval.model.torch_backend import open_clip, save_model_folder

    torch.manual_seed(0)
    if arch == "tiny":
        return save_model_folder(open_clip.CLIP(**TINY_CFG), TINY_CFG, model_dir, TINY_PREPROCESS)
    model = open_clip.create_model(arch).eval()
    preprocess = {k: list(v) if isinstance(v, tuple) else v for k, v in model.visual.preprocess_cfg.items()}
    return save_model_folder(model, open_clip.get_model_config(arch), model_dir, preprocess)


class GpuSampler:
    """The GPU's utilisation (percent) sampled every ``period`` seconds while running (pynvml, else nvidia-smi)."""

    def __init__(self, period: float = 0.2):
        self.period, self.samples, self.memory_mb = period, [], []
        self.source = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _nvml(self) -> Any:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
                                                              or 0))
            self.source = "pynvml"

            def read() -> tuple[float, float]:
                util = pynvml.nvmlDeviceGetUtilizationRates(handle)
                return float(util.gpu), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            return read
        except Exception:  # noqa: BLE001  not installed, or no NVML: nvidia-smi then
            return None

    def _run(self) -> None:
        read = self._nvml()
        while not self._stop.is_set():
            try:
                if read is not None:
                    util, mem = read()
                else:
                    out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                          "--format=csv,noheader,nounits", "-i", "0"],
                                         capture_output=True, text=True, timeout=5).stdout.strip().splitlines()[0]
                    util, mem = (float(v) for v in out.split(","))
                    self.source = "nvidia-smi"
                self.samples.append(util)
                self.memory_mb.append(mem)
            except Exception:  # noqa: BLE001  no way to read it: the figure says so (None)
                return
            self._stop.wait(self.period)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> dict[str, Any]:
        s = self.samples
        return {"gpu_util_mean": round(statistics.mean(s), 1) if s else None,
                "gpu_util_median": round(statistics.median(s), 1) if s else None,
                "gpu_util_max": max(s) if s else None, "gpu_util_samples": len(s),
                "gpu_memory_max_mb": round(max(self.memory_mb)) if self.memory_mb else None,
                "gpu_util_source": self.source or None}


def model_only(encoder: Any, batch: int, rounds: int) -> float:
    """Images/s of the image tower alone on random batches already on its device (the encoder's ceiling)."""
    import torch

    pixels = torch.randn(batch, 3, encoder.image_size, encoder.image_size, device=encoder.device)
    encoder.encode_images(pixels)  # warm-up: kernels picked, memory allocated
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(rounds):
        encoder.encode_images(pixels)  # returns numpy: each call waits for its batch
    return batch * rounds / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--base", type=int, default=256, help="distinct pictures the files are made from")
    parser.add_argument("--size", default="640x480", help="JPEG size, WxH")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="decoder processes [default: cores - 2, max 14]")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="a tiny model and 48 images on the CPU (automatic when there is no GPU)")
    parser.add_argument("--folder", type=Path, default=REPO / ".bench" / "gpu")
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed)")
    args = parser.parse_args(argv)

    import torch

    from benchmarks.machine import machine
    from retrieval.index import Index
    from retrieval.settings import load_settings

    cuda = torch.cuda.is_available()
    mode = "gpu"
    if args.cpu_smoke or not cuda:
        mode = "cpu-smoke" if args.cpu_smoke else "cpu-smoke (no GPU found)"
        args.images, args.base, args.size, args.model = min(args.images, 48), min(args.base, 8), "96x72", "tiny"
        args.batch, args.workers, cuda = min(args.batch, 16), 2 if args.workers is None else args.workers, False
        log(f"{mode}: {args.images} images, tiny model, CPU")
    workers = args.workers if args.workers is not None else max(1, min((os.cpu_count() or 2) - 2, 14))
    size = tuple(int(v) for v in args.size.lower().split("x"))
    folder = args.folder.resolve()
    images = ensure_images(folder / f"jpegs-{args.images}-{args.size}", args.images, args.base, size)  # type: ignore[arg-type]
    model_dir = ensure_model(folder, args.model)
    store = folder / f"store-{mode.split()[0]}"
    shutil.rmtree(store, ignore_errors=True)
    config = folder / f"gpu-{mode.split()[0]}.toml"
    config.write_text("\n".join([
        "[model]", f'name = "local-dir:{model_dir}"', 'pretrained = ""', f'device = "{"cuda" if cuda else "cpu"}"',
        'precision = "auto"' if cuda else 'precision = "fp32"', f"batch_size = {args.batch}",
        "[store]", f'path = "{store}"', 'collection = "gpu"', "[ingest]", f"workers = {workers}", ""]))
    settings = load_settings(config)
    t0 = time.perf_counter()
    with Index.open(settings, create=True) as index:
        encoder = index.ingest_encoder
        load_s = time.perf_counter() - t0
        log(f"model {args.model} on {encoder.device} at {encoder.precision} in {load_s:.1f} s; "
            f"{workers} decoder workers, batch {args.batch}")
        with GpuSampler() if cuda else _Nothing() as sampler:
            t0 = time.perf_counter()
            report = index.ingest([str(images)])
            ingest_s = time.perf_counter() - t0
        log(f"ingest: {report.indexed:,} images in {ingest_s:.1f} s")
        ceiling = model_only(encoder, args.batch, 10 if cuda else 3)
        precision, device = encoder.precision, str(encoder.device)
        gpu_name = torch.cuda.get_device_name(0) if cuda else None
    if report.indexed != args.images:
        raise SystemExit(f"ingest indexed {report.indexed} of {args.images} images: {report.as_dict()}")
    result = {
        "mode": mode, "images": args.images, "image_size": args.size, "model": f"{args.model} (random init)",
        "device": device, "gpu": gpu_name, "precision": precision, "batch": args.batch, "workers": workers,
        "img_per_s": round(args.images / ingest_s, 1), "ingest_s": round(ingest_s, 2),
        "model_only_img_per_s": round(ceiling, 1), "model_load_s": round(load_s, 2),
        **(sampler.summary() if cuda else {"gpu_util_mean": None}),
        "torch": torch.__version__, "cuda": torch.version.cuda, **machine(),
    }
    print(json.dumps(result), flush=True)
    return 0


class _Nothing:
    def __enter__(self) -> _Nothing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
