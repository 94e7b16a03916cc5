"""Cheap per-document measurements used by the manifest and the report."""
from __future__ import annotations

import math
import re

# Scripts written without spaces between words: one token per character is a
# closer estimate there than bytes/4.
_NO_SPACE_CHARS = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff]"
)

#: Upper bin edges (characters) of the length histogram; powers of sqrt(10).
LENGTH_BINS = tuple(int(round(10 ** (i / 2))) for i in range(0, 17))  # 1 .. 1e8


def estimate_tokens(text: str) -> int:
    """Token estimate before a tokenizer exists: 1 per CJK/Thai/Khmer/Myanmar
    character plus UTF-8 bytes/4 for the rest.  The tokenizer step replaces this
    with exact counts (``tokenizer.pack`` writes them into its manifest)."""
    n_dense = len(_NO_SPACE_CHARS.findall(text))
    rest_bytes = len(text.encode("utf-8", "surrogatepass")) - 3 * n_dense
    return n_dense + math.ceil(max(rest_bytes, 0) / 4)


def length_bin(n_chars: int) -> int:
    """Index of the histogram bin of a document with ``n_chars`` characters."""
    for i, edge in enumerate(LENGTH_BINS):
        if n_chars <= edge:
            return i
    return len(LENGTH_BINS)
