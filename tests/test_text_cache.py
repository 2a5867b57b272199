"""The on-disk text -> vector cache of one-shot searches (retrieval.model.text_cache) with a real tiny model on
ONNX Runtime: a repeated text is answered from disk with the tower's own vector, keyed by model, precision and
runtime; a damaged or foreign file is a miss, never a wrong vector."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from retrieval.model import text_cache
from retrieval.model.export import export_model
from retrieval.model.loader import load_query_encoder
from retrieval.model.onnx_backend import OnnxEncoder
from retrieval.settings import ModelSettings


@pytest.fixture
def encoder(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OnnxEncoder:
    monkeypatch.setenv("CLIPDEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(text_cache.ENV, raising=False)
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m", ignore=shutil.ignore_patterns("onnx"))
    settings = ModelSettings(name=f"local-dir:{folder}", pretrained="", precision="fp32")
    export_model(settings)
    text_cache.enable()
    yield load_query_encoder(settings, "fp32")
    text_cache.enable(False)


def test_a_repeated_text_comes_from_disk_with_the_towers_own_vector(encoder: OnnxEncoder, tmp_path: Path):
    assert text_cache.ort_version()  # read from the package files, without importing it
    texts = ["a red square", "caf\u00e9 \U0001f436", "x"]
    fresh = encoder._encode_texts(texts)
    folder = encoder._text_folder()
    assert folder is not None and len(list(folder.glob("*.vec"))) == 3
    for text, vector in zip(texts, fresh, strict=True):
        assert np.array_equal(text_cache.get(folder, text, encoder.dim), vector)
    direct = encoder._encode_texts_now(texts)
    assert np.allclose(encoder._encode_texts(texts), direct, atol=1e-6)
    assert text_cache.get(folder, "never seen", encoder.dim) is None
    other = text_cache.folder_for(str(encoder.export.manifest["key"]), "int8")
    assert other != folder and text_cache.get(other, "a red square", encoder.dim) is None  # another precision
    assert text_cache.model_key("k", "fp32", "1.0") != text_cache.model_key("k", "fp32", "1.1")  # another runtime


@pytest.mark.parametrize("damage", ["truncate", "other-text", "not-unit"])
def test_a_damaged_file_is_a_miss_and_is_written_again(encoder: OnnxEncoder, damage: str):
    want = encoder._encode_texts(["a red square"])[0]
    folder = encoder._text_folder()
    path = text_cache._file(folder, "a red square")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:-7])
    elif damage == "other-text":  # a file that names another text (as a hash collision would)
        path.write_bytes(data.replace(b"red", b"RED"))
    else:
        path.write_bytes(data[:-4 * encoder.dim] + (np.asarray(want) * 3).astype("<f4").tobytes())
    assert text_cache.get(folder, "a red square", encoder.dim) is None
    assert np.allclose(encoder._encode_texts(["a red square"])[0], want, atol=1e-6)  # encoded again...
    again = text_cache.get(folder, "a red square", encoder.dim)
    assert again is not None and np.allclose(again, want, atol=1e-6)  # ...and written again


def test_off_by_environment(encoder: OnnxEncoder, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(text_cache.ENV, "0")
    assert encoder._text_folder() is None
