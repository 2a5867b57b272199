"""The torch-free tokenizer gives exactly open_clip's token ids (and needs neither torch nor open_clip)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import retrieval  # noqa: F401  isort: skip  (its torchvision shim runs before open_clip is imported)
import open_clip  # isort: skip
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.model.tokenizer import Tokenizer, load_tokenizer, model_config

REPO = Path(__file__).resolve().parent.parent

CORPUS = [
    "", " ", "   \t\n\r  ", "\u00a0\u2003\u3000", "a", "A dog on a beach", "a dog on a beach.",
    "MiXeD CaSe WoRdS", "ALL CAPS SHOUTING", "Hello, World! (again) [brackets] {braces} <angles>",
    "...!!!???;;::--__", "don't won't I'll we've they're she's I'm he'd", "'s 't 're", "100% 3.14 2026-12-01 12:30",
    "café naïve résumé façade Ångström", "e\u0301 combining acute", "Straße Æsir øre œuvre",
    "狗在海滩上", "東京の夜景", "서울의 밤", "Привет, мир", "مرحبا بالعالم", "שלום", "नमस्ते दुनिया", "ภาษาไทย",
    "🐶🏖️ a dog 🐕‍🦺 on the 🏝", "👩‍👩‍👧‍👦 family", "flags 🇫🇷🇯🇵", "😀😃😄😁😆😅😂🤣",
    "fish &amp; chips", "&lt;b&gt;bold&lt;/b&gt;", "&amp;amp; double", "&quot;quoted&quot; &#39;single&#39; &#x263A;",
    "&nbsp;&copy;&reg;&trade;", "&unknown; entity", "mojibake: Ã©tÃ© â€œquotesâ€\x9d",
    "<start_of_text> special <end_of_text>", "<START_OF_TEXT>", "tab\tseparated\tvalues", "new\nlines\nhere",
    "x" * 500, "word " * 100, "a photo of a " + "very " * 80 + "big dog", "🐶" * 90, "字" * 200,
    "supercalifragilisticexpialidocious antidisestablishmentarianism", "http://example.com/a?b=c&d=e#f",
    "user@example.com #hashtag @mention", "\x00\x01 control \x7f", "\ud7ff\ue000\ufffd", "ﬁ ligature ﬀ",
    "１２３ ｆｕｌｌｗｉｄｔｈ", "½ ² ³ ⅷ", "\u200b zero\u200dwidth \ufeff bom",
]


@pytest.fixture(scope="module")
def reference():
    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="module")
def ours() -> Tokenizer:
    tok = load_tokenizer("ViT-B-32")
    assert tok is not None
    return tok


def test_corpus_matches_open_clip(reference, ours: Tokenizer):
    want = reference(CORPUS).numpy()
    got = ours(CORPUS)
    assert got.dtype == np.int64 and got.shape == (len(CORPUS), 77) == want.shape
    for text, g, w in zip(CORPUS, got, want, strict=True):
        assert np.array_equal(g, w), text


def test_truncation_keeps_the_end_of_text_token(reference, ours: Tokenizer):
    long = "a photo of a " + "very " * 200 + "big dog"
    got = ours([long, "short"])
    assert got[0, 0] == ours.sot_token_id and got[0, -1] == ours.eot_token_id and (got[0] != 0).all()
    assert np.array_equal(got, reference([long, "short"]).numpy())
    # each call is independent of the batch it is in
    assert np.array_equal(ours(["short"])[0], got[1])


def test_single_string_and_empty_batch(reference, ours: Tokenizer):
    assert np.array_equal(ours("a cat"), reference("a cat").numpy())
    assert ours([]).shape == (0, 77)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=120))
def test_any_unicode_text_matches_open_clip(reference, ours: Tokenizer, text: str):
    assert np.array_equal(ours([text]), reference([text]).numpy()), repr(text)


WORDS = st.sampled_from(["dog", "Dog", "&amp;", "&lt;", "&#39;", "é", "'s", "🐶", "狗", " ", "\n", "!", "...", "12",
                         "<start_of_text>", "x" * 30, "ﬁ", "Ã©", "\u0301", "-"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(WORDS, max_size=60).map("".join))
def test_mixed_fragments_match_open_clip(reference, ours: Tokenizer, text: str):
    assert np.array_equal(ours([text]), reference([text]).numpy()), repr(text)


def test_model_context_length_comes_from_its_config(tiny_model_dir: Path):
    """The tiny test models use context 16, as open_clip's tokenizer for them does."""
    name = f"local-dir:{tiny_model_dir}"
    tok = load_tokenizer(name)
    assert tok is not None and tok.context_length == 16
    reference = open_clip.get_tokenizer(name)
    texts = CORPUS + ["one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"]
    assert np.array_equal(tok(texts), reference(texts).numpy())
    assert model_config(name)["text_cfg"]["context_length"] == 16
    bundled = load_tokenizer(f"local-dir:{REPO / 'models' / 'fmnist-tiny'}")
    assert bundled is not None and bundled.context_length == 16
    assert load_tokenizer("ViT-B-32", context_length=32).context_length == 32


def test_models_with_other_tokenizers_keep_the_torch_path(tmp_path: Path):
    assert load_tokenizer("ViT-B-16-SigLIP") is None  # SigLIP's tokenizer (by name, as open_clip picks it)
    assert load_tokenizer("hf-hub:timm/ViT-B-16-SigLIP") is None  # read through the hub: not ours to decide
    cfg = {"embed_dim": 8, "vision_cfg": {}, "text_cfg": {"hf_tokenizer_name": "bert-base-uncased"}}
    assert load_tokenizer(model_cfg=cfg) is None
    cfg["text_cfg"] = {"tokenizer_kwargs": {"reduction_mask": "random"}}
    assert load_tokenizer(model_cfg=cfg) is None
    cfg["text_cfg"] = {"context_length": 24, "tokenizer_kwargs": {"clean": "canonicalize"}}
    folder = tmp_path / "canon"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    tok = load_tokenizer(f"local-dir:{folder}")
    reference = open_clip.get_tokenizer(f"local-dir:{folder}")
    assert tok is not None and tok.context_length == 24
    assert np.array_equal(tok(CORPUS), reference(CORPUS).numpy())
    # an architecture open_clip does not know tokenizes with the default CLIP tokenizer, context 77
    assert load_tokenizer("no-such-arch").context_length == 77


def test_no_torch_and_no_open_clip_imported():
    code = ("import sys; from retrieval.model.tokenizer import load_tokenizer; t = load_tokenizer('ViT-B-32');"
            "ids = t(['a dog on a beach']); assert ids[0, 0] == 49406, ids;"
            "bad = [m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60,
                   env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80))
def test_ftfy_leaves_plain_ascii_as_it_is(text: str):
    """The tokenizer skips ftfy for printable ASCII without '&' (retrieval.model.tokenizer._PLAIN): ftfy agrees."""
    import ftfy

    from retrieval.model.tokenizer import _PLAIN

    if _PLAIN.issuperset(text):
        assert ftfy.fix_text(text) == text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["dog", "&amp;", "&amp;amp;amp;", "&", "<b>", "\r\n", "\x1b[31m", "\x00", "x"]),
                max_size=20).map("".join))
def test_ascii_texts_with_and_without_ftfy_match_open_clip(reference, ours: Tokenizer, text: str):
    assert np.array_equal(ours([text]), reference([text]).numpy()), repr(text)


def test_a_plain_query_does_not_import_ftfy():
    code = ("import sys; from retrieval.model.tokenizer import load_tokenizer; t = load_tokenizer('ViT-B-32');"
            "t(['a dog on a beach, at night (2021)']); assert 'ftfy' not in sys.modules;"
            "t(['caf\\u00e9']); assert 'ftfy' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60,
                   env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_bpe_tables_kept_on_disk_equal_the_built_ones_and_a_damaged_file_is_rebuilt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The tables read back from the cache are the ones open_clip's file gives; another set of special tokens
    has a file of its own; a cut or garbage file is built again (and rewritten), never trusted."""
    from retrieval.model import bpe_tables
    from retrieval.model.tokenizer import EOT, SOT, bytes_to_unicode, vocab_path

    monkeypatch.setenv("CLIPDEX_CACHE", str(tmp_path))
    byte_tokens = list(bytes_to_unicode().values())
    special = (SOT, EOT)
    built = bpe_tables.build(vocab_path(), byte_tokens, special)
    first = bpe_tables.load(vocab_path(), byte_tokens, special)
    target = bpe_tables.cache_file(vocab_path(), special)
    assert target is not None and target.is_file() and target.parent == tmp_path / "bpe"
    again = bpe_tables.load(vocab_path(), byte_tokens, special)
    assert first == built and again == built
    assert bpe_tables.cache_file(vocab_path(), (*special, "<extra>")) != target
    for damage in (target.read_bytes()[: 1000], b"not marshal at all", b""):
        target.write_bytes(damage)
        assert bpe_tables.load(vocab_path(), byte_tokens, special) == built
        assert bpe_tables.load(vocab_path(), byte_tokens, special) == built  # and the file was rewritten
    tokens = Tokenizer()(["a dog on a beach"])
    assert tokens[0][0] == built[0][SOT] and built[0][EOT] in tokens[0]


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_ascii_pattern_splits_printable_ascii_as_open_clips_pattern_does(ours: Tokenizer, text: str):
    """The standard-library pattern a printable-ASCII text goes through finds the same words as open_clip's
    Unicode one (``regex``), case and contractions included."""
    assert [m.group() for m in ours.ascii_pattern.finditer(text)] == [m.group() for m in ours.pattern.finditer(text)]


def test_a_plain_query_does_not_import_regex():
    code = ("import sys; from retrieval.model.tokenizer import Tokenizer; t = Tokenizer(); t(['A dog, 2 cats!']); "
            "print('regex' in sys.modules); t(['naïve café']); print('regex' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.split() == ["False", "True"]
