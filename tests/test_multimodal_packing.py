"""Multimodal packing and loading (mixtures/multimodal.py, mixtures/loader.py) on a corpus
built by the real media branch from the shipped sample: token costs equal to the
manifest's, interleaving order, features, loss masking, staged mixing, determinism and
resume, and the one-line errors."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from filters.media import TokensConfig, image_grid, image_tokens
from mixtures.config import plan_mixture
from mixtures.loader import LoaderError, MixtureSource
from mixtures.multimodal import (KIND_AUDIO, KIND_FRAME, KIND_IMAGE, MediaCost, MediaLoaderError, MediaPackedSource,
                                 bucket, caption_rows, image_patches, log_mel_tokens)
from tests.multimodal_data import MEDIA_SOURCES, SEQ, mixture, mm_data  # noqa: F401  (fixture)
from train.data import DataError, validate_batch

ALL = {"en": 1, "de": 1, "fr": 1, "img": 1, "pairs": 1, "aud": 1, "vid": 1, "doc": 1}


def _source(data, name, seq=SEQ):
    mod, src = MEDIA_SOURCES[name]
    return MediaPackedSource(data["corpus"], data["manifest"]["media"], mod, src, data["tok"], seq)


# ----------------------------------------------------------------- token-cost rules (no corpus)
def test_image_grid_rule():
    t = TokensConfig(patch_size=16, image_max_tokens=4096)
    assert image_grid(451, 300, t) == (19, 29) and image_tokens(451, 300, t) == 551       # ceil per side
    assert image_grid(16, 16, t) == (1, 1) and image_grid(17, 1, t) == (1, 2)
    small = TokensConfig(patch_size=16, image_max_tokens=40)
    for w, h in [(320, 240), (1024, 64), (64, 1024), (451, 300), (2000, 2000), (100, 100)]:
        r, c = image_grid(w, h, small)
        assert 1 <= r * c <= 40, (w, h, r, c)
        if math.ceil(w / 16) * math.ceil(h / 16) > 40:      # scaled down, aspect kept within one patch
            assert abs(c / r - w / h) <= max(1 / r, 1 / c) * max(c / r, w / h) + 1e-9, (w, h, r, c)
            assert r * c >= 40 * 0.6
    assert image_grid(320, 240, small) == (5, 7)
    # image_tokens agrees with the old min(cap, ceil * ceil) whenever the cap does not bind
    for w, h in [(31, 47), (512, 384), (1024, 1024)]:
        assert image_tokens(w, h, t) == min(4096, math.ceil(w / 16) * math.ceil(h / 16))


def test_features_on_the_host():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    p = image_patches(buf.getvalue(), 3, 4, 8)
    assert p.shape == (12, 192) and p.dtype == np.float32 and -1 <= p.min() and p.max() <= 1
    ref = np.asarray(img.resize((32, 24), Image.Resampling.BICUBIC), np.float32) / 127.5 - 1
    assert np.array_equal(p[5].reshape(8, 8, 3), ref[8:16, 8:16])          # row 1, column 1
    cost = MediaCost(TokensConfig(audio_tokens_per_s=25.0), 16000)
    assert cost.frames_per_token == 4 and cost.feature_dim == 768
    x = np.sin(2 * np.pi * 440 * np.arange(8000) / 16000).astype(np.float32)
    n = math.ceil(len(x) / 16000 * 25)
    m = log_mel_tokens(x, n, cost)
    assert m.shape == (13, 320) and np.isfinite(m).all()
    frames = m.reshape(13 * 4, 80)
    assert int(np.argmax(frames[:40].mean(0))) in range(8, 16)            # 440 Hz sits in the low mel bins
    with pytest.raises(MediaLoaderError, match="whole number of 10 ms"):
        MediaCost(TokensConfig(audio_tokens_per_s=30.0), 16000).frames_per_token  # noqa: B018
    assert bucket(1, 128) == 32 and bucket(33, 128) == 64 and bucket(100, 128) == 128 and bucket(300, 256) == 300


# ----------------------------------------------------------------- corpus-backed
def test_token_costs_equal_the_manifest(mm_data):
    media = mm_data["manifest"]["media"]["modalities"]
    for name, (mod, src_name) in MEDIA_SOURCES.items():
        src = _source(mm_data, name)
        recorded = media[mod]["sources"][src_name]
        st = src.stats()
        assert st["samples"] == recorded["samples"] > 0
        assert st["media_tokens"] == recorded["media_tokens"], name
        # what the packer really emits over one epoch: every media slot, with features
        emitted = kinds = 0
        for i in range(len(src)):
            rec = src[i]
            emitted += int((rec["media_slot"] > 0).sum())
            kinds += int((rec["media"]["kind"] > 0).sum())
            assert rec["media"]["features"].shape == (int((rec["media_slot"] > 0).sum()), src.cost.feature_dim)
        assert emitted == kinds == recorded["media_tokens"], name
        # and per sample, against its JSON
        for r in src.docs:
            meta = json.loads(src.shards[r.shard].read(r.key, "json"))
            assert r.media_tokens == meta["tokens"]["media"], (name, r.id)
        # the packing accounts for every token: documents + padding = sequences x S
        assert st["tokens"] + st["pad_tokens"] == len(src) * SEQ
        assert st["structure_tokens"] == sum(1 + 2 * len(src.doc(r.shard, r.key).blocks) for r in src.docs)


def test_documents_interleave_in_sample_order(mm_data):
    tok, sp = mm_data["tok"], mm_data["tok"].special_ids()
    doc_src = _source(mm_data, "doc")
    r = doc_src.docs[0]
    meta = json.loads(doc_src.shards[r.shard].read(r.key, "json"))
    d = doc_src.doc(r.shard, r.key)
    expect, prev_text = [], False
    for seg in meta["segments"]:
        if seg["type"] == "text":
            expect += tok.encode(("\n\n" if prev_text else "") + seg["text"])
            prev_text = True
        else:
            gr, gc = image_grid(seg["width"], seg["height"], doc_src.cost.tokens)
            expect += [sp["<boi>"]] + [tok.pad_id] * (gr * gc) + [sp["<eoi>"]]
            prev_text = False
    assert d.ids.tolist() == expect + [tok.eod_id]
    assert [s["type"] for s in meta["segments"]].count("image") == len(d.items) == len(d.blocks) == 3
    assert (d.slot > 0).sum() == meta["tokens"]["media"] and np.array_equal(d.ids[d.slot > 0], np.zeros(d.media_tokens))
    # a video: frames in order (time 0, 1, 2) through the image path, then the audio track, then the caption
    vid = _source(mm_data, "vid")
    r = vid.docs[0]
    d = vid.doc(r.shard, r.key)
    meta = json.loads(vid.shards[r.shard].read(r.key, "json"))
    assert [it.kind for it in d.items] == [KIND_FRAME] * 3 + [KIND_AUDIO] and [it.t for it in d.items[:3]] == [0, 1, 2]
    assert d.ids[0] == sp["<bov>"] and d.ids[d.blocks[0][1]] == sp["<eov>"]
    assert d.ids[d.blocks[0][1] + 1:].tolist() == tok.encode(meta["text"]) + [tok.eod_id]
    # an image: <boi> patches <eoi> caption <eod>, and the record's features are the member's patches
    img = _source(mm_data, "pairs")
    r = img.docs[0]
    d = img.doc(r.shard, r.key)
    it = d.items[0]
    assert it.kind == KIND_IMAGE and d.ids[0] == sp["<boi>"] and d.ids[it.n_tokens + 1] == sp["<eoi>"]
    i, piece = next((i, p) for i, seq in enumerate(img.sequences) for p in seq if p.doc == 0)
    rec = img[i]
    col = sum(p.length for p in img.sequences[i][:img.sequences[i].index(piece)])
    slots = rec["media_slot"][col + 1: col + 1 + it.n_tokens]
    want = image_patches(img.shards[r.shard].read(r.key, it.member), it.rows, it.cols, 16)
    assert np.array_equal(rec["media"]["features"][slots - 1][:, :want.shape[1]], want)
    assert rec["media"]["positions"][slots - 1][:, 1:].tolist() == [[a, b] for a in range(it.rows) for b in range(it.cols)]


def test_mixture_batches_mask_media_and_mix_sources(mm_data, tmp_path):
    src = MixtureSource.from_config(mixture(mm_data, str(tmp_path / "m.yaml"), ALL), 8, seq_len=SEQ - 1)
    assert src.media_spec == {"patch_size": 16, "channels": 3, "n_mels": 80, "frames_per_token": 8}
    sp = mm_data["tok"].special_ids()
    begins = {sp["<boi>"], sp["<boa>"], sp["<bov>"]}
    ends = {sp["<eoi>"], sp["<eoa>"], sp["<eov>"]}
    seen = set()
    for step in range(6):
        b = src.next_batch()
        validate_batch(b, 8, SEQ - 1, mm_data["tok"].vocab_size)
        idx, mask = b["media_index"], b["loss_mask"]
        nxt = np.concatenate([idx[:, 1:], np.zeros((8, 1), np.int32)], axis=1)
        assert not np.any(mask[idx > 0]) and not np.any(mask[(nxt > 0) & (b["segment_ids"] == np.roll(b["segment_ids"], -1, 1))])
        # text after an end token counts; predicting a begin token counts; the end token's target does not
        for r in range(8):
            where = src.locate(step * 8 + r)
            seen.add(where["source"])
            if where["source"] in ("en", "de", "fr"):
                assert not idx[r].any()
                continue
            for t in range(SEQ - 2):
                if b["inputs"][r, t] in ends and b["segment_ids"][r, t] == b["segment_ids"][r, t + 1]:
                    assert mask[r, t] == 1 and idx[r, t] == 0
                if b["targets"][r, t] in begins and b["segment_ids"][r, t] == b["segment_ids"][r, t + 1] > 0:
                    assert mask[r, t] == 1
            k = int(idx[r].max())
            assert np.all(b["media_kind"][r, :k] > 0) and np.all(b["media_kind"][r, k:] == 0)
        assert b["media_patches"].shape[1] in (32, 64, 128)
    assert seen == set(ALL)
    consumed = src.consumed()["s0"]
    assert set(consumed) == set(ALL) and sum(c["sequences"] for c in consumed.values()) == 48


def _row(batch, r):
    """Row r of a batch, media fields cut to the row's media tokens (the padding budget is per batch)."""
    n = int(batch["media_index"][r].max()) if "media_index" in batch else 0
    return {k: (v[r, :n] if k.startswith("media_") and k != "media_index" else v[r]) for k, v in batch.items()}


def test_deterministic_resumable_and_fingerprinted(mm_data, tmp_path):
    path = mixture(mm_data, str(tmp_path / "m.yaml"), ALL, stages=2)
    a = MixtureSource.from_config(path, 4, seq_len=SEQ - 1)
    ref = [a.next_batch() for _ in range(6)]
    b = MixtureSource.from_config(path, 4, seq_len=SEQ - 1)
    for _ in range(3):
        b.next_batch()
    state = json.loads(json.dumps(b.get_state()))
    c = MixtureSource.from_config(path, 2, seq_len=SEQ - 1)           # another batch size: the state counts examples
    c.set_state(state)
    got = [c.next_batch() for _ in range(6)]
    for e in range(12):
        x, y = _row(ref[3 + e // 4], e % 4), _row(got[e // 2], e % 2)
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x), e
    d = MixtureSource.from_config(path, 4, seq_len=SEQ - 1)
    d.set_state(state)
    for i in range(3):
        nb = d.next_batch()
        assert all(np.array_equal(nb[k], ref[3 + i][k]) for k in nb)
    # the media layout is part of the fingerprint; a text-only mixture's fingerprint has no media part
    assert "media" in a.get_state()
    text_only = MixtureSource.from_config(mixture(mm_data, str(tmp_path / "t.yaml"), {"en": 1, "de": 1}), 4,
                                          seq_len=SEQ - 1)
    assert "media" not in text_only.get_state() and text_only.media_spec is None
    assert "media_index" not in text_only.next_batch()
    other = MixtureSource.from_config(path, 4, seq_len=SEQ - 1, overrides=["stages.0.weights.vid=2"])
    with pytest.raises(LoaderError, match="mixture plan"):
        other.set_state(state)
    # lineage and replayed counters work for media rows
    rows = a.lineage(0)
    assert all(r["pieces"] for r in rows)
    assert a.replay_consumed(24) == a.get_state()["consumed"]


def test_errors_are_one_line(mm_data, tmp_path):
    with pytest.raises(MediaLoaderError, match=r"one media item takes \d+ tokens .* more than the 40-token") as e:
        _source(mm_data, "vid", seq=40)
    assert "\n" not in str(e.value) and "image_max_tokens" in str(e.value)
    # a corpus costed with other rules than those its manifest states is refused, sample by sample
    media = json.loads(json.dumps(mm_data["manifest"]["media"]))
    media["token_cost"]["image_max_tokens"] = 12
    with pytest.raises(MediaLoaderError, match=r"packs \d+ media tokens but the corpus manifest costed it \d+"):
        MediaPackedSource(mm_data["corpus"], media, "image", "media", mm_data["tok"], SEQ)
    path = mixture(mm_data, str(tmp_path / "m.yaml"), ALL)
    with pytest.raises(LoaderError, match="set tokenizer:"):
        MixtureSource.from_config(path, 4, seq_len=SEQ - 1, overrides=["tokenizer=null"])
    # the loader enforces the cap on the packed sequence count (the plan only had the manifest's estimate)
    plan = plan_mixture(path, overrides=["sources.aud.max_epochs=3"], check=False)
    with pytest.raises(LoaderError, match=r"media source aud packs into 2 sequences .* 4.00 epochs > max_epochs 3"):
        MixtureSource(plan, 4, seq_len=SEQ - 1)
    bad = {"inputs": np.zeros((1, 8), np.int32), "targets": np.zeros((1, 8), np.int32),
           "segment_ids": np.ones((1, 8), np.int32), "positions": np.zeros((1, 8), np.int32),
           "loss_mask": np.ones((1, 8), np.float32), "media_patches": np.zeros((1, 4, 5), np.float32),
           "media_kind": np.ones((1, 4), np.int32), "media_positions": np.zeros((1, 4, 3), np.int32),
           "media_group": np.ones((1, 4), np.int32), "media_index": np.zeros((1, 8), np.int32)}
    validate_batch(bad, 1, 8, 10)
    bad["media_index"][0, 2] = 1
    with pytest.raises(DataError, match="loss_mask is set on a media position"):
        validate_batch(bad, 1, 8, 10)
    bad["media_index"][0, 2] = 5
    with pytest.raises(DataError, match=r"media_index'\] must be in \[0, 4\]"):
        validate_batch(bad, 1, 8, 10)
    del bad["media_group"]
    with pytest.raises(DataError, match="has media fields but not"):
        validate_batch(bad, 1, 8, 10)


def test_caption_probe_rows(mm_data):
    src = _source(mm_data, "img")
    docs = [(r.shard, r.key) for r in src.docs][:4]
    right, n_cap = caption_rows(src, docs, [0, 1, 2, 3], SEQ - 1, 0)
    swapped, n_cap2 = caption_rows(src, [docs[1], docs[0], docs[3], docs[2]] + docs, [4, 5, 6, 7], SEQ - 1, 0)
    assert n_cap == n_cap2 and right["loss_mask"].sum(1).tolist() == n_cap
    # same captions, same targets; different images
    assert np.array_equal(right["targets"][right["loss_mask"] > 0], swapped["targets"][swapped["loss_mask"] > 0])
    assert not np.array_equal(right["media_patches"][0], swapped["media_patches"][0])
    validate_batch(right, 4, SEQ - 1, mm_data["tok"].vocab_size)
