"""open_clip's CLIP tokenizer without torch: the same token ids as ``open_clip.get_tokenizer(name)(texts)``.

A port of open_clip's ``SimpleTokenizer`` (byte-level BPE over ``bpe_simple_vocab_16e6.txt.gz``, ftfy
and HTML-entity cleaning, truncation that keeps the end-of-text token) returning numpy int64 arrays.
The vocabulary is read from open_clip's installed package folder, found with
``importlib.util.find_spec`` so that open_clip (whose ``__init__`` imports torch) is never executed.

Models whose tokenizer is something else (a Hugging Face tokenizer, SigLIP's, a random reduction
mask) get None from :func:`load_tokenizer`: they keep the torch path.
"""

from __future__ import annotations

import importlib.util
import json
import re
import string
from collections.abc import Callable, Mapping, Sequence
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import ClipdexError
from retrieval.model import bpe_tables

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
DEFAULT_CONTEXT_LENGTH = 77
CONFIG_NAME = "open_clip_config.json"
LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
SOT, EOT = "<start_of_text>", "<end_of_text>"
WORDS = r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
"""open_clip's pre-tokenising pattern (after the special tokens)."""
ASCII_WORDS = r"""|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+"""
"""The same on printable ASCII, where the letters are a-z (either case), the numbers 0-9 and the only space is
' ': the standard library's ``re`` can run it, so a plain query never imports ``regex``."""
BPE_CACHE_SIZE = 16384
"""Words whose BPE split is remembered (open_clip's cache grows without bound; a server's must not)."""


def open_clip_folder() -> Path | None:
    """open_clip's installed package folder, located without importing it (its ``__init__`` imports torch)."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / VOCAB_FILE).is_file():
            return Path(location)
    return None


def vocab_path() -> Path:
    """The BPE merges file open_clip ships."""
    folder = open_clip_folder()
    if folder is None:
        raise ClipdexError(f"open_clip's {VOCAB_FILE} was not found (is open_clip_torch installed?)")
    return folder / VOCAB_FILE


@cache
def bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character table of GPT-2/CLIP byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


@cache
def _tables(path: str, special: tuple[str, ...]) -> bpe_tables.Tables:
    """The token and merge tables of ``path`` (retrieval.model.bpe_tables: kept on disk, read once a process)."""
    return bpe_tables.load(path, list(bytes_to_unicode().values()), special)


_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"&"}
"""Characters ftfy's ``fix_text`` leaves as they are: printable ASCII without '&' (no mojibake, no HTML
entity, no control or terminal escape, nothing to normalise; tests/test_tokenizer.py checks it on ftfy itself)."""


def basic_clean(text: str) -> str:
    """open_clip's ``basic_clean``: ftfy, then HTML unescaped twice. ftfy (0.1 s to import) is loaded only for
    a text it could change."""
    if not _PLAIN.issuperset(text):
        import ftfy

        text = ftfy.fix_text(text)
    if "&" in text:  # html.unescape changes nothing else (and html.entities is a large table to import)
        import html

        text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text: str) -> str:
    return " ".join(text.split()).strip()


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _canonicalize(text: str) -> str:
    text = basic_clean(text).replace("_", " ").translate(_PUNCTUATION).lower()
    return " ".join(text.split()).strip()


CLEANERS: dict[str, Callable[[str], str]] = {
    "lower": lambda text: whitespace_clean(basic_clean(text)).lower(),
    "whitespace": lambda text: whitespace_clean(basic_clean(text)),
    "canonicalize": _canonicalize,
}
"""open_clip's ``clean`` options of SimpleTokenizer (``text_cfg.tokenizer_kwargs.clean``)."""


class Tokenizer:
    """CLIP's byte-level BPE tokenizer; ``tokenizer(texts)`` is an int64 array ``(len(texts), context_length)``."""

    def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH, clean: str = "lower",
                 additional_special_tokens: Sequence[str] = (), bpe_path: str | Path | None = None):
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2, not {context_length}")
        if clean not in CLEANERS:
            raise ValueError(f"unknown clean '{clean}' ({', '.join(CLEANERS)})")
        self.context_length = int(context_length)
        self.clean = CLEANERS[clean]
        self.byte_encoder = bytes_to_unicode()
        special = [SOT, EOT, *additional_special_tokens]
        self.encoder, self.bpe_ranks = _tables(str(bpe_path or vocab_path()), tuple(special))
        self.special = frozenset(special)
        self.vocab_size = len(self.encoder)
        self.sot_token_id, self.eot_token_id = self.encoder[SOT], self.encoder[EOT]
        self._special_alternatives = "|".join(special)
        self.ascii_pattern = re.compile(self._special_alternatives + ASCII_WORDS, re.IGNORECASE)
        self._bpe_ids = lru_cache(maxsize=BPE_CACHE_SIZE)(self._word_ids)

    @cached_property
    def pattern(self) -> Any:
        """open_clip's word pattern (Unicode letter and number classes: the ``regex`` module, 0.03 s to import,
        loaded for the first text that is not printable ASCII)."""
        import regex

        return regex.compile(self._special_alternatives + WORDS, regex.IGNORECASE)

    def _bpe(self, token: str) -> list[str]:
        """The BPE split of one pre-tokenised word (open_clip's ``SimpleTokenizer.bpe``)."""
        if token in self.special:
            return [token]
        word = (*token[:-1], token[-1] + "</w>")
        if len(word) == 1:
            return list(word)
        ranks = self.bpe_ranks
        while len(word) > 1:
            pairs = set(zip(word, word[1:], strict=False))
            bigram = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
            if bigram not in ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return list(word)

    def _word_ids(self, token: str) -> tuple[int, ...]:
        encoded = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
        return tuple(self.encoder[piece] for piece in self._bpe(encoded))

    def encode(self, text: str, limit: int | None = None) -> list[int]:
        """The token ids of ``text`` (no start/end tokens); with ``limit``, stops once that many are known."""
        ids: list[int] = []
        text = self.clean(text)
        pattern = self.ascii_pattern if text.isascii() and text.isprintable() else self.pattern
        for match in pattern.finditer(text):
            ids.extend(self._bpe_ids(match.group()))
            if limit is not None and len(ids) >= limit:
                break
        return ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """Token ids ``(N, context_length)`` int64, zero-padded; an over-long text keeps its end-of-text token."""
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot_token_id, *self.encode(text, limit=self.context_length), self.eot_token_id]
            if len(tokens) > self.context_length:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot_token_id
            out[row, : len(tokens)] = tokens
        return out


def model_config(name: str) -> dict[str, Any] | None:
    """The ``model_cfg`` of an open_clip model name, read without open_clip: a ``local-dir:`` folder's
    config, or the built-in architecture's JSON; None where it is not known here (hub names, unknown)."""
    if name.startswith(LOCAL_DIR):
        path = Path(name[len(LOCAL_DIR) :]) / CONFIG_NAME
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ClipdexError(f"cannot read {path}: {exc}") from None
        found = config.get("model_cfg", config) if isinstance(config, dict) else None
        return found if isinstance(found, dict) else None
    folder = open_clip_folder()
    if name.startswith(HF_HUB) or folder is None or "/" in name or name in ("", ".", ".."):
        return None
    path = folder / "model_configs" / f"{name}.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and {"embed_dim", "vision_cfg", "text_cfg"} <= config.keys() else None


SUPPORTED_KWARGS = frozenset({"clean", "additional_special_tokens"})


def load_tokenizer(name: str = "", model_cfg: Mapping[str, Any] | None = None,
                   context_length: int | None = None) -> Tokenizer | None:
    """The torch-free tokenizer that gives ``open_clip.get_tokenizer(name)``'s ids, or None where that one
    is not open_clip's SimpleTokenizer (Hugging Face and SigLIP tokenizers, random reduction masks).

    ``name`` is the open_clip name as clipdex resolves it (a cached hub model as ``local-dir:`` of its
    snapshot); ``model_cfg`` overrides the config read from it. The context length comes, as in open_clip,
    from the argument, else ``text_cfg.context_length``, else 77.
    """
    if model_cfg is None:
        if name.startswith(HF_HUB):
            return None  # open_clip would read the hub config (or fall back to an HF tokenizer)
        model_cfg = model_config(name) if name else None
    text_cfg = (model_cfg or {}).get("text_cfg") or {}
    if not isinstance(text_cfg, Mapping) or text_cfg.get("hf_tokenizer_name"):
        return None
    if not name.startswith((LOCAL_DIR, HF_HUB)) and "siglip" in name.lower():
        return None  # open_clip picks SigLipTokenizer by name
    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    if not SUPPORTED_KWARGS.issuperset(kwargs) or kwargs.get("clean", "lower") not in CLEANERS:
        return None  # reduction masks (random) and anything else this port does not do
    length = context_length or text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH)
    return Tokenizer(context_length=int(length), clean=kwargs.get("clean", "lower"),
                     additional_special_tokens=tuple(kwargs.get("additional_special_tokens") or ()))
