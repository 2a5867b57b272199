"""The tokenizer's two lookup tables (token -> id, merge pair -> rank), built once and kept on disk.

Building them from open_clip's gzipped merges file costs 0.1-0.15 s of CPU (49k lines split into pairs, two
dicts of 49k entries): a tenth of a one-shot ``clipdex search``. ``marshal`` reads the built tables back in
about a quarter of that. The file lives under ``$CLIPDEX_CACHE/bpe/`` (default ``~/.cache/clipdex/bpe/``),
named by a key of the merges file (path, size, mtime), the special tokens and this interpreter's marshal
format, so another vocabulary, another tokenizer option or another Python never reads it. It is written
through a temporary file and ``os.replace``; one that does not read back as two dicts of the expected sizes is
built again and overwritten. ``CLIPDEX_BPE_CACHE=0`` turns it off. It holds plain data only (marshal loads no
code that runs).
"""

from __future__ import annotations

import gzip
import marshal
import os
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from retrieval.model.onnx_files import cache_root, write_atomic

TABLES_VERSION = 1
ENV = "CLIPDEX_BPE_CACHE"
MERGES = 49152 - 256 - 2
"""Merges open_clip reads from the file (its vocabulary is 49,408 ids with the two special tokens)."""

Tables = tuple[dict[str, int], dict[tuple[str, str], int]]


def read_merges(path: str | Path) -> tuple[tuple[str, str], ...]:
    """The merge pairs of open_clip's BPE file, in rank order."""
    with gzip.open(path) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    return tuple(tuple(line.split()) for line in lines[1 : MERGES + 1])  # type: ignore[misc]


def build(path: str | Path, byte_tokens: Sequence[str], special: Sequence[str]) -> Tables:
    """The tables as open_clip's ``SimpleTokenizer`` builds them."""
    merges = read_merges(path)
    vocab = list(byte_tokens)
    vocab += [token + "</w>" for token in byte_tokens]
    vocab += ["".join(merge) for merge in merges]
    vocab += list(special)
    return {token: i for i, token in enumerate(vocab)}, {merge: i for i, merge in enumerate(merges)}


def cache_file(path: str | Path, special: Sequence[str]) -> Path | None:
    """Where the tables of this merges file and these special tokens are kept; None if it cannot be read."""
    import xxhash

    try:
        stat = os.stat(path)
    except OSError:
        return None
    key = repr((TABLES_VERSION, os.path.abspath(path), stat.st_size, stat.st_mtime_ns, tuple(special),
                marshal.version, sys.version_info[:2]))
    return cache_root().parent / "bpe" / f"{xxhash.xxh3_64_hexdigest(key.encode())}.marshal"


def _sound(tables: object, byte_tokens: Sequence[str], special: Sequence[str]) -> bool:
    """Whether ``tables`` read back as the two dicts of a vocabulary with these byte and special tokens."""
    if not (isinstance(tables, tuple) and len(tables) == 2):
        return False
    encoder, ranks = tables
    return (isinstance(encoder, dict) and isinstance(ranks, dict) and len(ranks) <= MERGES
            and len(encoder) == 2 * len(byte_tokens) + len(ranks) + len(special))


def load(path: str | Path, byte_tokens: Sequence[str], special: Sequence[str]) -> Tables:
    """The tables of ``path``: from the cache where it holds them sound, else built (and cached)."""
    target = cache_file(path, special) if os.environ.get(ENV, "1") != "0" else None
    if target is None:
        return build(path, byte_tokens, special)
    try:
        tables = marshal.loads(target.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        tables = None
    if _sound(tables, byte_tokens, special):
        return tables  # type: ignore[return-value]
    tables = build(path, byte_tokens, special)
    with suppress(OSError):  # a cache that cannot be written is skipped
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, marshal.dumps(tables))
    return tables
