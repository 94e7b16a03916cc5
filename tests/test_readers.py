"""Readers: every format, and every kind of garbage, without Beam."""
import gzip
import io
import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import ReadConfig, SourceConfig
from pipelines.readers import detect_reader, read_file

READ = ReadConfig()


def events(path, reader, read_cfg=READ, **src):
    src_cfg = SourceConfig(name="s", input=[str(path)], **src)
    return list(read_file(str(path), reader, "s", src_cfg, read_cfg, os.path.basename(str(path))))


def kinds(evs):
    return [k for k, _ in evs]


def reasons(evs):
    return [p["reason"] for k, p in evs if k == "dead"]


def test_detect_reader_by_extension():
    ce, te = READ.code_extensions, READ.text_extensions
    assert detect_reader("a/b.jsonl.gz", ce, te) == "jsonl"
    assert detect_reader("a/b.jsonl.zst", ce, te) == "jsonl"
    assert detect_reader("b.parquet", ce, te) == "parquet"
    assert detect_reader("CC-MAIN-1.warc.gz", ce, te) == "warc"
    assert detect_reader("x.wet.gz", ce, te) == "warc"
    assert detect_reader("book.txt", ce, te) == "text"
    assert detect_reader("m.py", ce, te) == "code"
    assert detect_reader("photo.xyz", ce, te) is None


def test_jsonl_plain_gz_zst_keep_ids(tmp_path):
    import zstandard

    lines = [json.dumps({"id": f"doc{i}", "text": f"text number {i}", "url": "http://u", "extra": [1]}) for i in range(3)]
    data = ("\n".join(lines) + "\n").encode()
    (tmp_path / "a.jsonl").write_bytes(data)
    (tmp_path / "a2.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "a3.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    for name in ("a.jsonl", "a2.jsonl.gz", "a3.jsonl.zst"):
        evs = events(tmp_path / name, "jsonl")
        assert kinds(evs) == ["doc"] * 3
        docs = [p for _, p in evs]
        assert [d["id"] for d in docs] == ["doc0", "doc1", "doc2"]
        assert docs[0]["url"] == "http://u"
        md = json.loads(docs[0]["metadata"])
        assert md["extra"] == [1] and md["pos"] == 1


def test_jsonl_without_id_gets_stable_content_id(tmp_path):
    p = tmp_path / "n.jsonl"
    p.write_text('{"text": "same"}\n{"text": "same"}\n')
    a = [d["id"] for _, d in events(p, "jsonl")]
    b = [d["id"] for _, d in events(p, "jsonl")]
    assert a == b and a[0] != a[1]  # stable across runs, distinct per location


def test_jsonl_garbage_goes_to_dead_letters(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(
        b'{"id": "ok", "text": "fine"}\n'
        b'{"id": "num", "text": 42}\n'
        b"not json at all\n"
        b"[1, 2, 3]\n"
        b'{"id": "notext"}\n'
        b'{"id": "utf", "text": "\xff\xfe bad"}\n'
        b"\n"
        b'{"id": "ok2", "text": "fine too"}\n'
    )
    evs = events(p, "jsonl")
    assert [d["id"] for k, d in evs if k == "doc"] == ["ok", "ok2"]
    rs = reasons(evs)
    assert any(r.startswith("text_not_a_string") for r in rs)
    assert any(r.startswith("invalid_json") for r in rs)
    assert any(r.startswith("not_a_json_object") for r in rs)
    assert any(r.startswith("missing_field") for r in rs)
    assert any(r.startswith("invalid_utf8") for r in rs)
    assert len(rs) == 5
    dead = [d for k, d in evs if k == "dead"]
    assert all(d["raw"] for d in dead) and all(":" in d["origin"] for d in dead)


def test_invalid_utf8_replace_policy(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_bytes(b'{"text": "caf\xe9"}\n')
    evs = events(p, "jsonl", ReadConfig(invalid_utf8="replace"))
    assert kinds(evs) == ["doc"] and "\ufffd" in evs[0][1]["text"] or "caf" in evs[0][1]["text"]


def test_truncated_gzip_keeps_what_was_read(tmp_path):
    lines = "".join(json.dumps({"id": i, "text": "word " * 50}) + "\n" for i in range(400)).encode()
    comp = gzip.compress(lines)
    p = tmp_path / "t.jsonl.gz"
    p.write_bytes(comp[: len(comp) // 2])
    evs = events(p, "jsonl")
    docs = [d for k, d in evs if k == "doc"]
    assert 0 < len(docs) < 400
    assert reasons(evs)[-1].startswith("truncated_or_corrupt_stream")


def test_random_bytes_and_empty_file(tmp_path):
    rnd = random.Random(0)
    p = tmp_path / "rnd.jsonl.gz"
    p.write_bytes(bytes(rnd.getrandbits(8) for _ in range(5000)))
    evs = events(p, "jsonl")
    assert kinds(evs) == ["dead"] and reasons(evs)[0].startswith("truncated_or_corrupt_stream")
    p2 = tmp_path / "rnd.jsonl"
    p2.write_bytes(bytes(rnd.getrandbits(8) for _ in range(5000)))
    evs2 = events(p2, "jsonl")
    assert evs2 and all(k == "dead" for k in kinds(evs2))
    e = tmp_path / "empty.jsonl"
    e.write_bytes(b"")
    assert reasons(events(e, "jsonl")) == ["empty_file"]


def test_over_long_line_is_dead_lettered_and_reading_continues(tmp_path):
    cfg = ReadConfig(max_record_bytes=1000)
    p = tmp_path / "long.jsonl"
    p.write_bytes(b'{"text": "' + b"x" * 5000 + b'"}\n{"id": "after", "text": "ok"}\n')
    evs = events(p, "jsonl", cfg)
    assert reasons(evs)[0].startswith("record_too_large")
    dead = [d for k, d in evs if k == "dead"][0]
    assert dead["raw_size"] == 1001 or dead["raw_size"] >= 1000
    assert [d["id"] for k, d in evs if k == "doc"] == ["after"]


def test_parquet_reader_and_corrupt_parquet(tmp_path):
    t = pa.table({"id": ["a", "b"], "text": ["hello", None], "url": ["u1", None]})
    pq.write_table(t, tmp_path / "x.parquet")
    evs = events(tmp_path / "x.parquet", "parquet")
    assert [d["id"] for k, d in evs if k == "doc"] == ["a"]
    assert any(r.startswith("missing_field") for r in reasons(evs))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1garbagegarbage")
    assert reasons(events(tmp_path / "bad.parquet", "parquet"))[0].startswith("invalid_parquet")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "nocol.parquet")
    assert reasons(events(tmp_path / "nocol.parquet", "parquet")) == ["missing_column: text"]


def _warc(uri, body, ctype="text/html; charset=utf-8", rtype="response"):
    http = f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n\r\n".encode() + body
    head = (f"WARC/1.0\r\nWARC-Type: {rtype}\r\nWARC-Record-ID: <urn:uuid:{abs(hash(uri)) % 10**12}>\r\n"
            f"WARC-Target-URI: {uri}\r\nContent-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {len(http)}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


HTML = b"<html><head><title>T</title></head><body><nav>Home | About</nav><article><p>" + (
    b"The quick brown fox jumps over the lazy dog. " * 20) + b"</p></article></body></html>"


def test_warc_html_extraction_and_non_html(tmp_path):
    data = _warc("http://a/", HTML) + _warc("http://img/", b"\x89PNG....", ctype="image/png")
    p = tmp_path / "x.warc.gz"
    p.write_bytes(gzip.compress(data))
    evs = events(p, "warc")
    docs = [d for k, d in evs if k == "doc"]
    assert len(docs) == 1 and docs[0]["url"] == "http://a/"
    assert "quick brown fox" in docs[0]["text"]
    drops = [d for k, d in evs if k == "drop"]
    assert len(drops) == 1 and drops[0]["reason"] == "not_html" and drops[0]["stage"] == "read"


@pytest.mark.parametrize("bad,reason", [
    # not a WARC header at all: the reader resyncs at the next "WARC/" line
    (b"GARBAGE HEADER LINE\r\nfoo: bar\r\n\r\nxxxxx\r\n\r\n", "warc_invalid_header"),
    # a WARC header with a broken line: the record parses, its HTTP payload does not
    (b"WARC/1.0\r\nWARC-Type: response\r\nthis is not a header line\r\nContent-Length: 5\r\n\r\nxxxxx\r\n\r\n",
     "http_parse_error"),
])
def test_warc_broken_header_is_dead_lettered_and_reading_resumes(tmp_path, bad, reason):
    data = _warc("http://a/", HTML) + bad + _warc("http://b/", HTML.replace(b"fox", b"cat"))
    for name, blob in (("b.warc", data), ("b.warc.gz", gzip.compress(data))):
        p = tmp_path / name
        p.write_bytes(blob)
        evs = events(p, "warc")
        assert [d["url"] for k, d in evs if k == "doc"] == ["http://a/", "http://b/"]
        rs = reasons(evs)
        assert len(rs) == 1 and rs[0].startswith(reason), rs
        dead = [d for k, d in evs if k == "dead"][0]
        assert dead["raw"] and dead["origin"].startswith(name)


def test_warc_truncated_gzip_and_non_warc(tmp_path):
    comp = b"".join(gzip.compress(_warc(f"http://{i}/", HTML)) for i in range(5))
    p = tmp_path / "t.warc.gz"
    p.write_bytes(comp[: int(len(comp) * 0.7)])
    evs = events(p, "warc")
    assert 1 <= len([1 for k, _ in evs if k == "doc"]) < 5
    assert any("truncated" in r or "corrupt" in r for r in reasons(evs))
    q = tmp_path / "junk.warc"
    q.write_bytes(b"hello this is not a warc file\n" * 10)
    assert reasons(events(q, "warc")) != []


def test_text_and_code_trees(tmp_path):
    (tmp_path / "book.txt").write_text("Chapter 1\n\nIt was a dark night.")
    (tmp_path / "m.py").write_text("def f():\n    return 1\n")
    (tmp_path / "bin.py").write_bytes(b"\x00\x01\x02 binary")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    [(k, d)] = events(tmp_path / "book.txt", "text")
    assert k == "doc" and d["text"].startswith("Chapter 1") and d["lang"] is None
    [(k, d)] = events(tmp_path / "m.py", "code")
    assert d["lang"] == "code:python" and "return 1" in d["text"]
    assert reasons(events(tmp_path / "bin.py", "code"))[0].startswith("binary_content")
    assert reasons(events(tmp_path / "bad.txt", "text"))[0].startswith("invalid_utf8")
    assert reasons(events(tmp_path / "book.txt", "nonsense"))[0].startswith("no_reader_for_file")
