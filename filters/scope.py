"""Which documents a rule set applies to: source-name and input-format scopes.

The readers record the input format of every record in ``metadata.format``
(``warc`` | ``wet`` | ``jsonl`` | ``parquet`` | ``text`` | ``code``, see
``pipelines/readers.py``).  Rule sets designed for web pages (Gopher quality,
C4, FineWeb, the term lists) default to :data:`WEB_FORMATS`, so books, manuals
and other text trees read one document per file are not judged by web-page
heuristics (MassiveText applied Gopher's quality filter to MassiveWeb only; C4
and FineWeb are Common Crawl filters).  A record without a recorded format
(built outside the readers, e.g. in tests or by the media branch) is in every
format scope.
"""
from __future__ import annotations

import fnmatch
import json
import threading
from typing import Any

#: input formats of web-like data: crawls (WARC/WET) and the JSONL/Parquet dumps made from them
WEB_FORMATS = ["warc", "wet", "jsonl", "parquet"]
#: every format the readers record
ALL_FORMATS = ["warc", "wet", "jsonl", "parquet", "text", "code"]

_tls = threading.local()


def record_format(doc: dict[str, Any]) -> str | None:
    """The input format the reader recorded in ``metadata.format``, or None."""
    md = doc.get("metadata")
    if not md:
        return None
    if isinstance(md, dict):
        fmt = md.get("format")
        return fmt if isinstance(fmt, str) else None
    last = getattr(_tls, "md", None)
    if last is not None and last[0] is md:  # the same record, asked by the next rule set
        return last[1]
    fmt = None
    if '"format"' in md:
        try:
            obj = json.loads(md)
        except ValueError:
            obj = None
        fmt = obj.get("format") if isinstance(obj, dict) else None
    fmt = fmt if isinstance(fmt, str) else None
    _tls.md = (md, fmt)
    return fmt


def in_scope(doc: dict[str, Any], sources: list[str], formats: list[str]) -> bool:
    """True when the doc's source matches a glob of ``sources`` and its recorded
    input format one of ``formats`` (a doc without a recorded format always does)."""
    if sources != ["*"]:
        src = doc.get("source") or ""
        if not any(fnmatch.fnmatchcase(src, p) for p in sources):
            return False
    if formats == ["*"]:
        return True
    fmt = record_format(doc)
    return fmt is None or any(fnmatch.fnmatchcase(fmt, p) for p in formats)


def check_globs(values: list[str], what: str) -> list[str]:
    """Validator helper: a scope is a non-empty list of non-empty globs."""
    if not values:
        raise ValueError(f"{what}: give at least one glob ([\"*\"] for everything)")
    if any(not isinstance(v, str) or not v.strip() for v in values):
        raise ValueError(f"{what}: globs must be non-empty strings")
    return values
