"""Loading models: local folders and checkpoint files round-trip; mixing models is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from retrieval.errors import ClipdexError
from retrieval.model.torch_backend import TorchEncoder, open_clip, save_model_folder
from retrieval.settings import ModelSettings, load_settings
from retrieval.store import open_store
from tests.conftest import TINY_CFG, TINY_PREPROCESS, write_config
from tests.images import pattern


def test_local_folder_round_trips_the_weights(tiny_model_dir: Path):
    encoder = TorchEncoder.load(ModelSettings(name=f"local-dir:{tiny_model_dir}", pretrained="", precision="fp32"))
    torch.manual_seed(0)
    original = open_clip.CLIP(**TINY_CFG).eval()  # same seed as the fixture that saved it
    tokens = encoder.tokenizer(["a red square"])
    with torch.inference_mode():
        want = torch.nn.functional.normalize(original.encode_text(tokens), dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode_texts(["a red square"]), want, atol=1e-6)
    assert encoder.dim == TINY_CFG["embed_dim"] and encoder.image_size == 32
    vectors = encoder.encode_pil([pattern(3), pattern(4)])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_checkpoint_file_with_registered_architecture(tmp_path: Path, tiny_model_dir: Path):
    """The `pretrained = "file.safetensors"` path, for an architecture open_clip knows by name."""
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "clipdex-test-tiny.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(tmp_path / "cfgs")
    torch.manual_seed(1)
    model = open_clip.create_model("clipdex-test-tiny")
    ckpt = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    encoder = TorchEncoder.load(ModelSettings(name="clipdex-test-tiny", pretrained=str(ckpt), precision="fp32"))
    with torch.inference_mode():
        want = torch.nn.functional.normalize(model.encode_text(encoder.tokenizer(["x"])), dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode_texts(["x"]), want, atol=1e-6)
    assert encoder.identity.pretrained.startswith(f"{ckpt}#xxh3:")


def test_missing_checkpoint_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ClipdexError, match="neither a pretrained tag"):
        TorchEncoder.load(ModelSettings(name="ViT-B-32", pretrained=str(tmp_path / "nope.pt")))
    with pytest.raises(ClipdexError, match="open_clip_config.json"):
        TorchEncoder.load(ModelSettings(name=f"local-dir:{tmp_path}", pretrained=""))


def test_opening_with_another_model_fails_clearly(clipdex, tmp_path: Path, tiny_model_dir: Path):
    (tmp_path / "imgs").mkdir()
    pattern(0).save(tmp_path / "imgs" / "a.png")
    assert clipdex("ingest", tmp_path / "imgs").code == 0
    torch.manual_seed(7)
    other = save_model_folder(open_clip.CLIP(**TINY_CFG), TINY_CFG, tmp_path / "other", TINY_PREPROCESS)
    other_cfg = write_config(tmp_path / "other.toml", other, tmp_path / "store")  # same store + collection
    result = clipdex("search", "a shoe", "--config", other_cfg, with_config=False)
    assert result.code == 1
    assert "was built with model" in result.err and len(result.err.strip().splitlines()) == 1

def test_retrained_weights_in_the_same_folder_are_refused(clipdex, tmp_path: Path, tiny_model_dir: Path):
    model_dir = save_model_folder(open_clip.CLIP(**TINY_CFG), TINY_CFG, tmp_path / "model", TINY_PREPROCESS)
    config = write_config(tmp_path / "c.toml", model_dir, tmp_path / "store")
    (tmp_path / "imgs").mkdir()
    pattern(0).save(tmp_path / "imgs" / "a.png")
    assert clipdex("ingest", tmp_path / "imgs", "--config", config, with_config=False).code == 0
    torch.manual_seed(99)  # "retrain": new weights written over the same folder
    save_model_folder(open_clip.CLIP(**TINY_CFG), TINY_CFG, model_dir, TINY_PREPROCESS)
    result = clipdex("search", "--image", tmp_path / "imgs" / "a.png", "--config", config, with_config=False)
    assert result.code == 1 and "weights" in result.err
    assert "weights" in clipdex("status", "--config", config, with_config=False).err  # refused at open
    store = open_store(load_settings(config))
    assert store.count() == 1  # and nothing was lost
    store.close()


def _ingest_one(clipdex, tmp_path: Path, config: Path) -> Path:
    (tmp_path / "imgs").mkdir(exist_ok=True)
    pattern(0).save(tmp_path / "imgs" / "a.png")
    assert clipdex("ingest", tmp_path / "imgs", "--config", config, with_config=False).code == 0
    return tmp_path / "imgs" / "a.png"


def test_a_moved_model_folder_keeps_opening_its_collection(clipdex, tmp_path: Path, tiny_model_dir: Path):
    """The weights' content hash is the identity: a checkout moved or mounted elsewhere still works."""
    import shutil

    first = shutil.copytree(tiny_model_dir, tmp_path / "checkout" / "model")
    image = _ingest_one(clipdex, tmp_path, write_config(tmp_path / "c.toml", first, tmp_path / "store"))
    moved = shutil.move(tmp_path / "checkout", tmp_path / "mounted-elsewhere") / "model"
    config = write_config(tmp_path / "moved.toml", moved, tmp_path / "store")
    result = clipdex("search", "--image", image, "--json", "--config", config, with_config=False)
    assert result.code == 0, result.err
    assert result.json()[0]["path"] == str(image)


def test_a_collection_written_with_the_old_path_identity_keeps_opening(clipdex, tmp_path: Path,
                                                                         tiny_model_dir: Path):
    import shutil

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    config = write_config(tmp_path / "c.toml", model, tmp_path / "store")
    image = _ingest_one(clipdex, tmp_path, config)
    folder = tmp_path / "store" / "test"
    for meta_file in (folder / "clipdex.json", folder / "shard" / "clipdex.json"):
        meta = json.loads(meta_file.read_text())
        digest = meta.pop("weights")  # what clipdex wrote before the weights hash had its own key
        meta["model"], meta["pretrained"] = "local-dir:/old/checkout/model", f"/old/checkout/model/x#{digest}"
        meta_file.write_text(json.dumps(meta))
    result = clipdex("search", "--image", image, "--json", "--config", config, with_config=False)
    assert result.code == 0, result.err
    assert result.json()[0]["path"] == str(image)
    torch.manual_seed(5)  # different weights at the old identity's place are still refused
    save_model_folder(open_clip.CLIP(**TINY_CFG), TINY_CFG, model, TINY_PREPROCESS)
    result = clipdex("search", "a shoe", "--config", config, with_config=False)
    assert result.code == 1 and "was built with model" in result.err


# -- hf-hub: names, through huggingface_hub's own cache and offline logic -------------------------------

def _fake_hub_cache(cache: Path, repo: str, model_dir: Path) -> None:
    """The layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/REV/<files>}."""
    import shutil

    revision = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    shutil.copytree(model_dir, root / "snapshots" / revision)


def test_hf_hub_name_loads_from_the_cache_offline(tmp_path: Path, tiny_model_dir: Path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hf-home" / "hub"  # this test's own cache, not the run's (which stays empty)
    _fake_hub_cache(cache, "clipdex-test/tiny-clip", tiny_model_dir)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub_model = TorchEncoder.load(ModelSettings(name="hf-hub:clipdex-test/tiny-clip", pretrained=""))
    local = TorchEncoder.load(ModelSettings(name=f"local-dir:{tiny_model_dir}", pretrained=""))
    np.testing.assert_allclose(hub_model.encode_texts(["a red square"]), local.encode_texts(["a red square"]),
                               atol=1e-6)
    assert hub_model.identity.name == "hf-hub:clipdex-test/tiny-clip"
    assert hub_model.identity.weights == local.identity.weights != ""  # same bytes, same identity


def test_hf_hub_name_not_cached_offline_fails_fast_with_the_local_checkpoint_hint():
    with pytest.raises(ClipdexError, match="not cached and HF_HUB_OFFLINE is set.*local checkpoint"):
        TorchEncoder.load(ModelSettings(name="hf-hub:clipdex-test/not-there", pretrained=""))


@pytest.mark.slow
def test_unreachable_hub_fails_fast_through_huggingface_hub(tmp_path: Path):
    """The download goes where HF_ENDPOINT says (and through any proxy), and fails in one line."""
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as closed:  # a port nothing listens on: connections are refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    (tmp_path / "imgs").mkdir()
    pattern(0).save(tmp_path / "imgs" / "a.png")
    config = tmp_path / "hub.toml"
    config.write_text(f'[model]\nname = "hf-hub:clipdex-test/tiny-clip"\npretrained = ""\n'
                      f'[store]\npath = "{tmp_path / "store"}"\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}",
           "HF_HOME": str(tmp_path / "hf-home")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "retrieval.cli", "ingest", str(tmp_path / "imgs"),
                           "--config", str(config)], env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "local checkpoint" in lines[0]
    assert elapsed < 60  # no retry loop with backoff (26 s of it against an unreachable host)
    assert not any((tmp_path / "store").rglob("clipdex.json"))


# -- the bundled model, loaded the way `make demo` loads it ----------------------------------------------

@pytest.mark.slow
def test_bundled_model_through_demo_config_ranks_each_class_first(tmp_path: Path, monkeypatch):
    """configs/demo.toml -> models/fmnist-tiny, on the committed samples: "a photo of a sneaker" finds sneakers."""
    from retrieval.index import Index

    repo = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("CLIPDEX_STORE", str(tmp_path / "store"))
    settings = load_settings(repo / "configs" / "demo.toml")
    assert settings.model.name == f"local-dir:{repo / 'models' / 'fmnist-tiny'}"
    samples = repo / "samples" / "fashion-mnist"
    classes = sorted(p.name for p in samples.iterdir() if p.is_dir())
    assert len(classes) == 10
    with Index.open(settings, create=True) as index:
        report = index.ingest([samples])
        assert report.indexed == 300 and not report.failed
        ranked = {name: index.search(text=f"a photo of a {name.replace('_', ' ')}", limit=300) for name in classes}
    for name, hits in ranked.items():
        scores: dict[str, list[float]] = {}
        for hit in hits:
            scores.setdefault(Path(hit.payload["path"]).parent.name, []).append(hit.score)
        mean = {label: sum(v) / len(v) for label, v in scores.items()}
        assert max(mean, key=mean.__getitem__) == name, (name, mean)  # its own class ranks first
        top10 = [Path(h.payload["path"]).parent.name for h in hits[:10]]
        assert top10.count(name) >= 6, (name, top10)
    hits_at_10 = sum([Path(h.payload["path"]).parent.name for h in hits[:10]].count(name)
                     for name, hits in ranked.items())
    assert hits_at_10 >= 90  # the model's measured t2i precision@10 is 0.96 (README)
