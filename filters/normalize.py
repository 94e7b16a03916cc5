"""Text normalisation and the exact-dedup key.

``Normalizer`` is a ``DocTransform``: Unicode NFC, control characters removed,
line ends unified, trailing whitespace and runs of blank lines trimmed.  It keeps
indentation (code stays code).  ``dedup_key`` is a stronger, lossy form used only
for hashing: all whitespace runs collapsed, so copies that differ only in spacing
or CRLF line ends hash the same.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict

from filters.base import TransformResult
from filters.schema import content_hash

# C0/C1 controls except TAB and LF, plus BOM / noncharacters seen in scraped text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\ufffe\uffff]")
_TRAILING_WS = re.compile(r"[ \t\u00a0\u3000]+(?=\n|$)")
_ANY_WS = re.compile(r"\s+")


class NormalizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    form: str = "NFC"            # NFC | NFKC | none
    max_blank_lines: int = 2


def normalize_text(text: str, form: str = "NFC", max_blank_lines: int = 2) -> str:
    if form and form.lower() != "none":
        text = unicodedata.normalize(form, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_WS.sub("", text)
    if max_blank_lines >= 0:
        text = re.sub(r"\n{%d,}" % (max_blank_lines + 2), "\n" * (max_blank_lines + 1), text)
    return text.strip("\n").rstrip()


def dedup_key(text: str) -> str:
    """Whitespace-insensitive form of normalised text, for exact-dedup hashing."""
    return _ANY_WS.sub(" ", text).strip()


class Normalizer:
    name = "normalize"
    stage = "normalize"

    def __init__(self, config: NormalizeConfig | None = None):
        self.config = config or NormalizeConfig()

    def apply(self, doc: dict[str, Any]) -> TransformResult:
        text = doc["text"]
        new = normalize_text(text, self.config.form, self.config.max_blank_lines) if self.config.enabled else text
        out = {**doc, "text": new, "content_hash": content_hash(dedup_key(new))}
        if not new.strip():
            return TransformResult(doc=None, reason="empty_after_normalize")
        return TransformResult(doc=out, modified=new != text)
