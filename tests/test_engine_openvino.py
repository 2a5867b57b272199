"""The OpenVINO ingest engine on real tiny open_clip models and real OpenVINO: its vectors equal torch fp32's,
the choice by CPU flags (passed as data) with the fallback to torch, and a real ingest through it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.errors import ClipdexError
from retrieval.index import Index
from retrieval.model.ingest_engine import choose, for_settings
from retrieval.model.loader import load_ingest_encoder
from retrieval.model.openvino_backend import OpenVinoEncoder
from retrieval.model.precision import mixable
from retrieval.model.torch_backend import TorchEncoder
from retrieval.settings import ModelSettings, Settings
from tests.conftest import TINY_CFG, TINY_PREPROCESS
from tests.images import pattern
from tests.test_precision import EPYC_ZEN3, SAPPHIRE_RAPIDS, ZEN4

ZEN4_FLAGS, SPR_FLAGS, AVX2_FLAGS = ZEN4.split(), SAPPHIRE_RAPIDS.split(), EPYC_ZEN3.split()
CANDIDATE = frozenset({"avx512_bf16"})
"""The CPU kind where OpenVINO was measured (retrieval.model.ingest_engine.WINS_ON)."""


def _settings(folder: Path, **kw: object) -> ModelSettings:
    return ModelSettings(name=f"local-dir:{folder}", pretrained="", device="cpu", **kw)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(("precision", "bound"), [("fp32", 0.9999), ("bf16", 0.99)])
def test_openvino_vectors_equal_torch_fp32(tiny_model_dir: Path, precision: str, bound: float):
    fp32 = TorchEncoder.load(_settings(tiny_model_dir, precision="fp32"))
    encoder = load_ingest_encoder(_settings(tiny_model_dir, precision=precision, ingest_engine="openvino"))
    assert isinstance(encoder, OpenVinoEncoder) and encoder.precision == precision
    assert encoder.engines["image"] == f"openvino {precision}"
    torch.manual_seed(0)
    pixels = torch.randn(13, 3, encoder.image_size, encoder.image_size)  # odd: the parts differ in size
    got, want = encoder.encode_images(pixels), fp32.encode_images(pixels)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert (got * want).sum(1).min() >= bound
    assert np.array_equal(encoder.encode_images(pixels[:3]), got[:3])  # a vector does not depend on its batch
    images = [pattern(i) for i in range(3)]
    assert (encoder.encode_pil(images) * fp32.encode_pil(images)).sum(1).min() >= bound
    assert encoder.encode_images(pixels[:0]).shape == (0, encoder.dim)
    assert mixable(encoder.precision, "int8") and mixable(encoder.precision, "fp32")  # what queries run
    texts = ["a red square", "stripes"]  # texts stay on torch, at the precision torch gives them
    assert (encoder.encode_texts(texts) * fp32.encode_texts(texts)).sum(1).min() >= bound


def test_the_engine_is_chosen_by_cpu_flags():
    # auto picks OpenVINO on no CPU yet (measured, docs/benchmarks.md): torch on every flag set
    for flags, precision in ((ZEN4_FLAGS, "bf16"), (SPR_FLAGS, "bf16"), (AVX2_FLAGS, "int8")):
        assert choose("auto", precision, "cpu", flags, installed=True) == "torch"
        assert for_settings(ModelSettings(), "cpu", flags, installed=True) == "torch"
    # once a CPU kind is listed in WINS_ON: there, at bf16, if installed; AMX CPUs keep torch's bf16
    wins = (CANDIDATE,)
    assert choose("auto", "bf16", "cpu", ZEN4_FLAGS, True, wins) == "openvino"
    assert choose("auto", "bf16", "cpu", SPR_FLAGS, True, wins) == "torch"
    assert choose("auto", "int8", "cpu", AVX2_FLAGS, True, wins) == "torch"
    assert choose("auto", "bf16", "cpu", ZEN4_FLAGS, False, wins) == "torch"  # the fallback: not installed
    assert choose("auto", "fp32", "cpu", ZEN4_FLAGS, True, wins) == "torch"  # only bf16 was measured
    assert choose("auto", "fp16", "cuda", ZEN4_FLAGS, True, wins) == "torch"
    assert choose("torch", "bf16", "cpu", ZEN4_FLAGS, True, wins) == "torch"
    auto = ModelSettings()  # precision = "auto" resolves by the same flags first
    assert for_settings(auto, "cpu", ZEN4_FLAGS, True, wins) == "openvino"
    assert for_settings(auto, "cpu", AVX2_FLAGS, True, wins) == "torch"  # auto is int8 there
    assert for_settings(auto, "cpu", SPR_FLAGS, True, wins) == "torch"
    assert for_settings(auto, "cuda", ZEN4_FLAGS, True, wins) == "torch"
    assert for_settings(auto.model_copy(update={"ingest_engine": "torch"}), "cpu", ZEN4_FLAGS, True, wins) == "torch"
    # asked for: on any CPU kind, at bf16 or fp32; otherwise one line
    explicit = ModelSettings(ingest_engine="openvino")
    assert for_settings(explicit, "cpu", ZEN4_FLAGS, installed=True) == "openvino"
    with pytest.raises(ClipdexError, match="not int8"):  # precision auto is int8 on AVX2: say which to set
        for_settings(explicit, "cpu", AVX2_FLAGS, installed=True)
    assert choose("openvino", "fp32", "cpu", AVX2_FLAGS, installed=True) == "openvino"
    assert choose("openvino", "bf16", "cpu", SPR_FLAGS, installed=True) == "openvino"
    for args, words in [(("int8", "cpu", AVX2_FLAGS, True), "not int8"),
                        (("fp16", "cuda", ZEN4_FLAGS, True), "runs on the CPU"),
                        (("bf16", "cpu", ZEN4_FLAGS, False), "not installed")]:
        with pytest.raises(ClipdexError, match=words) as refused:
            choose("openvino", *args)
        assert "\n" not in str(refused.value) and "ingest_engine" in str(refused.value)


def test_auto_ingests_on_torch_and_falls_back_to_it_without_openvino(tiny_model_dir: Path, capsys):
    settings = _settings(tiny_model_dir)  # precision auto: bf16 on these flags
    encoder = load_ingest_encoder(settings, flags=ZEN4_FLAGS, installed=True)
    assert type(encoder) is TorchEncoder and encoder.engines["image"] == "torch bf16"  # the default today
    wins = (CANDIDATE,)
    encoder = load_ingest_encoder(settings, flags=ZEN4_FLAGS, installed=True, wins_on=wins)
    assert isinstance(encoder, OpenVinoEncoder) and encoder.precision == "bf16"
    encoder = load_ingest_encoder(settings, flags=ZEN4_FLAGS, installed=False, wins_on=wins)
    assert type(encoder) is TorchEncoder and encoder.precision == "bf16" and _lines(capsys) == []
    assert type(load_ingest_encoder(settings, flags=AVX2_FLAGS, installed=True, wins_on=wins)) is TorchEncoder
    with pytest.raises(ClipdexError, match="openvino package is not installed"):
        load_ingest_encoder(settings.model_copy(update={"ingest_engine": "openvino"}), flags=ZEN4_FLAGS,
                            installed=False)


def test_a_model_that_cannot_export_ingests_on_torch_unless_openvino_is_asked_for(tmp_path: Path, capsys):
    folder = tmp_path / "random"  # a config without weights: random weights, nothing stable to export
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG,
                                                              "preprocess_cfg": TINY_PREPROCESS}))
    encoder = load_ingest_encoder(_settings(folder), flags=ZEN4_FLAGS, installed=True, wins_on=(CANDIDATE,))
    assert type(encoder) is TorchEncoder and _lines(capsys) == []
    with pytest.raises(ClipdexError, match="cannot run on OpenVINO.*random") as refused:
        load_ingest_encoder(_settings(folder, ingest_engine="openvino"))
    assert "\n" not in str(refused.value)


def test_a_real_ingest_through_openvino(tiny_model_dir: Path, forty: Path, tmp_path: Path):
    settings = Settings().with_overrides(
        model={"name": f"local-dir:{tiny_model_dir}", "pretrained": "", "device": "cpu", "batch_size": 8,
               "precision": "bf16", "ingest_engine": "openvino"},
        store={"path": str(tmp_path / "store"), "collection": "ov"}, ingest={"workers": 0})
    index = Index.open(settings, create=True)
    try:
        report = index.ingest([forty])
        assert report.indexed == 40 and not report.failed
        assert isinstance(index.ingest_encoder, OpenVinoEncoder)
        assert index.status()["engines"]["ingest"] == "openvino bf16"
        assert index.store.meta().precision == "bf16"  # what the collection records: the numeric path
        files = sorted(str(p) for p in forty.iterdir())
        stored = index.stored_vectors(files[:10])
        fp32 = TorchEncoder.load(_settings(tiny_model_dir, precision="fp32"))
        from PIL import Image

        want = fp32.encode_pil([Image.open(f).convert("RGB") for f in files[:10]])
        assert (stored * want).sum(1).min() >= 0.99
        hits = index.search("a red square", limit=5)
        assert len(hits) == 5
    finally:
        index.close()


def test_status_asked_while_another_thread_is_still_importing_torch(monkeypatch: pytest.MonkeyPatch):
    """``clipdex serve``'s status came in while its sync thread was importing torch: a ``torch`` module without
    ``cuda`` yet made the page's status request a 500. The plan is then read as a CPU's."""
    import sys
    import types

    from retrieval.model.ingest_engine import planned

    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))  # as sys.modules holds it mid-import
    assert planned(ModelSettings(device="auto", ingest_engine="torch")) == "torch"
    assert planned(ModelSettings(device="auto")).startswith(("torch", "openvino"))
