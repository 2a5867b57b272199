"""Texts at their real token length: the same vectors as the padded context, on several text towers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.model.text_trim import text_tower
from retrieval.model.torch_backend import ModelIdentity, TorchEncoder, open_clip

VISION = {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32}
TEXTS = ["a dog", "a red square on a blue background with a small cat", "x", "a photo of a bag.", ""]


def _text_cfg(**extra: object) -> dict:
    return {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2, **extra}


def _model(custom: bool, **text: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    return cls(embed_dim=32, vision_cfg=VISION, text_cfg=_text_cfg(**text)).eval()


def _encoder(model: torch.nn.Module, precision: str = "fp32") -> TorchEncoder:
    tokenizer = open_clip.SimpleTokenizer(context_length=24)
    return TorchEncoder(model, lambda im: im, tokenizer, ModelIdentity("t", "", 32), torch.device("cpu"), precision)


def _padded(model: torch.nn.Module, texts: list[str]) -> np.ndarray:
    tokens = open_clip.SimpleTokenizer(context_length=24)(texts)
    with torch.inference_mode():
        return torch.nn.functional.normalize(model.encode_text(tokens), dim=-1).numpy()


TRIMMED = {
    "CLIP, causal, argmax pool": (False, {}),
    "CustomTextCLIP, causal, argmax pool": (True, {}),
    "CustomTextCLIP, causal, eos pool": (True, {"pool_type": "eos", "eos_id": 49407}),
    "CLIP, causal, custom attention block (qk-norm)": (False, {"qk_norm": True}),
}
FULL_LENGTH = {
    "bidirectional (no causal mask)": (False, {"no_causal_mask": True}),
    "bidirectional with padding mask": (True, {"no_causal_mask": True, "pool_type": "first"}),
    "causal, last-position pool": (False, {"pool_type": "last"}),
    "causal, appended class token (CoCa)": (True, {"embed_cls": True}),
}


@pytest.mark.parametrize("name", TRIMMED)
def test_trimmed_text_equals_the_padded_context(name: str):
    custom, text = TRIMMED[name]
    model = _model(custom, **text)
    encoder = _encoder(model)
    assert encoder.text_tower is not None
    want = _padded(model, TEXTS)
    np.testing.assert_allclose(encoder.encode_texts(TEXTS), want, atol=1e-5)
    for text_ in TEXTS:  # one at a time too: every row trimmed to its own length
        encoder._text_cache.clear()
        np.testing.assert_allclose(encoder.encode_texts([text_])[0], want[TEXTS.index(text_)], atol=1e-5)


@pytest.mark.parametrize("name", FULL_LENGTH)
def test_towers_where_padding_matters_run_at_full_length(name: str):
    custom, text = FULL_LENGTH[name]
    model = _model(custom, **text)
    assert text_tower(model) is None
    np.testing.assert_allclose(_encoder(model).encode_texts(TEXTS), _padded(model, TEXTS), atol=1e-5)


def test_trimming_is_exact_only_because_of_the_mask():
    """The same weights without the causal mask give other vectors at full length than trimmed."""
    causal = _model(False)
    bidirectional = _model(False, no_causal_mask=True)
    bidirectional.load_state_dict(causal.state_dict())
    trimmed = _encoder(causal).encode_texts(TEXTS[:2])
    assert not np.allclose(trimmed, _padded(bidirectional, TEXTS[:2]), atol=1e-3)


def test_recent_texts_come_from_a_bounded_lru_cache():
    model = _model(False)
    encoder = _encoder(model)
    encoder.TEXT_CACHE_SIZE = 3
    first = encoder.encode_texts(["a", "b"])
    assert list(encoder._text_cache) == ["a", "b"]
    again = encoder.encode_texts(["b", "c", "a", "b"])  # two hits, one miss, a repeat
    np.testing.assert_array_equal(again[[0, 2, 3]], first[[1, 0, 1]])
    assert list(encoder._text_cache) == ["b", "a", "c"]  # least recently used first
    encoder.encode_texts(["d"])
    assert list(encoder._text_cache) == ["a", "c", "d"]
    again[:] = 0  # callers own what they get: the cache is not changed through it
    np.testing.assert_allclose(encoder.encode_texts(["a"]), _padded(model, ["a"]), atol=1e-5)
