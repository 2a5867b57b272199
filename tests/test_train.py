"""`clipdex train`: every data source, resume, frozen towers and bad input, on tiny real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from learn_fixtures import (
    TINY_CFG,
    clipdex,
    clipdex_subprocess,
    write_coco,
    write_fmnist,
    write_image,
    write_sidecar_folder,
    write_train_config,
)
from safetensors.torch import load_file

from retrieval.model.torch_backend import CONFIG_NAME, WEIGHTS_NAME, TorchEncoder
from retrieval.settings import ModelSettings, TrainSettings
from retrieval.training import clip_loss, lr_at, simclr_loss, train


def _cfg(tmp_path: Path, **kw) -> TrainSettings:
    values = {"model_cfg": TINY_CFG, "output": str(tmp_path / "model"), "batch_size": 8, "max_steps": 4,
              "warmup_steps": 2, "threads": 1, "checkpoint_every": 2, "image_mean": [0.5] * 3,
              "image_std": [0.5] * 3, **kw}
    return TrainSettings(**values)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / WEIGHTS_NAME))


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fmnist(tmp_path_factory.mktemp("fm") / "fashion-mnist")


def test_fashion_mnist_training_writes_a_loadable_model(tmp_path: Path, fmnist: Path):
    result = train(_cfg(tmp_path, data=str(fmnist)), progress=False)
    assert result.steps == 4 and result.output == tmp_path / "model"
    config = json.loads((tmp_path / "model" / CONFIG_NAME).read_text())
    assert config["model_cfg"] == TINY_CFG
    assert config["preprocess_cfg"]["size"] == 28 and config["preprocess_cfg"]["mean"] == [0.5] * 3
    assert config["clipdex"]["objective"] == "clip" and config["clipdex"]["images"] == 60
    enc = TorchEncoder.load(ModelSettings(name=f"local-dir:{tmp_path / 'model'}", pretrained="", device="cpu"))
    assert enc.image_size == 28 and enc.context_length == 16
    vecs = enc.encode_texts(["a photo of a bag."])
    assert vecs.shape == (1, 32)
    # no checkpoint or temp files leak into the model folder
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]


def test_training_changes_the_weights(tmp_path: Path, fmnist: Path):
    train(_cfg(tmp_path, data=str(fmnist), output=str(tmp_path / "init")), init_only=True, progress=False)
    train(_cfg(tmp_path, data=str(fmnist)), progress=False)
    before, after = _weights(tmp_path / "init"), _weights(tmp_path / "model")
    assert not torch.equal(before["visual.conv1.weight"], after["visual.conv1.weight"])
    assert not torch.equal(before["token_embedding.weight"], after["token_embedding.weight"])


@pytest.mark.parametrize("source", ["captions", "coco"])
def test_captioned_sources(tmp_path: Path, source: str):
    data = write_sidecar_folder(tmp_path / "d") if source == "captions" else write_coco(tmp_path / "d")
    result = train(_cfg(tmp_path, source=source, data=str(data), caption_choice="per_image", max_steps=2),
                   progress=False)
    assert result.steps == 2
    assert json.loads((tmp_path / "model" / CONFIG_NAME).read_text())["clipdex"]["images"] == 6


def test_image_only_folder_trains_the_image_tower_only(tmp_path: Path):
    for i in range(10):
        write_image(tmp_path / "imgs" / f"{i}.png", i, size=(36, 36))
    train(_cfg(tmp_path, source="images", data=str(tmp_path / "imgs"), output=str(tmp_path / "init")),
          init_only=True, progress=False)
    train(_cfg(tmp_path, source="images", data=str(tmp_path / "imgs")), progress=False)
    before, after = _weights(tmp_path / "init"), _weights(tmp_path / "model")
    assert json.loads((tmp_path / "model" / CONFIG_NAME).read_text())["clipdex"]["objective"] == "simclr"
    assert not torch.equal(before["visual.conv1.weight"], after["visual.conv1.weight"])
    assert torch.equal(before["token_embedding.weight"], after["token_embedding.weight"])


def test_frozen_image_tower_lit(tmp_path: Path, fmnist: Path):
    train(_cfg(tmp_path, data=str(fmnist), output=str(tmp_path / "init")), init_only=True, progress=False)
    train(_cfg(tmp_path, data=str(fmnist), freeze_image=True), progress=False)
    before, after = _weights(tmp_path / "init"), _weights(tmp_path / "model")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("visual."))
    assert not torch.equal(before["token_embedding.weight"], after["token_embedding.weight"])


def test_fine_tune_from_a_saved_folder(tmp_path: Path, fmnist: Path):
    train(_cfg(tmp_path, data=str(fmnist), output=str(tmp_path / "base")), progress=False)
    result = train(_cfg(tmp_path, data=str(fmnist), arch=f"local-dir:{tmp_path / 'base'}", model_cfg={},
                        max_steps=2), progress=False)
    assert result.steps == 2
    assert json.loads((tmp_path / "model" / CONFIG_NAME).read_text())["model_cfg"] == TINY_CFG


def test_resume_reaches_the_uninterrupted_weights(tmp_path: Path, fmnist: Path):
    straight = _cfg(tmp_path, data=str(fmnist), output=str(tmp_path / "straight"), max_steps=6)
    train(straight, progress=False)
    split = _cfg(tmp_path, data=str(fmnist), output=str(tmp_path / "split"), max_steps=6)
    stopped = train(split, stop_after=3, progress=False)
    assert stopped.output is None and stopped.steps == 3 and not (tmp_path / "split").exists()
    resumed = train(split, resume=True, progress=False)
    assert resumed.steps == 6
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_through_the_cli(tmp_path: Path, fmnist: Path):
    config = write_train_config(tmp_path / "t.toml", data=str(fmnist), output="out", max_steps=4)
    first = clipdex_subprocess("train", "--config", str(config), "--stop-after", "2", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["output"] is None
    assert (tmp_path / ".out.checkpoints" / "last.pt").is_file()  # relative to the TOML's folder
    assert (tmp_path / ".out.checkpoints" / ".gitignore").read_text() == "*\n"
    second = clipdex("train", "--config", str(config), "--resume", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["steps"] == 4 and (tmp_path / "out" / WEIGHTS_NAME).is_file()


def test_losses_and_schedule():
    img = torch.eye(4)
    # perfect alignment, two images share caption 0: caption 0's positives are images 0 and 1
    text = torch.stack([img[0] + img[1], img[2], img[3]])
    low = clip_loss(img, text, torch.tensor([0, 0, 1, 2]), torch.tensor(4.0))
    high = clip_loss(img, text, torch.tensor([1, 2, 0, 0]), torch.tensor(4.0))
    assert low < high
    assert simclr_loss(img, img, 0.1) < simclr_loss(img, img.roll(1, 0), 0.1)
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.0)


@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}/nope"], "not found"),
    (["--source", "images", "--data", "{tmp}/empty"], "no images found"),
    (["--source", "captions", "--data", "{tmp}/empty"], "no captioned images"),
    (["--lr", "-1"], "train.lr"),
    (["--batch-size", "1"], "train.batch_size"),
    (["--arch", "ViT-Nope-1"], "unknown open_clip architecture"),
    (["--resume"], "no checkpoint"),
    (["--freeze-image", "--freeze-text"], "nothing to train"),
    (["--source", "images", "--data", "{tmp}/imgs", "--objective", "clip"], "no captions"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, fmnist: Path, args: list[str], message: str):
    (tmp_path / "empty").mkdir()
    write_image(tmp_path / "imgs" / "a.png", 1)
    config = write_train_config(tmp_path / "t.toml", data=str(fmnist), output=str(tmp_path / "out"))
    proc = clipdex("train", "--config", str(config), *[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clipdex: error:") and message in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_non_numbers_are_usage_errors(tmp_path: Path):
    proc = clipdex("train", "--steps", "many")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_output_folder_with_other_files_is_refused_and_kept(tmp_path: Path, fmnist: Path):
    """`-o DIR` replaces DIR: only an empty folder or a model folder clipdex wrote may be replaced."""
    out = tmp_path / "photos"
    (out / "sub").mkdir(parents=True)
    (out / "holiday.jpg").write_bytes(b"not mine to delete")
    (out / "sub" / "more.txt").write_text("keep")
    config = write_train_config(tmp_path / "t.toml", data=str(fmnist), output=str(out))
    proc = clipdex("train", "--config", str(config))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "not empty and not a clipdex model folder" in lines[0]
    assert (out / "holiday.jpg").read_bytes() == b"not mine to delete" and (out / "sub" / "more.txt").is_file()
    # a folder holding only a foreign open_clip_config.json (no clipdex block) is not ours either
    other = tmp_path / "other"
    other.mkdir()
    (other / CONFIG_NAME).write_text('{"model_cfg": {}}')
    assert clipdex("train", "--config", str(config), "-o", str(other)).returncode == 1
    assert (other / CONFIG_NAME).read_text() == '{"model_cfg": {}}'


def test_output_replaces_a_clipdex_model_folder_and_fills_an_empty_one(tmp_path: Path, fmnist: Path):
    (tmp_path / "model").mkdir()  # empty: fine
    train(_cfg(tmp_path, data=str(fmnist), max_steps=1), progress=False)
    first = _weights(tmp_path / "model")
    (tmp_path / "model" / "eval.json").write_text("{}")  # what `make model` adds beside it
    train(_cfg(tmp_path, data=str(fmnist), max_steps=2), progress=False)
    second = _weights(tmp_path / "model")
    assert not torch.equal(first["visual.conv1.weight"], second["visual.conv1.weight"])
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
