"""Training and evaluation data: captioned folders, COCO captions, Fashion-MNIST IDX, image-only folders.

Every source becomes an :class:`ImageSet`: a list of image sources (file paths or in-memory
arrays) with, where known, captions per image and an integer label per image. Training and
evaluation only ever see that one abstraction.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ingest.decode import DecodeError
from ingest.decode import load_image as decode_file
from ingest.scan import scan
from retrieval.errors import ClipdexError
from retrieval.settings import IngestSettings

MAX_MEGAPIXELS = IngestSettings().max_megapixels
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
                  "sandal", "shirt", "sneaker", "bag", "ankle boot"]
FMNIST_TEMPLATES = [
    "a photo of a {}.",
    "a {}.",
    "a picture of a {}, a clothing item.",
    "a black and white photo of a {}.",
    "a low resolution photo of the {}.",
    "a product photo of a {}.",
    "an image of a {} on a dark background.",
    "the {}.",
]

ImageSource = str | np.ndarray


@dataclass
class ImageSet:
    """Images with optional captions (several per image) and optional integer labels."""

    images: list[ImageSource]
    captions: list[list[str]] | None = None
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    templates: list[str] = field(default_factory=lambda: list(FMNIST_TEMPLATES))
    name: str = ""

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Image.Image:
        """Decode image ``index`` as RGB."""
        return load_image(self.images[index])

    def subset(self, limit: int) -> ImageSet:
        """The first ``limit`` items (all when ``limit`` <= 0)."""
        if limit <= 0 or limit >= len(self):
            return self
        return ImageSet(self.images[:limit], self.captions[:limit] if self.captions else None,
                        self.labels[:limit] if self.labels is not None else None,
                        self.class_names, self.templates, self.name)


def load_image(source: ImageSource) -> Image.Image:
    """A file path or a uint8 array (H, W) / (H, W, 3) as an RGB PIL image.

    Files go through ingest's decoder, so training and evaluation see the pixels ingest embeds
    (EXIF orientation, alpha on white, the same refusal of broken or oversized files).
    """
    if isinstance(source, np.ndarray):
        return Image.fromarray(source).convert("RGB")
    try:
        return decode_file(os.fspath(source), max_megapixels=MAX_MEGAPIXELS)
    except DecodeError as exc:
        raise ClipdexError(f"cannot read image {source}: {exc}") from None


def _require(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ClipdexError(f"{what} not found: {p}")
    return p


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder``, found as ``clipdex ingest`` finds them (recursive, sorted, no hidden)."""
    root = _require(folder, "image folder")
    if not root.is_dir():
        raise ClipdexError(f"not a folder: {root}")
    files, _ = scan([root])
    return [Path(f.path) for f in files]


# --- captioned folders -------------------------------------------------------------------------

def _table_rows(file: Path) -> list[tuple[str, str]]:
    """(path, caption) rows of a captions.csv or captions.jsonl."""
    rows: list[tuple[str, str]] = []
    try:
        if file.suffix == ".csv":
            with file.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                cols = {c.lower(): c for c in reader.fieldnames or []}
                pcol = next((cols[c] for c in ("path", "file", "filename", "image") if c in cols), None)
                ccol = next((cols[c] for c in ("caption", "text", "title") if c in cols), None)
                if not pcol or not ccol:
                    raise ClipdexError(f"{file}: needs a path column and a caption column, got {reader.fieldnames}")
                rows = [(r[pcol], r[ccol]) for r in reader]
        else:
            for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                obj = json.loads(line)
                path = obj.get("path") or obj.get("file") or obj.get("image")
                text = obj.get("caption") or obj.get("text")
                if not path or not text:
                    raise ClipdexError(f"{file}:{n}: needs 'path' and 'caption' keys")
                rows.append((str(path), str(text)))
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as exc:
        raise ClipdexError(f"{file}: cannot parse: {exc}") from None
    return rows


def captioned_folder(folder: str | os.PathLike[str]) -> ImageSet:
    """Images with captions from ``captions.csv``/``captions.jsonl``, a COCO JSON, or sidecar ``.txt`` files."""
    root = _require(folder, "data folder")
    if root.is_file() and root.suffix == ".json":
        return coco_captions(root)
    by_path: dict[str, list[str]] = {}
    table = next((root / n for n in ("captions.csv", "captions.jsonl") if (root / n).is_file()), None)
    if table is not None:
        for rel, text in _table_rows(table):
            path = (root / rel).resolve()
            if not path.is_file():
                raise ClipdexError(f"{table}: image not found: {rel}")
            by_path.setdefault(str(path), []).append(text.strip())
    else:
        for image in list_images(root):
            side = image.with_suffix(".txt")
            if side.is_file():
                lines = [ln.strip() for ln in side.read_text(encoding="utf-8").splitlines() if ln.strip()]
                if lines:
                    by_path[str(image)] = lines
    if not by_path:
        raise ClipdexError(f"no captioned images in {root} (expected name.txt beside each image, "
                           "captions.csv or captions.jsonl)")
    paths = sorted(by_path)
    return ImageSet(list(paths), [by_path[p] for p in paths], name=str(root))


def coco_captions(file: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None) -> ImageSet:
    """A COCO-format captions JSON (``images`` + ``annotations``); images relative to ``image_root``."""
    path = _require(file, "COCO captions file")
    root = Path(image_root).expanduser() if image_root else path.parent
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = {img["id"]: img["file_name"] for img in data["images"]}
        caps: dict[int, list[str]] = {}
        for ann in data["annotations"]:
            caps.setdefault(ann["image_id"], []).append(str(ann["caption"]).strip())
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ClipdexError(f"{path}: not a COCO captions file ({type(exc).__name__}: {exc})") from None
    ids = sorted(i for i in files if i in caps)
    if not ids:
        raise ClipdexError(f"{path}: no image has a caption")
    images = []
    for i in ids:
        image = root / files[i]
        if not image.is_file():
            raise ClipdexError(f"{path}: image not found: {image}")
        images.append(str(image))
    return ImageSet(images, [caps[i] for i in ids], name=str(path))


def image_folder(folder: str | os.PathLike[str]) -> ImageSet:
    """Every image under ``folder``, no captions, no labels (for image-only contrastive learning)."""
    files = list_images(folder)
    if not files:
        raise ClipdexError(f"no images found in {folder}")
    return ImageSet([str(f) for f in files], name=str(folder))


def labelled_folder(folder: str | os.PathLike[str]) -> ImageSet:
    """Images in one sub-folder per class (``root/<class name>/*.png``); labels from folder names."""
    files = list_images(folder)
    root = Path(folder).expanduser()
    names = sorted({f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1})
    if not names:
        raise ClipdexError(f"no class sub-folders with images in {folder}")
    index = {n: i for i, n in enumerate(names)}
    kept = [f for f in files if len(f.relative_to(root).parts) > 1]
    labels = np.array([index[f.relative_to(root).parts[0]] for f in kept], dtype=np.int64)
    return ImageSet([str(f) for f in kept], labels=labels, class_names=[n.replace("_", " ") for n in names],
                    name=str(root))


# --- Fashion-MNIST -----------------------------------------------------------------------------

def read_idx(file: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzipped) as a numpy array."""
    path = _require(file, "IDX file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise ClipdexError(f"cannot read {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ClipdexError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ClipdexError(f"{path}: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def write_idx(file: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(file).endswith(".gz") else open
    with opener(file, "wb") as fh:
        fh.write(header + array.tobytes())


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise ClipdexError(f"Fashion-MNIST file {stem}(.gz) not found in {root} (install the Debian package "
                       "dataset-fashion-mnist, or pass --data FOLDER)")


def fashion_mnist_arrays(root: str | os.PathLike[str] | None = None,
                         split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` of the train or test (``t10k``) split."""
    folder = _require(root or FMNIST_DIR, "Fashion-MNIST folder")
    prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}.get(split)
    if prefix is None:
        raise ClipdexError(f"unknown Fashion-MNIST split '{split}' (train or test)")
    images = read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ClipdexError(f"{folder}: {prefix} images {images.shape} and labels {labels.shape} do not match")
    if labels.size and labels.max() >= len(FMNIST_CLASSES):
        raise ClipdexError(f"{folder}: label {labels.max()} out of range")
    return images, labels


def fashion_mnist(root: str | os.PathLike[str] | None = None, split: str = "train",
                  templates: Sequence[str] | None = None) -> ImageSet:
    """Fashion-MNIST as an :class:`ImageSet`: labels, class names and one caption per template."""
    images, labels = fashion_mnist_arrays(root, split)
    temps = list(templates or FMNIST_TEMPLATES)
    captions = [[t.format(FMNIST_CLASSES[y]) for t in temps] for y in labels]
    return ImageSet(list(images), captions, labels, list(FMNIST_CLASSES), temps,
                    name=f"fashion-mnist:{split}")


def class_prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """For each class, its caption under every template."""
    return [[t.format(name) for t in templates] for name in class_names]
