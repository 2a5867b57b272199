"""The torch-free preprocessing matches each model's open_clip eval transform within 1e-3, on real files."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retrieval  # noqa: F401  isort: skip  (its torchvision shim runs before open_clip is imported)
import open_clip  # isort: skip
from open_clip.transform import PreprocessCfg, image_transform_v2  # isort: skip

from ingest.decode import load_image, to_rgb
from retrieval.model.preprocess import Preprocess

REPO = Path(__file__).resolve().parent.parent
SIZES = [(640, 480), (480, 640), (800, 600), (224, 224), (31, 33), (7, 300), (300, 7), (20, 20), (1, 1), (333, 97)]
MODES = ["RGB", "RGBA", "L", "P", "P+transparency", "CMYK", "I;16", "LA", "1"]
TOL = 1e-3


@functools.cache
def photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like RGB picture: smooth gradients, soft blobs, edges and sensor noise (not flat blocks)."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        img[..., c] = 255 * (0.5 + 0.5 * np.sin(xx / max(w, 1) * rng.uniform(1, 9) + yy / max(h, 1) * rng.uniform(1, 9)
                                                + rng.uniform(0, 6)))
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, max(w, h) / 3 + 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - blob) + blob * rng.uniform(0, 255, 3)
    img[(xx + yy * 0.5) % 97 < 3] = 20  # hard diagonal edges
    img += rng.standard_normal(img.shape, dtype=np.float32) * 6
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def write(folder: Path, size: tuple[int, int], mode: str, seed: int) -> Path:
    """A real file of ``mode``: RGB and CMYK as JPEG, I;16 as 16-bit PNG, the rest as PNG."""
    rgb = photo(size, SIZES.index(size))  # one picture per size, saved in every mode
    if mode == "RGB":
        path = folder / f"{seed}.jpg"
        rgb.save(path, quality=90)
    elif mode == "CMYK":
        path = folder / f"{seed}-cmyk.jpg"
        rgb.convert("CMYK").save(path, quality=90)
    elif mode == "I;16":
        path = folder / f"{seed}-16.png"
        grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257 + np.uint16(seed % 200)
        Image.fromarray(grey.astype("<u2")).save(path)  # uint16: mode I;16
    elif mode in ("RGBA", "LA"):
        path = folder / f"{seed}-{mode}.png"
        alpha = Image.fromarray(np.linspace(0, 255, size[0] * size[1]).reshape(size[1], size[0]).astype(np.uint8))
        base = rgb if mode == "RGBA" else rgb.convert("L")
        base.putalpha(alpha)
        base.save(path)
    elif mode.startswith("P"):
        path = folder / f"{seed}-{mode}.png"
        pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        if mode == "P+transparency":
            pal.info["transparency"] = 3
            pal.save(path, transparency=3)
        else:
            pal.save(path)
    else:  # L, 1
        path = folder / f"{seed}-{mode}.png"
        rgb.convert(mode).save(path)
    return path


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == np.float32 and got.shape == tuple(want.shape), what
    diff = float(np.abs(got - want).max())
    assert diff <= TOL, f"{what}: max abs diff {diff}"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pre")
    files = [write(folder, size, mode, seed) for seed, (size, mode) in
             enumerate((s, m) for m in MODES for s in SIZES)]
    opened = {Image.open(f).mode for f in files}
    assert {"RGB", "RGBA", "L", "P", "CMYK", "I;16", "LA", "1"} <= opened, opened  # the files really have them
    return files


def model_pair(name: str) -> tuple[Preprocess, object]:
    """Ours from the model's final preprocess config, and open_clip's own eval transform of that model."""
    model, _, transform = open_clip.create_model_and_transforms(name)
    return Preprocess.from_config(model.visual.preprocess_cfg), transform


def test_bundled_and_tiny_models_on_every_mode_and_size(library: list[Path], tiny_model_dir: Path):
    bundled = f"local-dir:{REPO / 'models' / 'fmnist-tiny'}"
    for name in (bundled, f"local-dir:{tiny_model_dir}"):
        ours, transform = model_pair(name)
        for file in library:
            with Image.open(file) as im:
                im.load()
                assert_close(ours(im), transform(to_rgb(im)).numpy(), f"{name} {file.name} ({im.mode})")
                if im.mode in ("RGB", "L"):  # where open_clip's own mode conversion is the same, compare raw
                    assert_close(ours(im), transform(im).numpy(), f"{name} raw {file.name}")


def test_from_model_config_equals_what_open_clip_builds():
    import json

    config = json.loads((REPO / "models" / "fmnist-tiny" / "open_clip_config.json").read_text())
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{REPO / 'models' / 'fmnist-tiny'}")
    assert Preprocess.from_model_config(config) == Preprocess.from_config(model.visual.preprocess_cfg)
    assert Preprocess.from_model_config(config).size == (28, 28)


@pytest.mark.parametrize("cfg", [
    {"size": 224},  # open_clip's defaults: ViT-B-32's transform
    {"size": 64, "interpolation": "bilinear", "mean": 0.5, "std": 0.25},
    {"size": [48, 80]},  # non-square "shortest" (ResizeKeepRatio, always bicubic in open_clip)
    {"size": [80, 48], "interpolation": "bilinear"},
    {"size": 56, "resize_mode": "longest", "fill_color": 0},
    {"size": [40, 64], "resize_mode": "longest", "fill_color": 128},
    {"size": 50, "resize_mode": "squash"},
    {"size": [30, 70], "resize_mode": "squash", "interpolation": "bilinear"},
    {"size": 32, "interpolation": "random"},
])
def test_every_resize_mode_matches(library: list[Path], cfg: dict):
    ours = Preprocess.from_config(cfg)
    transform = image_transform_v2(PreprocessCfg(**{k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in cfg.items()}), is_train=False)
    picks = library[:: max(1, len(library) // 25)]
    for file in picks:
        with Image.open(file) as im:
            rgb = to_rgb(im)
        assert_close(ours(rgb), transform(rgb).numpy(), f"{cfg} {file.name}")


def test_batch_and_decoded_files(library: list[Path]):
    ours, transform = model_pair("ViT-B-32")
    images = [load_image(str(f), max_megapixels=50, draft_size=224) for f in library[:12]]
    batch = ours.batch(images)
    assert batch.shape == (12, 3, 224, 224) and batch.dtype == np.float32
    for i, im in enumerate(images):
        np.testing.assert_array_equal(batch[i], ours(im))
        assert_close(batch[i], transform(im).numpy(), library[i].name)
    assert ours.batch([]).shape == (0, 3, 224, 224)


def test_bad_configs_are_refused():
    for cfg in ({"interpolation": "lanczos"}, {"resize_mode": "fit"}, {"size": [1, 2, 3]}, {"std": [0, 1, 1]},
                {"mean": [0.5, 0.5]}):
        with pytest.raises(ValueError):
            Preprocess.from_config(cfg)


def test_no_torch_imported(tmp_path: Path):
    photo((50, 40), 1).save(tmp_path / "a.jpg")
    code = ("import sys; from PIL import Image; from retrieval.model.preprocess import Preprocess;"
            f"x = Preprocess.from_config({{'size': 32}})(Image.open({str(tmp_path / 'a.jpg')!r}));"
            "assert x.shape == (3, 32, 32), x.shape;"
            "bad = [m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
