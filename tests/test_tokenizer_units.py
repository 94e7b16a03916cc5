"""Fast unit tests of the tokenizer package: config, sampling plan, units,
record format and reader.  No Beam pipeline, no SentencePiece training."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from tokenizer import config as tcfg
from tokenizer.corpus import (
    count_words,
    cut_long,
    dominant_script,
    language_key,
    split_units,
    unit_script,
    unit_uniform,
)
from tokenizer.format import (
    TOKEN_MANIFEST,
    FingerprintMismatch,
    FormatError,
    PackedSource,
    Segment,
    check_compatible,
    decode_record,
    encode_record,
    load_token_manifest,
    manifest_fingerprint,
    record_segments,
    token_width,
)
from tokenizer.sample import copies, group_weights, holdout_count, plan_sample, water_fill


# ----------------------------------------------------------------- config
def test_default_config_loads_and_is_lossless():
    cfg = tcfg.load_config()
    assert cfg.train.lossless
    assert cfg.train.byte_fallback and cfg.train.split_digits
    assert "<boi>" in cfg.train.control_symbols and "\n" in cfg.train.user_defined_symbols
    assert cfg.section_hash("sample", "train") == tcfg.load_config().section_hash("sample", "train")
    assert cfg.section_hash("pack") != tcfg.load_config(overrides=["pack.seq_len=64"]).section_hash("pack")


@pytest.mark.parametrize("override, fragment", [
    ("train.model_type=wordpiece", "train.model_type"),
    ("train.vocab_sise=100", "train.vocab_sise: unknown key"),
    ("sample.script_temperature=0.5", "sample.script_temperature"),
    ("train.character_coverage=0.9", "train.character_coverage"),
    ("train.control_symbols=[a,a]", "unique"),
    ("train.user_defined_symbols=['x,y']", "cannot contain ','"),
    ("train.control_symbols=['<pad>']", "both a special piece and a symbol"),
    ("train.extra_options={vocab_size: 5}", "set by their own keys"),
])
def test_bad_config_is_one_line_error(override, fragment):
    with pytest.raises(tcfg.ConfigError) as e:
        tcfg.load_config(overrides=[override])
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg and msg.startswith(tcfg.DEFAULT_CONFIG)


def test_config_file_errors(tmp_path):
    with pytest.raises(tcfg.ConfigError, match="config file not found"):
        tcfg.load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(tcfg.ConfigError, match="not valid YAML"):
        tcfg.load_config(str(bad))
    with pytest.raises(tcfg.ConfigError, match="expected key.path=value"):
        tcfg.load_config(overrides=["train.vocab_size"])


def test_lossless_flag_follows_choices():
    assert not tcfg.load_config(overrides=["train.normalization_rule_name=nmt_nfkc"]).train.lossless
    assert not tcfg.load_config(overrides=["train.byte_fallback=false"]).train.lossless
    assert not tcfg.load_config(overrides=["train.add_dummy_prefix=true"]).train.lossless


# ----------------------------------------------------------------- plan
CHARS = {("web", "en", "Latin"): 9_000_000, ("web", "de", "Latin"): 500_000, ("wiki", "en", "Latin"): 1_000_000,
         ("wiki", "zh", "Han"): 300_000, ("wiki", "hi", "Devanagari"): 20_000, ("wiki", "ja", "Kana"): 180_000}


def test_weights_temperature_one_is_proportional():
    w = group_weights(CHARS, 1.0, 1.0, 1.0)
    total = sum(CHARS.values())
    for g, c in CHARS.items():
        assert w[g] == pytest.approx(c / total)


def test_weights_are_hierarchical():
    w = group_weights(CHARS, 2.0, 1.0, 1.0)
    assert sum(w.values()) == pytest.approx(1.0)
    by_script = {}
    for (s, lang, script), c in CHARS.items():
        by_script[script] = by_script.get(script, 0) + c
    z = sum(c ** 0.5 for c in by_script.values())
    for script, c in by_script.items():
        got = sum(v for g, v in w.items() if g[2] == script)
        assert got == pytest.approx(c ** 0.5 / z)
    # inside Latin, proportional (language and source temperature 1)
    assert w[("web", "en", "Latin")] / w[("web", "de", "Latin")] == pytest.approx(18.0)
    # a huge temperature makes scripts uniform
    wu = group_weights(CHARS, 1000.0, 1.0, 1.0)
    assert sum(v for g, v in wu.items() if g[2] == "Devanagari") == pytest.approx(0.25, rel=0.02)


def test_water_fill_caps_and_keeps_ratios():
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    caps = {"a": 1000.0, "b": 1000.0, "c": 10.0}
    t = water_fill(weights, caps, 500.0)
    assert sum(t.values()) == pytest.approx(500.0)
    assert t["c"] == pytest.approx(10.0)                 # capped
    assert t["a"] / t["b"] == pytest.approx(0.5 / 0.3)   # the rest keeps its ratio
    everything = water_fill(weights, caps, 1e9)         # budget above every cap
    assert everything == caps
    assert water_fill({"a": 0.0}, {"a": 5.0}, 3.0) == {"a": 0.0}


def test_plan_budget_and_variants():
    stats = [(g, (c // 50, c)) for g, c in sorted(CHARS.items())]
    cfg = tcfg.SampleConfig(max_chars=2_000_000, script_temperature=2.0, max_repeat=4.0)
    plan = plan_sample(stats, cfg)
    assert plan["budget_chars"] == 2_000_000 and plan["corpus_chars"] == sum(CHARS.values())
    prop = plan["variants"]["proportional"]["groups"]
    bal = plan["variants"]["balanced"]["groups"]
    rates = {round(g["rate"], 9) for g in prop.values()}
    assert len(rates) == 1 and rates.pop() == pytest.approx(2_000_000 / sum(CHARS.values()))
    for v in (prop, bal):
        assert sum(g["target_chars"] for g in v.values()) == pytest.approx(2_000_000)
    hi, en = "wiki\thi\tDevanagari", "web\ten\tLatin"
    assert 1.0 < bal[hi]["rate"] <= 4.0                    # a small script is repeated, at most max_repeat
    assert bal[en]["rate"] < prop[en]["rate"]              # the dominant one is cut
    tiny = plan_sample(stats, cfg.model_copy(update={"script_temperature": 50.0}))["variants"]["balanced"]["groups"]
    assert tiny[hi]["rate"] == pytest.approx(4.0)          # near-uniform scripts: capped at max_repeat
    # budget larger than the corpus: the sample is the corpus size
    assert plan_sample(stats, tcfg.SampleConfig(max_chars=10**12))["budget_chars"] == sum(CHARS.values())


def test_copies_expectation_and_determinism():
    us = [unit_uniform(0, "doc", i) for i in range(20000)]
    assert us == [unit_uniform(0, "doc", i) for i in range(20000)]
    assert us != [unit_uniform(1, "doc", i) for i in range(20000)]
    for rate in (0.1, 0.5, 1.0, 2.3):
        mean = sum(copies(rate, u) for u in us) / len(us)
        assert mean == pytest.approx(rate, abs=0.02)
    assert all(copies(2.0, u) == 2 for u in us[:100])


def test_holdout_count():
    cfg = tcfg.HoldoutConfig(docs_per_language=20, max_fraction=0.2)
    assert holdout_count(4, cfg) == 0
    assert holdout_count(5, cfg) == 1
    assert holdout_count(1000, cfg) == 20


# ----------------------------------------------------------------- units and scripts
def test_split_units_lines_and_sentences():
    text = "First line.\r\n\n   \nSecond one! Third? 第一句。第二句。\n" + "x" * 10
    assert list(split_units(text, "line", 4096, 1)) == [
        "First line.", "Second one! Third? 第一句。第二句。", "x" * 10]
    assert list(split_units(text, "sentence", 4096, 1)) == [
        "First line.", "Second one!", "Third?", "第一句。", "第二句。", "x" * 10]
    assert list(split_units("ab\n}\n", "line", 4096, 2)) == ["ab"]


@pytest.mark.parametrize("text", ["word " * 500, "漢字" * 900, "a" * 3000, "é" * 700 + " " + "ж" * 900])
def test_cut_long_is_lossless_and_bounded(text):
    pieces = list(cut_long(text, 256))
    assert "".join(pieces) == text
    assert all(0 < len(p.encode("utf-8")) <= 256 for p in pieces)


def test_language_key():
    md = json.dumps({"lang_hint": "zh-CN"})
    assert language_key({"lang": "ja", "metadata": md}, ["lang_hint"], True) == "ja"
    assert language_key({"lang": None, "metadata": md}, ["lang_hint"], True) == "zh"
    assert language_key({"lang": None, "metadata": md}, ["lang_hint"], False) == "zh-CN"
    assert language_key({"lang": "code:python", "metadata": "{}"}, [], True) == "code:python"
    assert language_key({"lang": None, "metadata": "not json"}, ["lang_hint"], True) == "und"


def test_scripts_and_words():
    assert dominant_script("Hello world") == "Latin"
    assert dominant_script("Привет, мир") == "Cyrillic"
    assert dominant_script("人人生而自由，在尊严和权利上一律平等。") == "Han"
    assert dominant_script("すべての人間は、生まれながらにして自由であり") == "Kana"
    assert dominant_script("모든 인간은 태어날 때부터 자유로우며") == "Hangul"
    assert dominant_script("सभी मनुष्यों को गौरव") == "Devanagari"
    assert dominant_script("12345 !!") == "Zyyy"
    assert unit_script("    return x  # ok") == "Latin" and unit_script("}") == "Zyyy"
    assert count_words("Hello, world -- 42") == 3
    assert count_words("人人生而自由") == 6
    assert count_words("सभी मनुष्यों को") == 3


# ----------------------------------------------------------------- record format
def _record(width=4):
    segs = [Segment(0, 3, 5, 8, "doc-a"), Segment(3, 4, 0, 4, "doc-β"), Segment(7, 2, 0, 9, "c")]
    toks = np.array([10, 11, 1, 20, 21, 22, 1, 30, 31, 0, 0], dtype=np.uint32)
    return toks, segs, encode_record(toks, segs, num_pad=2, width=width)


@pytest.mark.parametrize("width", [2, 4])
def test_record_roundtrip(width):
    toks, segs, data = _record(width)
    d = decode_record(data)
    assert d["tokens"].dtype == np.int32 and d["tokens"].tolist() == toks.tolist()
    assert d["segment_ids"].tolist() == [1, 1, 1, 2, 2, 2, 2, 3, 3, 0, 0]
    assert d["positions"].tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1, 0, 0]
    assert d["num_pad"] == 2
    assert d["doc_ids"] == ["doc-a", "doc-β", "c"]
    assert d["doc_token_offsets"].tolist() == [5, 0, 0]
    assert record_segments(data) == segs
    assert [s.starts_doc for s in segs] == [False, True, True]
    assert [s.ends_doc for s in segs] == [True, True, False]
    assert set(decode_record(data, ("tokens",))) == {"tokens"}


def test_record_rejects_bad_input():
    toks, segs, data = _record()
    with pytest.raises(FormatError, match="contiguous"):
        encode_record(toks, [segs[1], segs[0], segs[2]], num_pad=2)
    with pytest.raises(FormatError, match="cover"):
        encode_record(toks, segs, num_pad=1)
    with pytest.raises(FormatError, match="outside its document"):
        encode_record(toks[:3], [Segment(0, 3, 6, 8, "x")])
    with pytest.raises(FormatError, match="out of range"):
        encode_record(np.array([70000], np.uint32), [Segment(0, 1, 0, 1, "x")], width=2)
    with pytest.raises(FormatError, match="magic"):
        decode_record(b"XXXX" + data[4:])
    with pytest.raises(FormatError, match="header says"):
        decode_record(data[:-1])
    with pytest.raises(FormatError, match="shorter than the header"):
        decode_record(b"CF")
    assert token_width(32000) == 2 and token_width(70000) == 4 and token_width(100, "uint32") == 4
    with pytest.raises(FormatError):
        token_width(70000, "uint16")


def _write_pack(tmp_path, n_seq=5, seq_len=4):
    """A hand-made packed directory with one source and two shards."""
    from array_record.python.array_record_module import ArrayRecordWriter

    recs = []
    for i in range(n_seq):
        toks = np.arange(i * seq_len, (i + 1) * seq_len, dtype=np.uint32)
        recs.append(encode_record(toks, [Segment(0, seq_len, i * seq_len, n_seq * seq_len, "only-doc")], width=4))
    shards = []
    os.makedirs(tmp_path / "sequences" / "s", exist_ok=True)
    for j, (lo, hi) in enumerate([(0, 3), (3, n_seq)]):
        rel = f"sequences/s/s-{j:05d}-of-00002.array_record"
        w = ArrayRecordWriter(str(tmp_path / rel), "group_size:1")
        for r in recs[lo:hi]:
            w.write(r)
        w.close()
        import hashlib

        shards.append({"path": rel, "first_sequence": lo, "sequences": hi - lo,
                       "sha256": hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()})
    m = {"format": "corpusforge-packed/1", "seq_len": seq_len,
         "tokenizer": {"model_sha256": "a" * 64}, "corpus": {"manifest_hash": "m1"},
         "sources": {"s": {"sequences": n_seq, "shards": shards, "doc_index": []}}}
    m["fingerprint"] = manifest_fingerprint(m)
    (tmp_path / TOKEN_MANIFEST).write_text(json.dumps(m))
    return recs, m


def test_packed_source_reads_across_shards(tmp_path):
    import pickle

    recs, m = _write_pack(tmp_path)
    src = PackedSource(str(tmp_path), "s", verify_shards=True)
    assert len(src) == 5
    assert [src[i]["tokens"].tolist() for i in range(5)] == [list(range(4 * i, 4 * i + 4)) for i in range(5)]
    assert src[-1]["tokens"].tolist() == [16, 17, 18, 19]
    assert set(src[0]) == {"tokens", "segment_ids", "positions"}
    assert src.lineage(4) == [Segment(0, 4, 16, 20, "only-doc")]
    assert [r["tokens"][0] for r in src.__getitems__([4, 0])] == [16, 0]
    with pytest.raises(IndexError):
        src[5]
    clone = pickle.loads(pickle.dumps(src))
    assert clone[3]["tokens"].tolist() == [12, 13, 14, 15]
    import grain

    ds = grain.MapDataset.source(src).batch(2)
    assert ds[0]["tokens"].shape == (2, 4)


def test_packed_source_checks(tmp_path):
    _, m = _write_pack(tmp_path)
    d = str(tmp_path)
    with pytest.raises(FingerprintMismatch, match="tokenized with model"):
        PackedSource(d, "s", tokenizer="b" * 64)
    with pytest.raises(FingerprintMismatch, match="corpus manifest"):
        PackedSource(d, "s", corpus_manifest_hash="other")
    with pytest.raises(FingerprintMismatch, match="seq_len"):
        PackedSource(d, "s", seq_len=8)
    with pytest.raises(FormatError, match="no source 'x'"):
        PackedSource(d, "x")
    PackedSource(d, "s", tokenizer="a" * 64, corpus_manifest_hash="m1", seq_len=4)
    check_compatible(m, fingerprint=m["fingerprint"])
    with pytest.raises(FingerprintMismatch):
        check_compatible(m, fingerprint="0" * 16)
    # a changed shard is caught by verify
    shard = tmp_path / m["sources"]["s"]["shards"][1]["path"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(FingerprintMismatch, match="sha256"):
        PackedSource(d, "s", verify_shards=True)
    # an edited manifest is refused
    edited = dict(m, seq_len=8)
    (tmp_path / TOKEN_MANIFEST).write_text(json.dumps(edited))
    with pytest.raises(FormatError, match="edited"):
        load_token_manifest(d)
    os.remove(tmp_path / TOKEN_MANIFEST)
    with pytest.raises(FormatError, match="not packed"):
        load_token_manifest(d)


def test_manifest_record_count_mismatch(tmp_path):
    _, m = _write_pack(tmp_path)
    m["sources"]["s"]["sequences"] = 6
    m["fingerprint"] = manifest_fingerprint(m)
    (tmp_path / TOKEN_MANIFEST).write_text(json.dumps(m))
    with pytest.raises(FormatError, match="shards hold 5 sequences"):
        PackedSource(str(tmp_path), "s")


def test_uniform_is_in_unit_interval():
    vals = [unit_uniform(3, f"d{i}", i) for i in range(1000)]
    assert all(0.0 <= v < 1.0 for v in vals)
    assert not math.isclose(min(vals), max(vals))
