"""Text normalisation that ingest (the OCR pass) and search (text in image, hybrid) share.

The stored OCR text and every phrase searched go through the same functions, so they always agree on
what a word is.
"""

from __future__ import annotations

import re

_JOINED = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")
_WORD = re.compile(r"\w+")


def split_joined(text: str) -> str:
    """A space between letters and digits that touch ("Total42.50" → "Total 42.50").

    The recogniser often drops the space there; applied to the stored text *and* to every phrase searched,
    so "A4" still finds "A4" (both become "A 4").
    """
    return _JOINED.sub(" ", text)


def words(text: str) -> list[str]:
    """The words (runs of letters, digits and underscores) of ``text``, in order."""
    return _WORD.findall(text)
