"""Shared fixtures: a real (tiny, randomly initialised) open_clip model saved to disk, settings
files pointing at it and at a fresh embedded store, and a runner for the real CLI."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# No test may depend on what this machine's Hugging Face cache holds: every run gets an empty one
# (set before anything imports huggingface_hub, which reads these at import time).
# (conftest can be imported twice, as `conftest` and as `tests.conftest`: make the folder once.)
if not os.path.basename(os.environ.get("HF_HOME", "")).startswith("clipdex-test-hf-"):
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="clipdex-test-hf-")
if not os.path.basename(os.environ.get("CLIPDEX_CACHE", "")).startswith("clipdex-test-cache-"):
    os.environ["CLIPDEX_CACHE"] = tempfile.mkdtemp(prefix="clipdex-test-cache-")  # ONNX exports of hub models
for _var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "OPEN_CLIP_CACHE"):
    os.environ.pop(_var, None)

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
TINY_PREPROCESS = {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP saved the way `clipdex train` saves models (safetensors + open_clip config)."""
    import torch

    from retrieval.model.torch_backend import open_clip, save_model_folder

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG)
    return save_model_folder(model, TINY_CFG, tmp_path_factory.mktemp("models") / "tiny", TINY_PREPROCESS)


@pytest.fixture
def forty(tmp_path: Path) -> Path:
    """40 small, distinct images."""
    from tests.images import pattern

    folder = tmp_path / "forty"
    folder.mkdir()
    for i in range(40):
        pattern(i, (24, 16)).save(folder / f"{i:02d}.png")
    return folder


def write_config(path: Path, model_dir: Path, store: Path, collection: str = "test", **ingest: object) -> Path:
    lines = ["[model]", f'name = "local-dir:{model_dir}"', 'pretrained = ""', "batch_size = 8",
             "[store]", f'path = "{store}"', f'collection = "{collection}"', "[ingest]", "workers = 0"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in ingest.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@pytest.fixture
def config(tmp_path: Path, tiny_model_dir: Path) -> Path:
    return write_config(tmp_path / "clipdex.toml", tiny_model_dir, tmp_path / "store")


@pytest.fixture
def clipdex(capfd: pytest.CaptureFixture[str], config: Path) -> Callable[..., Result]:
    """Run the real CLI entry point in-process: ``clipdex("search", "cat", "--json")``."""
    from retrieval.cli import main

    def run(*args: str, with_config: bool = True) -> Result:
        capfd.readouterr()
        argv = [str(a) for a in args] + (["--config", str(config)] if with_config else [])
        code = main(argv)
        captured = capfd.readouterr()
        return Result(code, captured.out, captured.err)

    return run
