"""[model] precision: int8 on CPU (both towers, attention projections included), recorded per collection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from retrieval.errors import ClipdexError
from retrieval.model.precision import CPU_AUTO, mixable, resolve
from retrieval.model.quantize import SelfAttention, swap_attention
from retrieval.model.torch_backend import TorchEncoder
from retrieval.settings import ModelSettings
from tests.conftest import write_config
from tests.images import pattern


@pytest.mark.parametrize("batch_first", [True, False])
def test_self_attention_matches_multihead_attention(batch_first: bool):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(64, 4, batch_first=batch_first).eval()
    x = torch.randn(3, 10, 64) if batch_first else torch.randn(10, 3, 64)
    mask = torch.full((10, 10), float("-inf")).triu(1)
    with torch.inference_mode():
        for m in (None, mask):
            want = mha(x, x, x, need_weights=False, attn_mask=m)[0]
            got = SelfAttention(mha)(x, x, x, need_weights=False, attn_mask=m)[0]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_int8_quantizes_every_linear_of_both_towers(tiny_model_dir: Path):
    name = f"local-dir:{tiny_model_dir}"
    fp32 = TorchEncoder.load(ModelSettings(name=name, pretrained="", precision="fp32"))
    int8 = TorchEncoder.load(ModelSettings(name=name, pretrained="", precision="int8"))
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    images = [pattern(i) for i in range(6)]
    texts = ["a red square", "a blue circle on white", "stripes"]
    int8.encode_texts(texts[:1])  # the text tower is converted on first use, the image tower not yet
    assert any(type(m) is nn.Linear for m in int8.model.visual.modules())
    assert not any(type(m) is nn.Linear for m in int8.model.transformer.modules())
    int8.encode_pil(images[:1])
    assert not any(isinstance(m, nn.MultiheadAttention) for m in int8.model.modules())
    assert not any(type(m) is nn.Linear for m in int8.model.modules())  # all converted, attention included
    swapped = sum(isinstance(m, SelfAttention) for m in int8.model.modules())
    assert swapped == 2  # one block in each tower of the tiny model
    for m in int8.model.modules():
        if isinstance(m, SelfAttention):
            assert "quantized" in type(m.in_proj).__module__ and "quantized" in type(m.out_proj).__module__
    img_cos = np.sum(fp32.encode_pil(images) * int8.encode_pil(images), axis=1)
    txt_cos = np.sum(fp32.encode_texts(texts) * int8.encode_texts(texts), axis=1)
    assert img_cos.min() > 0.98 and txt_cos.min() > 0.98, (img_cos, txt_cos)
    assert not np.array_equal(fp32.encode_texts(texts), int8.encode_texts(texts))  # int8 really ran


def test_swap_leaves_cross_attention_alone():
    pool = nn.Module()
    pool.attn = nn.MultiheadAttention(16, 2, kdim=8, vdim=8, batch_first=True)
    assert swap_attention(pool) == 0 and isinstance(pool.attn, nn.MultiheadAttention)


def test_precision_choices_and_their_devices():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve("auto", cpu) == CPU_AUTO and resolve("auto", cuda) == "fp16"
    assert resolve("fp32", cpu) == "fp32" and resolve("int8", cpu) == "int8"
    with pytest.raises(ClipdexError, match="fp16' needs a CUDA device"):
        resolve("fp16", cpu)
    with pytest.raises(ClipdexError, match="int8' runs on the CPU only"):
        resolve("int8", cuda)
    assert mixable("fp32", "int8") and mixable("int8", "fp32") and mixable("fp16", "fp16")
    assert not mixable("fp16", "int8")


def test_a_collection_records_its_precision(clipdex, config: Path, tmp_path: Path, tiny_model_dir: Path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        pattern(i).save(tmp_path / "imgs" / f"{i}.png")
    int8 = write_config(tmp_path / "int8.toml", tiny_model_dir, tmp_path / "store")
    int8.write_text(int8.read_text().replace('pretrained = ""', 'pretrained = ""\nprecision = "int8"'))
    assert clipdex("ingest", tmp_path / "imgs", "--config", int8, with_config=False).code == 0
    meta = json.loads(next((tmp_path / "store").rglob("clipdex.json")).read_text())
    assert meta["precision"] == "int8"
    fp32 = write_config(tmp_path / "fp32.toml", tiny_model_dir, tmp_path / "store")
    fp32.write_text(fp32.read_text().replace('pretrained = ""', 'pretrained = ""\nprecision = "fp32"'))
    # fp32 queries may meet an int8 collection (measured drift: README, Performance)
    hits = clipdex("search", "a red square", "--json", "--config", fp32, with_config=False).json()
    assert len(hits) == 3
    for meta_file in (tmp_path / "store").rglob("clipdex.json"):  # as if it had been built on a GPU
        meta_file.write_text(meta_file.read_text().replace('"int8"', '"fp16"'))
    refused = clipdex("search", "a red square", "--config", int8, with_config=False)
    assert refused.code == 1 and "built at precision fp16, which does not mix with int8" in refused.err
    assert "set model.precision to fp32 or fp16" in refused.err
    assert clipdex("search", "a red square", "--config", fp32, with_config=False).code == 0  # fp32 may


def test_int8_text_vectors_do_not_depend_on_their_batch(tiny_model_dir: Path):
    """Dynamic int8 scales activations per forward pass; a query text's vector must still be the same
    alone, beside negatives, or from the cache (fp32 batches are exact anyway)."""
    settings = ModelSettings(name=f"local-dir:{tiny_model_dir}", pretrained="", precision="int8")
    texts = ["a red square", "a blue circle on a long white background", "x"]
    together = TorchEncoder.load(settings).encode_texts(texts)
    for i, text in enumerate(texts):
        alone = TorchEncoder.load(settings).encode_texts([text])[0]  # a fresh encoder: nothing cached
        np.testing.assert_array_equal(together[i], alone)
