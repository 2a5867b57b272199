"""Helpers for the training/eval tests: tiny real data files and a tiny open_clip architecture."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.datasets import FMNIST_CLASSES, write_idx

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "fashion-mnist"

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 28, "layers": 1, "width": 32, "patch_size": 7, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def sample_arrays(per_class: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real Fashion-MNIST test images from the committed sample PNGs: ``per_class`` of each class."""
    images, labels = [], []
    for label, name in enumerate(FMNIST_CLASSES):
        files = sorted((SAMPLES / name.replace(" ", "_")).glob("*.png"))[offset:offset + per_class]
        for f in files:
            images.append(np.asarray(Image.open(f).convert("L"), dtype=np.uint8))
            labels.append(label)
    order = np.random.default_rng(0).permutation(len(images))
    return np.stack(images)[order], np.array(labels, dtype=np.uint8)[order]


def write_fmnist(folder: Path, train_per_class: int = 6, test_per_class: int = 4, gz: bool = True) -> Path:
    """A Fashion-MNIST folder in the real IDX format, built from the sample PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, (images, labels) in (("train", sample_arrays(train_per_class)),
                                     ("t10k", sample_arrays(test_per_class, offset=train_per_class))):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return folder


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    """A small real PNG/JPEG with random content."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def write_sidecar_folder(folder: Path, n: int = 6) -> Path:
    for i in range(n):
        write_image(folder / f"img{i}.png", i)
        (folder / f"img{i}.txt").write_text(f"picture number {i}\nanother caption {i}\n")
    return folder


def write_coco(folder: Path, n: int = 6) -> Path:
    images = [{"id": 100 + i, "file_name": f"images/{i:03d}.jpg"} for i in range(n)]
    for i in range(n):
        write_image(folder / "images" / f"{i:03d}.jpg", 50 + i)
    anns = [{"id": j, "image_id": 100 + i, "caption": f"photo {i} view {j // n}"}
            for j, i in enumerate(list(range(n)) * 2)]
    (folder / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return folder / "captions.json"


def write_train_config(path: Path, **train: object) -> Path:
    """A TOML with a [train] section using TINY_CFG and fast settings."""
    values = {"batch_size": 8, "warmup_steps": 2, "threads": 1, "checkpoint_every": 2, "max_steps": 4,
              "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], **train}
    lines = ["[train]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    lines.append("[train.model_cfg]\nembed_dim = 32")
    for section in ("vision_cfg", "text_cfg"):
        lines.append(f"[train.model_cfg.{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in TINY_CFG[section].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def clipdex(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real CLI entry point in this process (fast), capturing its exit code and output."""
    from retrieval.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["clipdex", *args], code, out.getvalue(), err.getvalue())


def clipdex_subprocess(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a fresh interpreter."""
    code = "import sys; from retrieval.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd or REPO,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}, timeout=300)
