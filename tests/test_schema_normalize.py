import pyarrow as pa
import pytest

from filters.base import run_transform
from filters.normalize import Normalizer, dedup_key, normalize_text
from filters.schema import (
    DEAD_LETTER_SCHEMA,
    DROPPED_SCHEMA,
    TEXT_SCHEMA,
    dead_letter_row,
    dropped_row,
    from_table,
    new_text_record,
    to_table,
    validate_text_record,
)


def test_record_roundtrip_through_arrow():
    rec = new_text_record("héllo wörld", "web", id="a1", url="http://x", metadata={"k": 1})
    rec["scores"] = {"q.a": 1.5}
    validate_text_record(rec)
    t = to_table([rec], TEXT_SCHEMA)
    assert t.schema == TEXT_SCHEMA
    back = from_table(t)[0]
    assert back == rec


def test_validate_rejects_bad_record():
    rec = new_text_record("x", "web", id="a")
    rec["text"] = 3
    with pytest.raises(ValueError, match="text"):
        validate_text_record(rec)
    with pytest.raises(ValueError, match="lacks"):
        validate_text_record({"id": "x"})


def test_dropped_and_dead_rows_fit_schemas():
    rec = new_text_record("x", "web", id="a")
    t = to_table([dropped_row(rec, "quality", "too_short", score=3)], DROPPED_SCHEMA)
    assert t.num_rows == 1 and t.column("reason")[0].as_py() == "too_short"
    big = b"\xff" * (200 * 1024)
    row = dead_letter_row("web", "f.jsonl:3", "invalid_utf8", big)
    assert row["raw_size"] == len(big) and len(row["raw"]) == 64 * 1024
    assert to_table([row], DEAD_LETTER_SCHEMA).num_rows == 1


@pytest.mark.parametrize(
    "raw,want",
    [
        ("a\r\nb\rc", "a\nb\nc"),
        ("e\u0301", "\u00e9"),                     # NFC
        ("x\x00y\x07z\ufeff", "xyz"),               # control chars, BOM
        ("line   \nnext\t\n", "line\nnext"),        # trailing whitespace
        ("a\n\n\n\n\nb", "a\n\n\nb"),               # at most 2 blank lines
        ("    indented code\n", "    indented code"),
        ("مرحبا بالعالم", "مرحبا بالعالم"),          # RTL untouched
    ],
)
def test_normalize_text(raw, want):
    assert normalize_text(raw) == want


def test_dedup_key_ignores_spacing_and_line_ends():
    a = "Hello  world\r\nsecond line"
    b = "Hello world\nsecond   line  "
    assert dedup_key(normalize_text(a)) == dedup_key(normalize_text(b))


def test_normalizer_drops_empty_and_sets_hash():
    op = Normalizer()
    res = run_transform(op, new_text_record(" \n\t\x00 ", "s", id="e"))
    assert res.doc is None and res.reason == "empty_after_normalize"
    a = run_transform(op, new_text_record("Hi  there\r\n", "s", id="1")).doc
    b = run_transform(op, new_text_record("Hi there", "s", id="2")).doc
    assert a["content_hash"] == b["content_hash"]
    assert a["text"] == "Hi  there"  # inner spacing kept in the stored text
