"""The cached optimised ONNX Runtime graph (retrieval.model.ort_cache) on a real tiny model and real ORT
sessions: the same vectors as an uncached session, made again for another model, ORT version or CPU, and a
damaged file said in one line and rebuilt."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from retrieval.model import ort_cache
from retrieval.model.export import export_model
from retrieval.model.loader import load_query_encoder
from retrieval.model.onnx_backend import OnnxEncoder, session_options
from retrieval.model.onnx_files import find_export
from retrieval.settings import ModelSettings
from tests.images import pattern

TEXTS = ["a red square", "x", "a dog on a beach at night"]


def _settings(folder: Path) -> ModelSettings:
    return ModelSettings(name=f"local-dir:{folder}", pretrained="", precision="fp32")


def _encoder(folder: Path, lines: list[str]) -> OnnxEncoder:
    encoder = load_query_encoder(_settings(folder), "fp32", log=lines.append)
    assert isinstance(encoder, OnnxEncoder)
    return encoder


def _vectors(encoder: OnnxEncoder) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([encoder.encode_texts([t]) for t in TEXTS]),
            encoder.encode_pil([pattern(i) for i in range(3)]))


def _cached(folder: Path, name: str = "textual-fp32") -> tuple[Path, dict]:
    path = folder / "onnx" / ort_cache.SUBDIR / f"{name}.onnx"
    return path, json.loads(path.with_name(path.name + ".json").read_text())


@pytest.fixture
def model(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLIPDEX_TEXT_CACHE", "0")  # every encode here runs the tower (retrieval.model.text_cache)
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m", ignore=shutil.ignore_patterns("onnx"))
    export_model(_settings(folder))  # ahead of time, as `clipdex model export` does
    return folder


def test_cached_graph_gives_the_same_vectors_as_an_uncached_session(model: Path):
    lines: list[str] = []
    first = _vectors(_encoder(model, lines))  # optimises and saves the graph
    path, side = _cached(model)
    assert path.stat().st_size == side["bytes"] and side["onnxruntime"] == ort.__version__
    assert _cached(model, "visual-fp32")[1]["bytes"] > 0
    stamp = path.stat().st_mtime_ns
    second = _vectors(_encoder(model, lines))  # loads the saved graph with optimisation off
    assert path.stat().st_mtime_ns == stamp  # read, not written again
    export = find_export(_settings(model))
    plain = ort.InferenceSession(export.read("textual", "fp32"), session_options(), providers=["CPUExecutionProvider"])
    encoder = _encoder(model, lines)
    tokens = encoder.cut(encoder.tokenizer(["a red square"]))
    want = plain.run(None, {plain.get_inputs()[0].name: tokens})[0]
    want = want / np.linalg.norm(want, axis=-1, keepdims=True)
    for a, b in zip(first, second, strict=True):
        assert np.allclose(a, b, atol=1e-6)
    assert np.allclose(second[0][0], want[0], atol=1e-6)
    assert lines == []  # nothing to say when all is well


def test_cached_graph_is_made_again_for_another_model_ort_version_or_cpu(model: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    lines: list[str] = []
    _vectors(_encoder(model, lines))
    key = _cached(model)[1]["key"]
    monkeypatch.setattr(ort, "__version__", ort.__version__ + "-other")
    _encoder(model, lines).encode_texts(["a red square"])
    other_ort = _cached(model)[1]
    assert other_ort["key"] != key and other_ort["onnxruntime"].endswith("-other")
    monkeypatch.undo()
    monkeypatch.setattr(ort_cache, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    _encoder(model, lines).encode_texts(["a red square"])
    assert _cached(model)[1]["key"] not in (key, other_ort["key"])
    monkeypatch.undo()
    # a changed model: another export (another content hash), so another key
    import torch

    from retrieval.model.torch_backend import open_clip, save_model_folder
    from tests.conftest import TINY_CFG, TINY_PREPROCESS

    torch.manual_seed(7)
    save_model_folder(open_clip.CLIP(**TINY_CFG), TINY_CFG, model, TINY_PREPROCESS)
    export_model(_settings(model))
    changed = _encoder(model, lines)
    got = changed.encode_texts(["a red square"])
    side = _cached(model)[1]
    assert side["source_xxh3"] == find_export(_settings(model)).entry("textual", "fp32")["xxh3"]
    assert side["key"] != key
    plain = ort.InferenceSession(find_export(_settings(model)).read("textual", "fp32"), session_options(),
                                 providers=["CPUExecutionProvider"])
    tokens = changed.cut(changed.tokenizer(["a red square"]))
    want = plain.run(None, {plain.get_inputs()[0].name: tokens})[0]
    assert np.allclose(got[0], want[0] / np.linalg.norm(want[0]), atol=1e-6)
    assert lines == []  # a cache for another model or runtime is not damage: made again silently


@pytest.mark.parametrize("damage", ["truncate", "flip", "record"])
def test_damaged_cached_graph_is_rebuilt_with_one_line(model: Path, damage: str):
    lines: list[str] = []
    want = _vectors(_encoder(model, lines))
    path, side = _cached(model)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "flip":  # same size, one byte changed: only the hash tells
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.with_name(path.name + ".json").write_text("{not json")
    got = _vectors(_encoder(model, lines))
    assert len(lines) == 1 and "optimised graph" in lines[0] and "optimising the graph again" in lines[0], lines
    for a, b in zip(want, got, strict=True):
        assert np.allclose(a, b, atol=1e-6)
    again_path, again = _cached(model)
    assert again["key"] == side["key"] and again_path.stat().st_size == again["bytes"]
    lines.clear()
    _vectors(_encoder(model, lines))
    assert lines == []  # repaired for good


def test_a_session_opened_ahead_is_the_one_the_encoder_uses(model: Path, monkeypatch: pytest.MonkeyPatch):
    from retrieval.model.loader import open_text_ahead

    lines: list[str] = []
    want = _encoder(model, lines).encode_texts(["a red square"])
    made: list[str] = []
    original = ort.InferenceSession

    def counting(*args, **kwargs):
        made.append(str(args[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", counting)
    monkeypatch.setenv("CLIPDEX_OPEN_AHEAD", "1")
    open_text_ahead(_settings(model), ["a red square"])  # a background thread, as `clipdex search` starts it
    for thread in threading.enumerate():  # `clipdex search` imports and opens the store meanwhile (0.3 s)
        if thread.name == "clipdex-text-ahead":
            thread.join(timeout=120)
    got = _encoder(model, lines).encode_texts(["a red square"])
    assert len(made) == 1 and not ort_cache._ahead  # taken by the encoder, not made twice
    assert np.allclose(got, want, atol=1e-6) and lines == []
