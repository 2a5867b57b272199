"""`clipdex eval` on every dataset kind, through the real CLI and a real saved model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from learn_fixtures import SAMPLES, TINY_CFG, clipdex, write_coco, write_fmnist, write_sidecar_folder

from retrieval import datasets
from retrieval.evaluate import embed_images, evaluate
from retrieval.model.torch_backend import TorchEncoder
from retrieval.probes import knn_accuracy, linear_probe_accuracy
from retrieval.settings import ModelSettings, TrainSettings
from retrieval.training import train

LABEL_KEYS = {"zero_shot_accuracy", "t2i_precision@10", "i2i_precision@10", "i2i_map"}
PROBE_KEYS = {"knn_accuracy", "linear_probe_accuracy"}
RECALL_KEYS = {f"{d}_recall@{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for a few steps on Fashion-MNIST-format data."""
    root = tmp_path_factory.mktemp("evalmodel")
    fm = write_fmnist(root / "fm")
    cfg = TrainSettings(data=str(fm), model_cfg=TINY_CFG, output=str(root / "model"), batch_size=16, max_steps=3,
                        warmup_steps=1, threads=1, image_mean=[0.3] * 3, image_std=[0.35] * 3)
    train(cfg, progress=False)
    return root / "model"


def _eval(model_dir: Path, *args: str) -> dict[str, float]:
    proc = clipdex("eval", "--model", str(model_dir), "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _in_unit_range(metrics: dict[str, float]) -> bool:
    return all(0.0 <= v <= 1.0 for v in metrics.values())


def test_fashion_mnist_eval(tmp_path: Path, model_dir: Path):
    fm = write_fmnist(tmp_path / "fm", train_per_class=2, test_per_class=3)
    out = _eval(model_dir, "--dataset", "fashion-mnist", "--data", str(fm), "-o", str(tmp_path / "e.json"))
    assert set(out) == LABEL_KEYS | PROBE_KEYS and _in_unit_range(out)
    assert json.loads((tmp_path / "e.json").read_text()) == out
    # the probes learn from the train split: the same numbers as the library's pure functions
    encoder = TorchEncoder.load(ModelSettings(name=f"local-dir:{model_dir}", pretrained="", device="cpu"))
    train_set, test_set = datasets.fashion_mnist(fm, "train"), datasets.fashion_mnist(fm, "test")
    train_vecs, test_vecs = embed_images(encoder, train_set), embed_images(encoder, test_set)
    assert out["knn_accuracy"] == pytest.approx(
        knn_accuracy(train_vecs, train_set.labels, test_vecs, test_set.labels), abs=1e-6)
    assert out["linear_probe_accuracy"] == pytest.approx(
        linear_probe_accuracy(train_vecs, train_set.labels, test_vecs, test_set.labels), abs=1e-6)
    no_probes = _eval(model_dir, "--dataset", "fashion-mnist", "--data", str(fm), "--no-probes")
    assert set(no_probes) == LABEL_KEYS and no_probes == {k: out[k] for k in LABEL_KEYS}


def test_eval_matches_the_library_on_the_same_vectors(model_dir: Path):
    data = datasets.labelled_folder(SAMPLES)
    encoder = TorchEncoder.load(ModelSettings(name=f"local-dir:{model_dir}", pretrained="", device="cpu"))
    lib = evaluate(encoder, data, holdout=True)
    cli = _eval(model_dir, "--dataset", "labelled-folder", "--data", str(SAMPLES))
    assert set(cli) == LABEL_KEYS | PROBE_KEYS
    assert cli == pytest.approx(lib, abs=1e-5)
    # the saved preprocessing reproduces the training pixels: 28 px, the training mean/std
    pixels = encoder.preprocess(data.load(0))
    assert tuple(pixels.shape) == (3, 28, 28)
    raw = np.asarray(data.load(0), dtype=np.float32)[..., 0] / 255
    np.testing.assert_allclose(pixels[0].numpy(), (raw - 0.3) / 0.35, atol=1e-5)
    assert embed_images(encoder, data.subset(5)).shape == (5, 32)


def test_captioned_folder_and_coco_give_recall(tmp_path: Path, model_dir: Path):
    folder = write_sidecar_folder(tmp_path / "cap", n=12)
    out = _eval(model_dir, "--dataset", "captions", "--data", str(folder))
    assert set(out) == RECALL_KEYS and _in_unit_range(out)
    assert out["t2i_recall@10"] >= out["t2i_recall@5"] >= out["t2i_recall@1"]
    coco = write_coco(tmp_path / "coco", n=5)
    out = _eval(model_dir, "--dataset", "coco", "--data", str(coco))
    assert set(out) == RECALL_KEYS
    # 5 images, 10 captions: the top 5 images and the top 10 captions are everything
    assert out["t2i_recall@5"] == 1.0 and out["i2t_recall@10"] == 1.0


def test_limit(tmp_path: Path, model_dir: Path):
    out = _eval(model_dir, "--dataset", "labelled-folder", "--data", str(SAMPLES), "--limit", "40")
    assert set(out) == LABEL_KEYS | PROBE_KEYS
    data = datasets.labelled_folder(SAMPLES)
    encoder = TorchEncoder.load(ModelSettings(name=f"local-dir:{model_dir}", pretrained="", device="cpu"))
    first_40 = evaluate(encoder, data.subset(40))
    assert len(data.subset(40)) == 40 < len(data)
    ranked = {k: out[k] for k in LABEL_KEYS}  # the ranking metrics (the probes need a train split of their own)
    assert ranked == pytest.approx({k: first_40[k] for k in LABEL_KEYS}, abs=1e-5)  # exactly the first 40 images
    assert ranked != pytest.approx({k: v for k, v in evaluate(encoder, data).items() if k in LABEL_KEYS}, abs=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "captions"], "--data is required"),
    (["--dataset", "coco", "--data", "{tmp}/none.json"], "not found"),
    (["--dataset", "fashion-mnist", "--data", "{tmp}"], "not found"),
    (["--model", "{tmp}/nomodel"], "unknown open_clip architecture"),
    (["--dataset", "labelled-folder", "--data", "{tmp}", "-o", "{tmp}/no/such/dir/e.json"], "existing folder"),
])
def test_bad_input_is_one_line(tmp_path: Path, model_dir: Path, args: list[str], message: str):
    args = [a.format(tmp=tmp_path) for a in args]
    if "--model" not in args:
        args = ["--model", str(model_dir), *args]
    proc = clipdex("eval", *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and message in lines[0], proc.stderr
