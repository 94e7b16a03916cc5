"""The trainer's data contract and its two built-in sources (numpy only: fast)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from train.data import (BatchSource, DataError, SyntheticSource, TokenFileSource, build_source, kv_document,
                        validate_batch, write_byte_tokens)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_synthetic_batches_follow_the_contract_and_are_learnable_tasks():
    src = SyntheticSource(8, 128, vocab_size=256, seed=3)
    assert isinstance(src, BatchSource)
    b = src.next_batch()
    validate_batch(b, 8, 128, 256)
    seg, pos, m = b["segment_ids"], b["positions"], b["loss_mask"]
    # positions restart at every document boundary; targets are next tokens within a document
    for r in range(8):
        for s in np.unique(seg[r][seg[r] > 0]):
            idx = np.where(seg[r] == s)[0]
            assert np.array_equal(pos[r, idx], np.arange(len(idx)))
            assert np.array_equal(b["inputs"][r, idx[1:]], b["targets"][r, idx[:-1]])
    assert (m[seg == 0] == 0).all() and m.sum() > 0.9 * m.size
    assert set(np.unique(b["source_ids"])) <= {0, 1, 2, 3} and len(np.unique(b["source_ids"])) >= 3
    # a copy document repeats its first half after SEP
    r, c = np.argwhere((b["source_ids"] == 0) & (pos == 0))[0]
    doc = b["inputs"][r, seg[r] == seg[r, c]]
    half = (len(doc)) // 2
    assert doc[0] == 1 and np.array_equal(doc[1:half], doc[half + 1: 2 * half])


def test_synthetic_is_deterministic_and_resumes_exactly():
    a = SyntheticSource(4, 64, seed=1)
    first = [a.next_batch() for _ in range(5)]
    state = a.get_state()
    json.dumps(state)                                     # small and JSON-serialisable
    later = [a.next_batch() for _ in range(3)]
    b = SyntheticSource(4, 64, seed=1)
    assert all(same(x, y) for x, y in zip(first, [b.next_batch() for _ in range(5)]))
    c = SyntheticSource(4, 64, seed=1)
    c.set_state(state)
    assert all(same(x, y) for x, y in zip(later, [c.next_batch() for _ in range(3)]))
    # other seed / split -> other data and another fingerprint
    for other in (SyntheticSource(4, 64, seed=2), SyntheticSource(4, 64, seed=1, split="validation")):
        assert not same(other.next_batch(), first[0]) and other.fingerprint != a.fingerprint
    with pytest.raises(DataError, match="bad saved state"):
        c.set_state({"offset": 3})
    with pytest.raises(DataError, match="unknown tasks"):
        SyntheticSource(4, 64, weights={"poetry": 1.0})


def test_kv_document_layout():
    rng = np.random.default_rng(0)
    doc, answers = kv_document(rng, 256, n_pairs=3, filler=10, n_queries=2)
    assert len(doc) == 1 + 6 + 10 + 6 and doc[0] == 1
    keys = dict(zip(doc[1:7:2], doc[2:7:2]))
    for a in answers:
        assert doc[a - 2] == 3 and keys[doc[a - 1]] == doc[a]            # QUERY k -> v


@pytest.fixture()
def token_file(tmp_path):
    # documents of lengths 5, 3, 9, 2 ... separated by EOS = 99
    rng = np.random.default_rng(0)
    parts = []
    for n in rng.integers(2, 12, size=60):
        parts += list(rng.integers(0, 90, size=n)) + [99]
    path = tmp_path / "tokens.npy"
    np.save(path, np.array(parts, np.uint16))
    return str(path), np.array(parts)


def test_token_file_segments_positions_and_mask(token_file):
    path, tokens = token_file
    src = TokenFileSource(path, 4, 16, eos_id=99, shuffle=False)
    b = src.next_batch()
    validate_batch(b, 4, 16, 100)
    assert np.array_equal(b["inputs"][0], tokens[:16]) and np.array_equal(b["targets"][0], tokens[1:17])
    for r in range(4):
        eos = np.where(b["inputs"][r] == 99)[0]
        assert (b["loss_mask"][r, eos] == 0).all() and b["loss_mask"][r].sum() == 16 - len(eos)
        for e in eos[eos < 15]:                                       # a new document right after EOS
            assert b["segment_ids"][r, e + 1] == b["segment_ids"][r, e] + 1 and b["positions"][r, e + 1] == 0
        assert (np.diff(b["positions"][r])[np.diff(b["segment_ids"][r]) == 0] == 1).all()


def test_token_file_epochs_shuffle_and_resume(token_file):
    path, tokens = token_file
    a = TokenFileSource(path, 4, 16, eos_id=99, seed=5)
    n_batches = 2 * a.n_windows // 4 + 3                             # crosses epoch boundaries
    seq = [a.next_batch() for _ in range(n_batches)]
    rows = np.concatenate([s["inputs"] for s in seq])[: a.n_windows]
    # one epoch reads every window exactly once, in a shuffled order
    starts = sorted(int(np.where((np.lib.stride_tricks.sliding_window_view(tokens, 16) == r).all(1))[0][0])
                    for r in rows)
    assert starts == [16 * w for w in range(a.n_windows)]
    assert not np.array_equal(rows[0], tokens[:16]) or not np.array_equal(rows[1], tokens[16:32])
    b = TokenFileSource(path, 4, 16, eos_id=99, seed=5)
    b.set_state({"batches": 7})
    assert all(same(x, y) for x, y in zip(seq[7:], [b.next_batch() for _ in range(n_batches - 7)]))
    assert TokenFileSource(path, 4, 16, eos_id=99, seed=6).fingerprint != a.fingerprint


def test_token_file_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        TokenFileSource(str(tmp_path / "nope.npy"), 2, 8, eos_id=0)
    np.save(tmp_path / "short.npy", np.arange(5))
    with pytest.raises(DataError, match="0 windows"):
        TokenFileSource(str(tmp_path / "short.npy"), 2, 8, eos_id=0)
    np.save(tmp_path / "2d.npy", np.zeros((4, 4), np.int32))
    with pytest.raises(DataError, match="1-D integer"):
        TokenFileSource(str(tmp_path / "2d.npy"), 2, 8, eos_id=0)
    (tmp_path / "bad.npy").write_text("not numpy")
    with pytest.raises(DataError, match="not a .npy"):
        TokenFileSource(str(tmp_path / "bad.npy"), 2, 8, eos_id=0)


def test_validate_batch_rejects_contract_violations():
    good = SyntheticSource(2, 32, vocab_size=128).next_batch()
    validate_batch(good, 2, 32, 128)
    cases = [
        ({k: v for k, v in good.items() if k != "positions"}, "missing 'positions'"),
        ({**good, "inputs": good["inputs"].astype(np.int64)}, "must be int32"),
        ({**good, "targets": good["targets"][:, :16]}, r"must be int32\[2, 32\]"),
        ({**good, "inputs": good["inputs"] + 1000}, "outside"),
        ({**good, "extra": good["inputs"]}, "unknown keys"),
        ({**good, "loss_mask": np.ones((2, 32), np.float32), "segment_ids": np.zeros((2, 32), np.int32)},
         "padding"),
    ]
    for batch, msg in cases:
        with pytest.raises(DataError, match=msg):
            validate_batch(batch, 2, 32, 128)


def test_build_source_and_the_mixture_seam(tmp_path):
    s = build_source("synthetic", batch_size=2, seq_len=16, seed=0, split="train", vocab_size=128, options={})
    assert isinstance(s, SyntheticSource)
    f = tmp_path / "a.txt"
    f.write_text("hello world, " * 20)
    info = write_byte_tokens([str(f)], str(tmp_path / "bytes.npy"))
    assert info["tokens"] == 261 and info["eos_id"] == 256
    t = build_source("tokens", batch_size=2, seq_len=16, seed=0, split="validation", vocab_size=257,
                     options={"path": str(tmp_path / "bytes.npy"), "eos_id": 256})
    validate_batch(t.next_batch(), 2, 16, 257)
    with pytest.raises(DataError, match="path is required"):
        build_source("tokens", batch_size=2, seq_len=16, seed=0, split="train", vocab_size=257, options={})
    import mixtures
    if not hasattr(mixtures, "build_batch_source"):
        with pytest.raises(DataError, match="mixture loader"):
            build_source("mixture", batch_size=2, seq_len=16, seed=0, split="train", vocab_size=257,
                         options={"config": "x.yaml"})


def test_probes_measure_what_they_claim():
    """The probe arithmetic, checked with oracle models (no JAX)."""
    from train.probes import kv_retrieval, nll_by_position
    vocab = 128

    def oracle_logits(tokens, seg, pos):          # a model that retrieves perfectly
        out = np.zeros(tokens.shape + (vocab,), np.float32)
        for r, row in enumerate(tokens):
            for i in range(1, len(row)):
                if row[i - 1] == 3:                                  # QUERY k -> the token after k's first use
                    out[r, i, row[list(row).index(row[i]) + 1]] = 1.0
        return out

    def confused_logits(tokens, seg, pos):        # always answers with the first pair's value
        out = np.zeros(tokens.shape + (vocab,), np.float32)
        out[np.arange(len(tokens)), :, tokens[:, 2]] = 1.0
        return out

    good = kv_retrieval(oracle_logits, vocab, [32, 64], pairs=4, trials=16)
    assert good["lengths"] == [32, 64] and good["accuracy"] == [1.0, 1.0]
    bad = kv_retrieval(confused_logits, vocab, [32, 64], pairs=4, trials=64)
    assert all(0.1 < a < 0.45 for a in bad["accuracy"])          # right only when key 1 is asked (~1/4)
    assert kv_retrieval(oracle_logits, vocab, [8], pairs=4)["lengths"] == []   # too short for 4 pairs

    src = SyntheticSource(4, 64, vocab_size=vocab, seed=0)
    batches = [src.next_batch() for _ in range(2)]
    rec = nll_by_position(lambda b: b["positions"].astype(np.float32), batches, 64)
    assert rec["bucket_start"][:4] == [0, 1, 2, 4] and rec["bucket_end"][:4] == [1, 2, 4, 8]
    assert rec["nll"][:3] == [0.0, 1.0, 2.5]                        # mean position inside each bucket
    assert sum(rec["count"]) == int(sum(b["loss_mask"].sum() for b in batches))


def test_token_file_holds_out_validation_windows(token_file):
    path, tokens = token_file
    kw = dict(batch_size=2, seq_len=16, seed=0, vocab_size=100, options={"path": path, "eos_id": 99, "holdout": 0.2})
    train = build_source("tokens", split="train", **kw)
    val = build_source("tokens", split="validation", **kw)
    assert train.n_windows + val.n_windows == (len(tokens) - 1) // 16 and val.n_windows >= 1
    seen = lambda src, n: {tuple(r) for _ in range(n) for r in src.next_batch()["inputs"]}
    assert not seen(train, train.n_windows) & seen(val, val.n_windows)        # disjoint windows
    assert train.fingerprint != val.fingerprint
