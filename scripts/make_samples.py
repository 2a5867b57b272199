"""Write samples/fashion-mnist/<class>/<index>.png: the first 30 test images of each class.

Usage: .venv/bin/python scripts/make_samples.py [IDX_FOLDER] [--per-class 30]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from retrieval.datasets import FMNIST_CLASSES, FMNIST_DIR, fashion_mnist_arrays

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("idx_folder", nargs="?", default=str(FMNIST_DIR))
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "samples" / "fashion-mnist"))
    args = parser.parse_args()
    images, labels = fashion_mnist_arrays(args.idx_folder, "test")
    counts = dict.fromkeys(range(len(FMNIST_CLASSES)), 0)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        label = int(label)
        if counts[label] >= args.per_class:
            continue
        folder = Path(args.out) / FMNIST_CLASSES[label].replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"{index:05d}.png", optimize=True)
        counts[label] += 1
    print(f"wrote {sum(counts.values())} images to {args.out}")


if __name__ == "__main__":
    main()
