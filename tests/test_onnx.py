"""The ONNX Runtime query path on real tiny open_clip models and real ORT sessions: export equals torch, the
cache is keyed by content and repairs itself, read-only folders, models that keep torch, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.model.export import export_model
from retrieval.model.loader import load_query_encoder, onnx_precisions
from retrieval.model.onnx_backend import OnnxEncoder
from retrieval.model.onnx_files import MANIFEST, find_export
from retrieval.model.torch_backend import TorchEncoder, open_clip, save_model_folder
from retrieval.settings import ModelSettings
from tests.conftest import TINY_CFG, TINY_PREPROCESS, write_config
from tests.images import pattern

REPO = Path(__file__).resolve().parent.parent
TEXTS = ["a red square", "x", "", "Ünïcödé café 🐶 &amp; <b>html</b>", "a long caption " + "with many words " * 20]


def _model(folder: Path, seed: int = 0, cfg: dict | None = None) -> Path:
    torch.manual_seed(seed)
    cfg = cfg or TINY_CFG
    return save_model_folder(open_clip.CLIP(**cfg), cfg, folder, TINY_PREPROCESS)


def _settings(folder: Path, **kw: object) -> ModelSettings:
    return ModelSettings(name=f"local-dir:{folder}", pretrained="", **kw)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_onnx_fp32_equals_torch_on_texts_of_every_length_and_images(tiny_model_dir: Path, tmp_path: Path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m", ignore=shutil.ignore_patterns("onnx"))
    settings = _settings(folder, precision="fp32")
    torch_enc = TorchEncoder.load(settings)
    onnx = load_query_encoder(settings, "fp32")
    assert isinstance(onnx, OnnxEncoder) and onnx.engines == {"image": "onnxruntime fp32", "text": "onnxruntime fp32"}
    assert (folder / "onnx" / MANIFEST).is_file()  # beside the writable model folder
    assert onnx.trim and onnx.dim == torch_enc.dim and onnx.image_size == torch_enc.image_size == 32
    assert onnx.context_length == torch_enc.context_length == 16
    assert onnx.cut(onnx.tokenizer(["x"])).shape == (1, 3)  # a short text runs at its real length
    assert np.array_equal(onnx.tokenizer(TEXTS), torch_enc.tokenizer(TEXTS).numpy())
    for text in TEXTS:  # one at a time (each at its own length) and all together
        assert _cos(onnx.encode_texts([text]), torch_enc.encode_texts([text])).min() >= 0.9999
    onnx._text_cache.clear()
    assert _cos(onnx.encode_texts(TEXTS), torch_enc.encode_texts(TEXTS)).min() >= 0.9999
    images = [pattern(i) for i in range(4)] + [pattern(5).resize((90, 50)).convert("L")]
    assert _cos(onnx.encode_pil(images), torch_enc.encode_pil(images)).min() >= 0.9999
    assert onnx.identity == torch_enc.identity  # the same collection accepts both


def test_int8_export_stays_within_its_bound_and_mixes_by_the_rules(tiny_model_dir: Path, tmp_path: Path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m", ignore=shutil.ignore_patterns("onnx"))
    export = export_model(_settings(folder))
    reference = TorchEncoder.load(_settings(folder, precision="fp32"))
    for variants in export.manifest["towers"].values():
        assert variants["fp32"]["cosine"] >= 0.9999
        if "int8" in variants:
            assert variants["int8"]["cosine"] >= 0.99 and variants["int8"]["bytes"] < variants["fp32"]["bytes"]
        else:
            assert variants["int8_skipped"].startswith("cosine to fp32")
    auto = load_query_encoder(_settings(folder), "fp32")  # auto prefers int8 where it was kept
    assert auto.precision == ("int8" if "int8" in export.precisions("textual") else "fp32")
    assert _cos(auto.encode_texts(TEXTS), reference.encode_texts(TEXTS)).min() >= 0.99
    assert _cos(auto.encode_pil([pattern(1)]), reference.encode_pil([pattern(1)])).min() >= 0.99
    if "int8" in export.precisions("textual"):  # an fp16 (GPU) collection does not mix with int8: fp32 queries
        assert onnx_precisions(_settings(folder), "fp16", export) == {"image": "fp32", "text": "fp32"}
        assert onnx_precisions(_settings(folder), "int8", export)["text"] == "int8"


def test_a_changed_checkpoint_exports_again(tmp_path: Path):
    folder = _model(tmp_path / "m", seed=0)
    first = load_query_encoder(_settings(folder, precision="fp32")).encode_texts(["a red square"])
    key = find_export(_settings(folder)).manifest["key"]
    _model(folder, seed=1)  # new weights, same place
    assert find_export(_settings(folder)) is None  # the old export is not this model's
    second = load_query_encoder(_settings(folder, precision="fp32"))
    assert find_export(_settings(folder)).manifest["key"] != key
    want = TorchEncoder.load(_settings(folder, precision="fp32")).encode_texts(["a red square"])
    assert _cos(second.encode_texts(["a red square"]), want).min() >= 0.9999
    assert _cos(first, want).min() < 0.99  # the first export was another model's


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_export_is_rebuilt_with_one_line(clipdex, config: Path, tiny_model_dir: Path, tmp_path: Path,
                                                   damage: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CLIPDEX_TEXT_CACHE", "0")  # the text tower must run (a cached vector needs no export)
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m", ignore=shutil.ignore_patterns("onnx"))
    cfg = write_config(tmp_path / "c.toml", folder, tmp_path / "store")
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        pattern(i).save(tmp_path / "imgs" / f"{i}.png")
    assert clipdex("ingest", tmp_path / "imgs", "--config", cfg, with_config=False).code == 0
    assert clipdex("model", "export", "--config", cfg, with_config=False).code == 0
    want = clipdex("search", "a red square", "--json", "--config", cfg, with_config=False)
    assert want.code == 0 and want.err == ""  # exported ahead of time: nothing to say
    export = find_export(_settings(folder))
    target = export.path("textual", export.precisions("textual")[0])
    data = bytearray(target.read_bytes())
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    else:  # same size, one weight byte changed: only the content hash tells, read where no optimised graph
        data[len(data) // 2] ^= 0xFF  # is cached (a sound cached graph, keyed by the manifest's hash, runs as is)
        target.write_bytes(bytes(data))
        shutil.rmtree(export.folder / "optimized")
    got = clipdex("search", "a red square", "--json", "--config", cfg, with_config=False)
    assert got.code == 0 and got.json() == want.json()
    lines = got.err.strip().splitlines()
    assert len(lines) == 1 and "damaged" in lines[0] and "exporting it again" in lines[0], got.err
    assert "Traceback" not in got.err
    again = clipdex("search", "a red square", "--json", "--config", cfg, with_config=False)
    assert again.err == "" and again.json() == want.json()  # repaired for good


def test_random_weights_and_a_foreign_tokenizer_keep_torch_with_one_line(tmp_path: Path, capsys):
    empty = tmp_path / "random"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": TINY_PREPROCESS}))
    encoder = load_query_encoder(_settings(empty))
    assert isinstance(encoder, TorchEncoder)
    lines = _lines(capsys)
    assert len(lines) == 1 and "cannot run on ONNX Runtime" in lines[0] and "random" in lines[0]

    cfg = json.loads(json.dumps(TINY_CFG))
    cfg["text_cfg"]["tokenizer_kwargs"] = {"reduction_mask": "random"}  # open_clip's own, not a CLIP tokenizer
    folder = _model(tmp_path / "masked", cfg=cfg)
    encoder = load_query_encoder(_settings(folder))
    assert isinstance(encoder, TorchEncoder) and encoder.engines["text"].startswith("torch")
    lines = _lines(capsys)
    assert lines[-1].startswith("clipdex: model") and "tokenizer" in lines[-1]
    assert lines[-1].endswith("searching on torch")
    assert find_export(_settings(folder)).unexportable  # recorded: the next process does not try again
    assert isinstance(load_query_encoder(_settings(folder)), TorchEncoder)
    assert not any("exporting" in line for line in _lines(capsys))
    with pytest.raises(Exception, match="cannot run on ONNX Runtime") as refused:
        load_query_encoder(_settings(folder, engine="onnx"))
    assert type(refused.value).__name__ == "ClipdexError"


def _read_only(folder: Path) -> list[str] | None:
    """A command prefix that runs with ``folder`` read-only (a private read-only bind mount as root, else
    chmod), or None where this machine allows neither."""
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return []
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        return None
    return ["unshare", "-m", "sh", "-c", f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" '
            '&& exec "$@"', "sh"]


def _cli(prefix: list[str], *args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "retrieval.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_read_only_model_folder_exports_to_the_cache_and_a_read_only_cache_is_one_line(tiny_model_dir: Path,
                                                                                          tmp_path: Path):
    ro = tmp_path / "ro"
    folder = shutil.copytree(tiny_model_dir, ro / "model", ignore=shutil.ignore_patterns("onnx"))
    cfg = write_config(tmp_path / "c.toml", folder, tmp_path / "store")
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        pattern(i).save(tmp_path / "imgs" / f"{i}.png")
    env = {**os.environ, "PYTHONPATH": str(REPO), "CLIPDEX_CACHE": str(tmp_path / "cache")}
    assert _cli([], "ingest", tmp_path / "imgs", "--config", cfg, env=env).returncode == 0
    prefix = _read_only(ro)
    if prefix is None:
        pytest.skip("no way to make a folder read-only here")
    got = _cli(prefix, "search", "a red square", "--json", "--config", cfg, env=env)
    assert got.returncode == 0 and len(json.loads(got.stdout)) == 3, got.stderr
    assert not (folder / "onnx").exists() and list((tmp_path / "cache" / "onnx").glob(f"*/{MANIFEST}"))
    status = _cli(prefix, "status", "--json", "--config", cfg, env=env)
    assert json.loads(status.stdout)["engines"]["text"].startswith("onnxruntime")

    env["CLIPDEX_CACHE"] = str(ro / "cache")  # now the cache is read-only too
    got = _cli(prefix, "search", "a red square", "--json", "--config", cfg, env=env)
    assert got.returncode == 0 and len(json.loads(got.stdout)) == 3
    lines = [line for line in got.stderr.splitlines() if line.strip()]
    assert any("not writable" in line and line.endswith("searching on torch") for line in lines), got.stderr
    assert "Traceback" not in got.stderr
    export = _cli(prefix, "model", "export", "--config", cfg, env=env)
    assert export.returncode == 1 and export.stderr.startswith("clipdex: error: cannot write the ONNX export")
    assert len(export.stderr.strip().splitlines()) == 1


def test_big_weights_digests_are_remembered_across_processes_until_the_file_changes(tmp_path: Path, monkeypatch):
    import retrieval.model.weights as weights

    monkeypatch.setattr(weights, "REMEMBERED_BYTES", 1)
    monkeypatch.setenv("CLIPDEX_CACHE", str(tmp_path / "cache"))
    file = tmp_path / "w.bin"
    file.write_bytes(b"a" * 1000)
    first = weights.file_digest(file)
    assert json.loads((tmp_path / "cache" / "digests.json").read_text())[str(file.resolve())][3] == first
    weights._digests.clear()  # as a new process: from the cache file
    assert weights.file_digest(file) == first
    file.write_bytes(b"b" * 1000)  # same size, new content and mtime
    os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 10**9))
    weights._digests.clear()
    assert weights.file_digest(file) != first
