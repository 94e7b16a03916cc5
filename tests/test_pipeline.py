"""The real Beam corpus job, end to end, on small inputs."""
import gzip
import hashlib
import json
import os
import random
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipelines import build_corpus
from tests.conftest import CONTENT_FILTERS_OFF

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DETERMINISTIC = ("text", "dropped", "dead_letter", "samples", "manifest.json", "ledger.json", "stats.json")


# These tests exercise the job's mechanics (reading, accounting, exact dedup, shards,
# determinism); the content filters have their own tests, so they are off here.
ONLY_MECHANICS = CONTENT_FILTERS_OFF


def build(out, inputs, *extra):
    argv = [a for i in inputs for a in ("--input", i)] + ["--output", str(out), "--no-report", *ONLY_MECHANICS, *extra]
    return build_corpus.run(argv)


def digest_tree(out):
    h = {}
    for entry in DETERMINISTIC:
        p = os.path.join(out, entry)
        if os.path.isdir(p):
            for name in sorted(os.listdir(p)):
                h[f"{entry}/{name}"] = hashlib.sha256(open(os.path.join(p, name), "rb").read()).hexdigest()
        elif os.path.exists(p):
            h[entry] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return h


def _html(i):
    return (f"<html><body><article><h1>Page {i}</h1><p>"
            + " ".join(f"Sentence {j} of page {i} talks about topic {j % 7}." for j in range(30))
            + "</p></article></body></html>").encode()


def _warc(uri, body, ctype="text/html; charset=utf-8"):
    http = f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n\r\n".encode() + body
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{hashlib.md5(uri.encode()).hexdigest()}>\r\n"
            f"WARC-Target-URI: {uri}\r\nContent-Length: {len(http)}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "jsonl").mkdir()
    docs = [{"id": f"d{i}", "text": f"Document {i}. " + "Some words here. " * (5 + i % 9), "url": f"http://x/{i}"}
            for i in range(60)]
    docs += [{"id": "copy1", "text": docs[3]["text"]}, {"id": "copy2", "text": docs[3]["text"].replace(". ", ".  ")}]
    with gzip.open(d / "jsonl" / "a.jsonl.gz", "wt") as f:
        for x in docs[:30]:
            f.write(json.dumps(x) + "\n")
    with open(d / "jsonl" / "b.jsonl", "w") as f:
        for x in docs[30:]:
            f.write(json.dumps(x) + "\n")
    (d / "web").mkdir()
    (d / "web" / "crawl.warc.gz").write_bytes(b"".join(gzip.compress(_warc(f"http://w/{i}", _html(i))) for i in range(12)))
    (d / "code").mkdir()
    (d / "code" / "m.py").write_text("def add(a, b):\n    return a + b\n")
    (d / "code" / "n.c").write_text("int main(void) { return 0; }\n")
    return d


def test_outputs_ledger_and_exact_dedup(small_inputs, tmp_path):
    out = tmp_path / "o"
    summary = build(out, [f"docs={small_inputs}/jsonl", f"web={small_inputs}/web", f"code={small_inputs}/code"])
    ledger = json.load(open(out / "ledger.json"))
    assert ledger["balanced"]
    s = ledger["sources"]
    assert s["docs"]["input"] == 62 and s["docs"]["dropped"]["exact_dedup"]["duplicate"] == 2
    assert s["web"]["input"] == 12 and s["web"]["kept"] == 12
    assert s["code"]["kept"] == 2
    kept = pq.read_table(out / "text").to_pylist()
    assert len(kept) == summary["totals"]["kept"] == 60 + 12 + 2
    ids = {r["id"] for r in kept}
    assert "d3" in ids and "copy1" not in ids and "copy2" not in ids  # first seen survives
    dropped = pq.read_table(out / "dropped").to_pylist()
    assert {(r["id"], r["survivor_id"]) for r in dropped} == {("copy1", "d3"), ("copy2", "d3")}
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["sources"]["docs"]["documents"] == 60
    assert manifest["sources"]["code"]["languages"]["code:python"]["documents"] == 1
    assert all(sh["rows"] > 0 for src in manifest["sources"].values() for sh in src["shards"])
    assert manifest["config_hash"] and manifest["manifest_hash"]
    # every input is either kept or dropped, exactly once
    assert len(ids) + len(dropped) == ledger["totals"]["input"]


def test_shard_target_size_splits_and_is_respected(small_inputs, tmp_path):
    out = tmp_path / "o"
    build(out, [f"docs={small_inputs}/jsonl"], "--set", "output.shard_target_bytes=2000")
    files = sorted(os.listdir(out / "text"))
    assert len(files) > 3 and all(f.startswith("docs-") and f.endswith(f"-of-{len(files):05d}.parquet") for f in files)
    assert sum(pq.read_metadata(out / "text" / f).num_rows for f in files) == 60


@pytest.mark.slow
def test_byte_identical_across_runs_and_worker_counts(small_inputs, tmp_path):
    inputs = [f"docs={small_inputs}/jsonl", f"web={small_inputs}/web", f"code={small_inputs}/code"]
    build(tmp_path / "a", inputs)
    build(tmp_path / "b", inputs)
    build(tmp_path / "c", inputs, "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    a, b, c = (digest_tree(tmp_path / x) for x in "abc")
    assert a and a == b == c


@pytest.mark.slow
def test_portable_runner_gives_same_output(small_inputs, tmp_path):
    """The portability layer is the path Dataflow, Flink and Spark take."""
    inputs = [f"docs={small_inputs}/jsonl", f"web={small_inputs}/web"]
    build(tmp_path / "direct", inputs)
    build(tmp_path / "portable", inputs, "--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK")
    assert digest_tree(tmp_path / "direct") == digest_tree(tmp_path / "portable")


def test_garbage_is_dead_lettered_and_the_job_finishes(tmp_path):
    g = tmp_path / "garbage"
    g.mkdir()
    rnd = random.Random(1)
    (g / "random.jsonl").write_bytes(bytes(rnd.getrandbits(8) for _ in range(20_000)))
    lines = "".join(json.dumps({"id": f"t{i}", "text": f"ok text {i} " * 20}) + "\n" for i in range(300)).encode()
    gz = gzip.compress(lines)
    (g / "truncated.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    (g / "number.jsonl").write_text('{"id": "n1", "text": 12345}\n{"id": "fine", "text": "a fine document"}\n')
    (g / "huge.jsonl").write_bytes(b'{"id": "big", "text": "' + b"a" * (50 * 1024 * 1024) + b'"}\n')
    (g / "badutf8.jsonl").write_bytes(b'{"id": "u", "text": "bad \xc3\x28 bytes"}\n')
    (g / "empty.jsonl").write_bytes(b"")
    good = _warc("http://ok/", _html(1))
    (g / "broken.warc").write_bytes(good + b"NOT-A-WARC-HEADER\r\nx: y\r\n\r\njunk\r\n\r\n" + _warc("http://ok2/", _html(2)))
    out = tmp_path / "o"
    build(out, [f"junk={g}"], "--set", "read.max_record_bytes=8388608")
    ledger = json.load(open(out / "ledger.json"))
    assert ledger["balanced"]
    dead = pq.read_table(out / "dead_letter").to_pylist()
    by_file = {}
    for d in dead:
        by_file.setdefault(d["origin"].split(":")[0].split("@")[0], []).append(d["reason"])
    assert any(r.startswith("truncated_or_corrupt_stream") for r in by_file["truncated.jsonl.gz"])
    assert by_file["number.jsonl"] == ["text_not_a_string (int)"]
    assert by_file["huge.jsonl"][0].startswith("record_too_large")
    assert by_file["badutf8.jsonl"][0].startswith("invalid_utf8")
    assert by_file["empty.jsonl"] == ["empty_file"]
    assert by_file["broken.warc"][0].startswith("warc_invalid_header")
    assert len(by_file["random.jsonl"]) >= 1
    kept = {r["id"] for r in pq.read_table(out / "text").to_pylist()}
    assert "fine" in kept and {"t0", "t1"} <= kept
    urls = {r["url"] for r in pq.read_table(out / "text").to_pylist()}
    assert {"http://ok/", "http://ok2/"} <= urls
    d = ledger["sources"]["junk"]
    assert d["input"] == d["kept"] + d["dropped_total"]
    assert sum(d["dropped"]["read"].values()) == len(dead)


@pytest.mark.devcorpus
def test_dev_corpus_exact_dedup_removes_exactly_the_planted_copies(dev_corpus, tmp_path):
    out = tmp_path / "o"
    build(out, [f"dev={dev_corpus}/text/corpus.jsonl"], "--set=stages.near_dup=false", "--set=stages.boilerplate=false")
    labels = [json.loads(x) for x in open(dev_corpus / "text" / "labels.jsonl")]
    planted = [lab for lab in labels if lab["type"] in ("exact_dup", "normalized_dup")]
    # clusters of planted copies: each original with all of its copies
    clusters = {}
    for lab in planted:
        clusters.setdefault(lab["of"], {lab["of"]}).add(lab["doc_id"])
    member = {m: root for root, ms in clusters.items() for m in ms}
    dropped = [r for r in pq.read_table(out / "dropped").to_pylist() if r["stage"] == "exact_dedup"]
    assert len(dropped) == len(planted)  # one copy of each cluster survives
    for r in dropped:
        assert r["id"] in member, f"{r['id']} removed but not planted"
        assert member[r["survivor_id"]] == member[r["id"]]
    kept = {r["id"] for r in pq.read_table(out / "text", columns=["id"]).to_pylist()}
    for root, ms in clusters.items():
        assert len(ms & kept) == 1


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "pipelines", "build_corpus.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_one_line_errors(tmp_path):
    r = _cli("--input", "x=/no/such/dir/*.jsonl", "--output", str(tmp_path / "o"))
    assert r.returncode == 2 and "no files match" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    good = tmp_path / "in.jsonl"
    good.write_text('{"text": "hello"}\n')
    r = _cli("--input", str(good), "--output", str(tmp_path / "o"), "--runnr=DirectRunner")
    assert r.returncode == 2 and "unknown flag" in r.stderr and "--runnr" in r.stderr
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("output:\n  shard_target_bytes: -5\n")
    r = _cli("--input", str(good), "--output", str(tmp_path / "o"), "--config", str(cfg))
    assert r.returncode == 2 and "output.shard_target_bytes" in r.stderr
    cfg.write_text("exact_dedupp: {}\n")
    r = _cli("--input", str(good), "--output", str(tmp_path / "o"), "--config", str(cfg))
    assert r.returncode == 2 and "exact_dedupp: unknown key" in r.stderr
    r = _cli("--input", str(good), "--output", str(tmp_path / "o"), "--set", "exact_dedup.survivor=[longest]")
    assert r.returncode == 2 and "smallest_id" in r.stderr
    r = _cli("--input", "bad name=" + str(good), "--output", str(tmp_path / "o"))
    assert r.returncode == 2 and "source name" in r.stderr
