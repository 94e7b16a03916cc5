"""Unit tests for the pure near-dup and boilerplate operators (no Beam)."""
from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from pydantic import ValidationError

from filters.boilerplate import (
    BoilerplateConfig,
    applies,
    distinct_keys,
    remove_boilerplate,
    split_units,
    unit_key,
)
from filters.minhash import (
    EMPTY,
    MinHasher,
    NearDupConfig,
    ShingleConfig,
    Shingler,
    band_keys,
    candidate_probability,
    doc_key,
    jaccard_sorted,
    lsh_error,
    lsh_params,
    ngram_hashes,
    reference_token_hash,
    signature_similarity,
    survivor_rank,
)

WORDS = [f"w{i}" for i in range(4000)]


def _text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


# ------------------------------------------------------------------ shingles
@pytest.mark.parametrize("text", [
    "Hello world  this is\ta test, with Ünïcödé and\u3000ideographic space",
    "one",
    "  leading and trailing  \n",
    "x\u2028y\u00a0z\x1cq",  # str.split() whitespace beyond ASCII
    "a" * 5000 + " b",       # a long token
])
def test_token_hashes_match_python_reference(text):
    sh = Shingler(ShingleConfig(lowercase=False))
    got = sh.token_hashes(sh.codepoints(text))
    assert [int(x) for x in got] == [reference_token_hash(t) for t in text.split()]


def test_shingles_are_ngrams_of_tokens():
    sh = Shingler()
    assert len(sh.hashes("a b c d e f g")) == 3          # 7 tokens, 5-grams
    assert len(sh.hashes("a b c")) == 1                  # shorter than n: one shingle of all
    assert len(sh.hashes("   \n\t ")) == 0               # no tokens, no shingles
    # case-insensitive by default, order-sensitive, whitespace-insensitive
    assert np.array_equal(sh.hashes("A B C D E F"), sh.hashes("a  b\nc d e f"))
    assert not np.array_equal(sh.hashes("a b c d e"), sh.hashes("e d c b a"))
    assert not np.array_equal(Shingler(ShingleConfig(lowercase=False)).hashes("A b c d e"),
                              Shingler(ShingleConfig(lowercase=False)).hashes("a b c d e"))


def test_distinct_tokens_hash_apart():
    sh = Shingler()
    vocab = [f"tok{i}" for i in range(50_000)] + ["日本語", "Ελληνικά", "ok", "ko", "o", "oo"]
    hs = sh.token_hashes(sh.codepoints(" ".join(vocab)))
    assert len(np.unique(hs)) == len(vocab)


def test_unit_auto_uses_chars_for_scripts_without_spaces():
    sh = Shingler()
    cjk = "名稱 chcn - 修改檔案安全上下文 概述 chtcon 選項 上下文 檔案"
    assert sh.unit_for(sh.codepoints(cjk)) == "char"
    assert sh.unit_for(sh.codepoints("plain English text with spaces")) == "word"
    assert sh.unit_for(sh.codepoints("Русский текст и немного слов")) == "word"
    assert sh.unit_for(sh.codepoints("ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ")) == "char"
    # char shingles: whitespace-insensitive, n = char_ngram
    assert len(sh.hashes("日本語のテキスト")) == 8 - 5 + 1
    assert np.array_equal(sh.hashes("日本語の テキスト"), sh.hashes("日本語のテキスト"))
    # forcing a unit
    assert len(Shingler(ShingleConfig(unit="char", char_ngram=3)).hashes("abcdef")) == 4
    assert len(Shingler(ShingleConfig(unit="word")).hashes("日本語のテキスト")) == 1


def test_word_and_char_shingles_never_collide():
    items = np.arange(1, 50, dtype=np.uint64)
    a = ngram_hashes(items, 5, np.uint64(1))
    b = ngram_hashes(items, 5, np.uint64(2))
    assert not set(a.tolist()) & set(b.tolist())


# ---------------------------------------------------------------- signatures
@pytest.mark.parametrize("num_perm,seed", [(112, 1), (64, 7), (128, 42)])
def test_minhash_bit_identical_to_datasketch_affine64(num_perm, seed):
    rng = random.Random(seed)
    sh = Shingler()
    mh = MinHasher(num_perm, seed)
    docs = [_text(rng, n) for n in (3, 40, 700, 5000, 9000)] + [""]
    arrays = [sh.hashes(t) for t in docs]
    sigs = mh.signatures(arrays)  # batched: small docs share blocks, big ones are chunked
    for arr, sig in zip(arrays, sigs):
        ref = MinHash(num_perm=num_perm, seed=seed, scheme="affine64", hashfunc=int)
        if len(arr):
            ref.update_batch([int(x) for x in arr])
        assert np.array_equal(ref.hashvalues, sig)
    assert (sigs[-1] == EMPTY).all()
    assert np.array_equal(mh.signature(arrays[2]), sigs[2])


def test_signature_estimates_jaccard():
    rng = random.Random(5)
    sh, mh = Shingler(), MinHasher(256, 3)
    base = _text(rng, 2000).split()
    for rate in (0.01, 0.05, 0.2):
        other = [rng.choice(WORDS) if rng.random() < rate else w for w in base]
        a, b = sh.shingle_set(" ".join(base)), sh.shingle_set(" ".join(other))
        exact = jaccard_sorted(a, b)
        est = signature_similarity(*mh.signatures([a, b]))
        assert abs(est - exact) < 0.08, (rate, exact, est)


def test_jaccard_sorted_matches_sets():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = np.unique(rng.integers(0, 300, rng.integers(0, 200)).astype(np.uint64))
        b = np.unique(rng.integers(0, 300, rng.integers(1, 200)).astype(np.uint64))
        sa, sb = set(a.tolist()), set(b.tolist())
        assert jaccard_sorted(a, b) == pytest.approx(len(sa & sb) / len(sa | sb))
    assert jaccard_sorted(np.zeros(0, np.uint64), np.zeros(0, np.uint64)) == 1.0


def test_band_keys_collide_exactly_on_equal_bands():
    mh = MinHasher(112, 1)
    sig = mh.signatures([np.arange(100, dtype=np.uint64), np.arange(100, dtype=np.uint64)])
    sig[1, 8:16] += np.uint64(1)  # change band 1 only
    keys = band_keys(sig, 14, 8)
    assert keys.shape == (2, 14)
    assert (keys[0] == keys[1]).sum() == 13 and keys[0, 1] != keys[1, 1]
    assert len(np.unique(keys[0])) == 14  # same values in two bands would still differ by band index
    with pytest.raises(ValueError):
        band_keys(sig, 15, 8)


# ----------------------------------------------------------------------- LSH
@pytest.mark.parametrize("threshold,num_perm,w", [
    (0.8, 112, (0.05, 0.95)), (0.8, 128, (0.5, 0.5)), (0.7, 256, (0.2, 0.8)), (0.9, 64, (0.5, 0.5)),
    (0.5, 100, (0.3, 0.7)),
])
def test_lsh_params_agree_with_datasketch(threshold, num_perm, w):
    assert lsh_params(threshold, num_perm, *w) == _optimal_param(threshold, num_perm, *w)


def test_lsh_default_tradeoff_is_documented_one():
    cfg = NearDupConfig()
    b, r = cfg.lsh()
    assert (b, r) == (14, 8)
    assert candidate_probability(0.8, b, r) == pytest.approx(0.924, abs=1e-3)
    assert candidate_probability(0.5, b, r) < 0.06
    fp, fn = lsh_error(0.8, b, r)
    assert 0 < fn < fp  # recall-leaning: misses above the threshold are the smaller error
    assert NearDupConfig(bands=20, rows=5).lsh() == (20, 5)


# ------------------------------------------------------------------- config
@pytest.mark.parametrize("kwargs,msg", [
    ({"bands": 10}, "both"),
    ({"bands": 20, "rows": 8}, "exceeds num_perm"),
    ({"survivor": ["longest"]}, "smallest_id"),
    ({"survivor": ["biggest", "smallest_id"]}, "unknown policy item"),
    ({"threshold": 1.5}, "less than or equal"),
    ({"verify": "maybe"}, "exact"),
    ({"shingle": {"unit": "bytes"}}, "word"),
    ({"bogus": 1}, "Extra inputs"),
])
def test_config_rejects_bad_values(kwargs, msg):
    with pytest.raises(ValidationError, match=msg):
        NearDupConfig(**kwargs)


def test_config_loads_from_yaml_with_override(tmp_path):
    from pipelines.config import ConfigError, load_config

    cfg = load_config(None, ["near_dup.threshold=0.9", "near_dup.survivor=[max:quality.score, longest, smallest_id]"])
    assert cfg.near_dup.threshold == 0.9 and cfg.near_dup.survivor[0] == "max:quality.score"
    with pytest.raises(ConfigError, match="near_dup.survivor"):
        load_config(None, ["near_dup.survivor=[longest]"])
    with pytest.raises(ConfigError, match="boilerplate.min_docs"):
        load_config(None, ["boilerplate.min_docs=1"])


# ------------------------------------------------------------- survivor policy
def test_survivor_rank_policy():
    docs = [
        {"id": "c", "text": "x" * 10, "source": "web", "scores": {"q.s": 0.9}},
        {"id": "a", "text": "x" * 30, "source": "web", "scores": {}},
        {"id": "b", "text": "x" * 30, "source": "books", "scores": {"q.s": 0.2}},
        {"id": "d", "text": "x" * 30, "source": "web", "scores": {"q.s": float("nan")}},
    ]
    best = lambda pol, rank=None: min(docs, key=lambda d: survivor_rank(d, pol, rank))["id"]  # noqa: E731
    assert best(["max:q.s", "longest", "smallest_id"]) == "c"      # best score; missing/NaN ranks last
    assert best(["min:q.s", "smallest_id"]) == "b"
    assert best(["longest", "smallest_id"]) == "a"                 # tie on length -> smallest id
    assert best(["shortest", "smallest_id"]) == "c"
    assert best(["source_priority", "longest", "smallest_id"], {"books": 0, "web": 1}) == "b"
    assert best(["smallest_id"]) == "a"


def test_doc_key_is_stable_signed_64bit():
    assert doc_key("abc") == doc_key("abc") != doc_key("abd")
    assert -(1 << 63) <= doc_key("x") < (1 << 63)


# --------------------------------------------------------------- boilerplate
def test_split_units_roundtrip():
    text = "line one\nline two\n\npara two a\npara two b\n\n\n\npara three"
    assert "".join(split_units(text, "line")) == text
    paras = split_units(text, "paragraph")
    assert "".join(paras) == text and len(paras) == 3


def test_remove_boilerplate_lines():
    cfg = BoilerplateConfig(min_chars=10)
    footer = "This page is licensed under the   Example License."
    text = f"Real content line that matters.\n{footer}\nshort\nMore content here please."
    keys = distinct_keys(text, cfg)
    assert len(keys) == 3                      # "short" is below min_chars
    boiler = np.array(sorted([unit_key("this page is licensed under the example license.")]), dtype=np.int64)
    new, n, removed = remove_boilerplate(text, cfg, boiler)
    assert n == 1 and footer not in new and "short" in new and "Real content" in new
    assert removed[0][1] == "this page is licensed under the example license."
    assert remove_boilerplate(text, cfg, np.zeros(0, np.int64)) == (text, 0, [])
    only = remove_boilerplate(footer, cfg, boiler)
    assert only[0] == "" and only[1] == 1


def test_boilerplate_skips_code_by_default():
    cfg = BoilerplateConfig()
    assert not applies({"lang": "code:python"}, cfg)
    assert applies({"lang": "en"}, cfg) and applies({"lang": None}, cfg)


def test_long_texts_are_hashed_in_blocks_with_same_result():
    sh = Shingler(ShingleConfig(lowercase=False))
    sh.BLOCK = 50  # force block splitting (at whitespace), including a token longer than a block
    text = " ".join(f"tok{i}" for i in range(200)) + " " + "x" * 120 + " end"
    assert [int(x) for x in sh.token_hashes(sh.codepoints(text))] == [reference_token_hash(t) for t in text.split()]
