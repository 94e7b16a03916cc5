"""The one record schema of the toolkit.

A text document travels through every stage as a plain ``dict`` with the keys of
``TEXT_FIELDS``; it is written to Parquet with ``TEXT_SCHEMA``.  Dropped records,
dead letters and redaction counts have their own explicit Arrow schemas here, so
every writer and reader in the project agrees on one definition.

Nothing here imports Beam: operators in ``filters/`` work on these dicts directly.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

import pyarrow as pa

# ----------------------------------------------------------------------------- text
#: Field order of a text document.  ``scores`` maps ``"<operator>.<metric>"`` to a
#: float; thresholds are applied to scores elsewhere, so re-thresholding never needs
#: re-scoring (Dolma's lesson).
TEXT_FIELDS = (
    "id",            # stable: the input's own id when it has one, else content-derived
    "content_hash",  # hash of the normalised text (exact-dedup key)
    "text",
    "source",        # source name given with --input name=GLOB
    "url",
    "lang",          # ISO 639 code from language ID (None before that stage)
    "lang_score",
    "script",        # dominant Unicode script: Latin, Han, Cyrillic, ...
    "metadata",      # JSON object as a string: reader-specific fields (path, warc id, ...)
    "scores",        # map<string, double>
)

TEXT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("lang_score", pa.float64()),
        pa.field("script", pa.string()),
        pa.field("metadata", pa.string()),
        pa.field("scores", pa.map_(pa.string(), pa.float64())),
    ]
)

# -------------------------------------------------------------------------- dropped
#: One row per dropped record.  ``survivor_id``/``cluster_id`` are set by the dedup
#: stages; ``score`` is the value that crossed the threshold, when there is one.
DROPPED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("content_hash", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("survivor_id", pa.string()),
        pa.field("cluster_id", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("detail", pa.string()),  # JSON, free-form per stage
    ]
)
DROPPED_FIELDS = tuple(DROPPED_SCHEMA.names)

#: Sampled dropped documents (with text) per stage and reason, for the report.
DROPPED_SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("survivor_id", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("text", pa.large_string()),
    ]
)

# ---------------------------------------------------------------------- dead letter
#: Malformed input: what it was, where it came from, why it could not be read.
DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),   # locator-derived id
        pa.field("source", pa.string(), nullable=False),
        pa.field("origin", pa.string(), nullable=False),  # path[:line|@offset|#member]
        pa.field("stage", pa.string(), nullable=False),   # read | media | ...
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.large_binary()),            # raw bytes, truncated to a cap
        pa.field("raw_size", pa.int64()),              # size before truncation
    ]
)
DEAD_LETTER_FIELDS = tuple(DEAD_LETTER_SCHEMA.names)

#: Raw bytes kept in a dead letter at most (the size before truncation is recorded).
DEAD_LETTER_RAW_CAP = 64 * 1024


# --------------------------------------------------------------------------- helpers
def stable_hash(*parts: str | bytes, size: int = 16) -> str:
    """Hex blake2b over ``parts`` separated by NUL; stable across processes and runs."""
    h = hashlib.blake2b(digest_size=size)
    for i, p in enumerate(parts):
        if i:
            h.update(b"\0")
        h.update(p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p)
    return h.hexdigest()


def content_hash(text: str) -> str:
    """The exact-dedup key: a hash of the (already normalised) text."""
    return stable_hash(text)


def make_id(source: str, locator: str, raw: str | bytes) -> str:
    """Id for a record without its own: derived from where it came from and its content."""
    return stable_hash(source, locator, raw, size=12)


def new_text_record(
    text: str,
    source: str,
    *,
    id: str,
    url: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": id,
        "content_hash": content_hash(text),
        "text": text,
        "source": source,
        "url": url,
        "lang": None,
        "lang_score": None,
        "script": None,
        "metadata": json.dumps(metadata or {}, sort_keys=True, ensure_ascii=False),
        "scores": {},
    }


def validate_text_record(rec: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first field that breaks the schema."""
    missing = [f for f in TEXT_FIELDS if f not in rec]
    if missing:
        raise ValueError(f"record {rec.get('id')!r} lacks fields {missing}")
    for f in ("id", "content_hash", "text", "source"):
        if not isinstance(rec[f], str):
            raise ValueError(f"record {rec.get('id')!r}: field {f!r} must be str, got {type(rec[f]).__name__}")
    if not isinstance(rec["scores"], dict):
        raise ValueError(f"record {rec['id']!r}: scores must be a dict")


def dropped_row(
    rec: dict[str, Any],
    stage: str,
    reason: str,
    *,
    survivor_id: str | None = None,
    cluster_id: str | None = None,
    score: float | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": rec["id"],
        "content_hash": rec.get("content_hash"),
        "source": rec["source"],
        "url": rec.get("url"),
        "stage": stage,
        "reason": reason,
        "survivor_id": survivor_id,
        "cluster_id": cluster_id,
        "score": None if score is None else float(score),
        "detail": json.dumps(detail, sort_keys=True, ensure_ascii=False) if detail else None,
    }


def dead_letter_row(source: str, origin: str, reason: str, raw: bytes | str | None, stage: str = "read") -> dict[str, Any]:
    if raw is None:
        raw_b = b""
    elif isinstance(raw, str):
        raw_b = raw.encode("utf-8", "surrogateescape")
    else:
        raw_b = bytes(raw)
    return {
        "id": make_id(source, origin, raw_b[:DEAD_LETTER_RAW_CAP]),
        "source": source,
        "origin": origin,
        "stage": stage,
        "reason": reason,
        "raw": raw_b[:DEAD_LETTER_RAW_CAP],
        "raw_size": len(raw_b),
    }


def to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) to an Arrow table with exactly ``schema`` (map fields from dicts)."""
    rows = list(rows)
    cols = {}
    for field in schema:
        vals = [r.get(field.name) for r in rows]
        if pa.types.is_map(field.type):
            vals = [None if v is None else sorted(v.items()) for v in vals]
        cols[field.name] = pa.array(vals, type=field.type)
    return pa.table(cols, schema=schema)


def from_table(table: pa.Table) -> list[dict[str, Any]]:
    """Arrow table (e.g. a shard read back) to record dicts; map fields become dicts."""
    out = table.to_pylist()
    map_fields = [f.name for f in table.schema if pa.types.is_map(f.type)]
    for r in out:
        for f in map_fields:
            if r[f] is not None:
                r[f] = dict(r[f])
    return out
