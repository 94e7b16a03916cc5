"""Mixtures: config validation, plan tables and caps, and the staged loader —
proportions, exact stage boundaries, resume, fingerprints, row construction,
validation split, media refusal, inspection CLI.  Data are packed directories
written with tokenizer.format.encode_record (tests/mixtures_data.py); the real
tokenizer.pack output is covered by tests/test_mixtures_e2e.py."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pytest

from mixtures.config import MixtureError, apportion, load_mixture, plan_mixture
from mixtures.loader import LoaderError, MixtureSource, ShuffledRange, interleave
from tests.mixtures_data import EOD, PAD, VOCAB, doc_tokens, make_docs, write_corpus_manifest, write_mixture, write_pack

S = 32
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the trainer's protocol, copied (mixtures never imports train/) ---------------------
@runtime_checkable
class BatchSource(Protocol):
    batch_size: int
    seq_len: int
    vocab_size: int
    source_names: list[str]
    fingerprint: str

    def next_batch(self) -> dict[str, np.ndarray]: ...
    def get_state(self) -> dict[str, Any]: ...
    def set_state(self, state: dict[str, Any]) -> None: ...


CONTRACT = {"inputs": np.int32, "targets": np.int32, "segment_ids": np.int32, "positions": np.int32,
            "loss_mask": np.float32, "source_ids": np.int32}


def check_batch(batch, b, l, vocab):
    assert set(batch) == set(CONTRACT)
    for k, dt in CONTRACT.items():
        assert batch[k].dtype == dt and batch[k].shape == (b, l), (k, batch[k].dtype, batch[k].shape)
    for k in ("inputs", "targets"):
        assert batch[k].min() >= 0 and batch[k].max() < vocab
    assert not np.any((batch["segment_ids"] == 0) & (batch["loss_mask"] > 0))


# ---- data -------------------------------------------------------------------------------
SOURCES = {
    "web": make_docs("web", 60, 20, 200),
    "wiki": make_docs("wiki", 40, 10, 120),
    "books": make_docs("books", 6, 300, 900),
    "code": make_docs("code", 25, 15, 80),
}
DOCS = doc_tokens(SOURCES)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    d = tmp_path_factory.mktemp("packed")
    m = write_pack(d, SOURCES, S)
    return d, m


def mixture(tmp_path, packed, name="mix.yaml", **over):
    cfg = {
        "name": "test", "seed": 3, "tokens_dir": str(packed[0]), "validation_sequences": 3,
        "sources": {"web": {}, "wiki": {}, "books": {}, "code": {"max_epochs": 2}},
        "stages": [
            {"name": "main", "tokens": 200 * S, "weights": {"web": 0.5, "wiki": 0.25, "books": 0.15, "code": 0.1}},
            {"name": "anneal", "tokens": 64 * S, "weights": {"web": 0.1, "wiki": 0.1, "books": 0.4, "code": 0.4}},
        ],
    }
    cfg.update(over)
    return write_mixture(tmp_path / name, cfg)


def expected_record(pieces) -> np.ndarray:
    toks = np.concatenate([DOCS[p.doc_id][p.doc_token_offset: p.doc_token_offset + p.length] for p in pieces])
    return np.concatenate([toks, np.full(S - len(toks), PAD)]).astype(np.int64)


# ---- config -----------------------------------------------------------------------------
def test_demo_configs_are_valid():
    for f in sorted(os.listdir(os.path.join(ROOT, "configs", "mixtures"))):
        cfg = load_mixture(os.path.join(ROOT, "configs", "mixtures", f))
        assert cfg.stages and cfg.sources
        if f.startswith("demo"):                       # the demos show staging (nano_sample: one stage)
            assert len(cfg.stages) >= 2, f
    demo = load_mixture(os.path.join(ROOT, "configs", "mixtures", "demo.yaml"))
    assert set(demo.sources) >= {"web", "wiki", "books", "code"}
    first, last = demo.stages[0].weights, demo.stages[-1].weights
    share = lambda w, k: w.get(k, 0) / sum(w.values())  # noqa: E731
    assert share(last, "code") > share(first, "code") and share(last, "books") > share(first, "books")


@pytest.mark.parametrize("over, fragment", [
    ({"sourcez": {}}, "sourcez: unknown key"),
    ({"stages": [{"name": "a", "tokens": 64, "weights": {"nope": 1}}]}, "unknown source(s) ['nope']"),
    ({"stages": [{"name": "a", "tokens": 64, "weights": {"web": -1}}]}, "finite and >= 0"),
    ({"stages": [{"name": "a", "tokens": 64, "weights": {"web": 0}}]}, "weights are all 0"),
    ({"stages": [{"name": "a", "tokens": "lots", "weights": {"web": 1}}]}, "expected a token count"),
    ({"stages": [{"name": "a", "tokens": 64.5, "weights": {"web": 1}}]}, "whole number of tokens"),
    ({"stages": [{"name": "a", "tokens": 64, "weights": {"web": 1}}] * 2}, "appears twice"),
    ({"stages": []}, "at least one stage"),
    ({"sources": {"img": {"kind": "media"}}}, "needs modality"),
    ({"sources": {"web": {"modality": "image"}}}, "are for media sources"),
    ({"sources": {"web": {"max_epochs": 0}}}, "sources.web.max_epochs"),
])
def test_config_errors_are_one_line(tmp_path, packed, over, fragment):
    path = mixture(tmp_path, packed, **over)
    with pytest.raises(MixtureError) as e:
        load_mixture(path)
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg and msg.startswith(path), msg


def test_config_tokens_notation_and_overrides(tmp_path, packed):
    path = mixture(tmp_path, packed, stages=[{"name": "a", "tokens": "1e3", "weights": {"web": 1}}])
    assert load_mixture(path).stages[0].tokens == 1000
    cfg = load_mixture(path, ["stages.0.tokens=2_048", "seed=9", "sources.web.max_epochs=1.5"])
    assert (cfg.stages[0].tokens, cfg.seed, cfg.max_epochs("web"), cfg.max_epochs("wiki")) == (2048, 9, 1.5, 4.0)
    with pytest.raises(MixtureError, match="no such place"):
        load_mixture(path, ["stages.5.tokens=1"])
    with pytest.raises(MixtureError, match="expected key.path=value"):
        load_mixture(path, ["seed"])


def test_apportion_is_exact_and_fair():
    rng = np.random.default_rng(0)
    for _ in range(300):
        w = rng.random(int(rng.integers(1, 7))) * (rng.random() < 0.5 or 1)
        w[rng.random(len(w)) < 0.2] = 0
        if w.sum() == 0:
            w[0] = 1
        m = int(rng.integers(0, 10_000))
        c = apportion(m, list(w))
        assert sum(c) == m
        q = m * w / w.sum()
        assert all(math.floor(x) <= y <= math.floor(x) + 1 for x, y in zip(q, c))
        assert all(y == 0 for x, y in zip(w, c) if x == 0)
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]


def test_plan_counts_offsets_and_table(tmp_path, packed):
    plan = plan_mixture(mixture(tmp_path, packed))
    main, anneal = plan.stages
    assert (main.sequences, main.start, anneal.sequences, anneal.start) == (200, 0, 64, 200)
    assert main.counts == {"web": 100, "wiki": 50, "books": 30, "code": 20}
    assert sum(anneal.counts.values()) == 64 and anneal.offsets == main.counts
    m = packed[1]["sources"]
    code_train = m["code"]["sequences"] - 3
    assert plan.data.sources["code"].train_sequences == code_train
    assert plan.epochs(None, "code") == pytest.approx((20 + anneal.counts["code"]) / code_train)
    t = plan.table()
    assert "stage 2 anneal: 64 sequences = 2,048 tokens; examples [200, 264), tokens [6,400, 8,448)" in t
    assert f"{plan.data.sources['web'].train_tokens(S):,}" in t and "EXCEEDS" not in t


def test_budget_rounding(tmp_path, packed):
    path = mixture(tmp_path, packed, stages=[{"name": "a", "tokens": 100, "weights": {"web": 1}},
                                             {"name": "b", "tokens": 64, "weights": {"code": 1}}])
    plan = plan_mixture(path)
    assert plan.stages[0].sequences == 3 and plan.stages[1].start == 3   # 100 / 32 = 3.125 -> 3
    assert any("100 tokens rounded to 3 sequences of 32 = 96 tokens" in n for n in plan.notes)
    with pytest.raises(MixtureError, match="not a whole number of 32-token sequences; use 96 or 128"):
        plan_mixture(path, overrides=["budget_rounding=error"])


def test_over_budget_mixture_fails_with_a_readable_table(tmp_path, packed):
    path = mixture(tmp_path, packed, stages=[
        {"name": "main", "tokens": 200 * S, "weights": {"web": 0.5, "code": 0.5}},
        {"name": "anneal", "tokens": 64 * S, "weights": {"code": 1}}])
    with pytest.raises(MixtureError) as e:
        plan_mixture(path)
    msg = str(e.value)
    head, table = msg.split("\n", 1)
    code_train = packed[1]["sources"]["code"]["sequences"] - 3
    ep = (100 + 64) / code_train
    assert f"repetition cap exceeded: code {ep:.2f} epochs > max_epochs 2" in head
    assert "web" not in head                                       # within its cap
    code_total = [ln for ln in table.splitlines() if ln.split()[:1] == ["code"]][-1]
    assert code_total.split()[-2:] == ["EXCEEDS", "CAP"] and f"{ep:.2f}" in code_total and "164" in code_total
    web_total = [ln for ln in table.splitlines() if ln.split()[:1] == ["web"]][-1]
    assert web_total.endswith("ok")
    # the CLI prints the same and exits 2; without the cap problem it exits 0
    from mixtures.config import main

    assert main([path]) == 2
    assert main([path, "--set", "sources.code.max_epochs=10"]) == 0


def test_data_errors(tmp_path, packed):
    with pytest.raises(MixtureError, match="has no packed source 'poetry'"):
        plan_mixture(mixture(tmp_path, packed, sources={"poetry": {}}, stages=[
            {"name": "a", "tokens": 64, "weights": {"poetry": 1}}]))
    with pytest.raises(MixtureError, match="validation_sequences 999 leaves none"):
        plan_mixture(mixture(tmp_path, packed), overrides=["validation_sequences=999"])
    with pytest.raises(MixtureError, match="no token_manifest.json"):
        plan_mixture(mixture(tmp_path, packed), tokens_dir=str(tmp_path))
    other = tmp_path / "other"
    write_pack(other, {"extra": make_docs("extra", 5, 10, 40)}, S + 1)
    with pytest.raises(MixtureError, match="one sequence length"):
        plan_mixture(mixture(tmp_path, packed, sources={"web": {}, "extra": {"tokens_dir": str(other)}}, stages=[
            {"name": "a", "tokens": 64, "weights": {"web": 1, "extra": 1}}]))
    corpus = tmp_path / "corpus"
    write_corpus_manifest(corpus, "another-corpus")
    with pytest.raises(MixtureError, match="the corpus changed since packing"):
        plan_mixture(mixture(tmp_path, packed, corpus=str(corpus)))


def test_media_sources_are_planned_in_tokens_and_need_a_tokenizer_in_the_loader(tmp_path, packed):
    corpus = tmp_path / "corpus"
    write_corpus_manifest(corpus, "corpus-0", media={"image": {"photos": {"samples": 40, "tokens": 1600}}})
    srcs = {"web": {}, "img": {"kind": "media", "modality": "image", "media_source": "photos", "max_epochs": 2}}
    path = mixture(tmp_path, packed, corpus=str(corpus), sources=srcs, stages=[
        {"name": "a", "tokens": 100 * S, "weights": {"web": 0.9, "img": 0.1}},
        {"name": "b", "tokens": 20 * S, "weights": {"web": 1}}])
    plan = plan_mixture(path)
    assert plan.stages[0].counts["img"] == 10
    assert plan.epochs(None, "img") == pytest.approx(10 * S / 1600)
    assert "image media 'photos', 40 samples, 1,600 tokens" in plan.table()
    with pytest.raises(LoaderError, match="set tokenizer:"):     # packing media: tests/test_multimodal_packing.py
        MixtureSource(plan, 4)
    # over its cap, a media source fails validation like any other
    with pytest.raises(MixtureError, match="img 1.20 epochs > max_epochs 1"):
        plan_mixture(path, overrides=["stages.0.weights.img=0.6", "stages.0.weights.web=0.4", "sources.img.max_epochs=1"])
    # weight 0 everywhere: the loader trains on the text
    plan0 = plan_mixture(path, overrides=["stages.0.weights.img=0"])
    check_batch(MixtureSource(plan0, 4).next_batch(), 4, S, VOCAB)
    with pytest.raises(MixtureError, match="has no audio media"):
        plan_mixture(path, overrides=["sources.img.modality=audio"])


# ---- loader ------------------------------------------------------------------------------
def test_protocol_rows_and_loss_mask(tmp_path, packed):
    path = mixture(tmp_path, packed)
    for L in (S, S - 1):
        src = MixtureSource.from_config(path, 8, seq_len=L)
        assert isinstance(src, BatchSource)
        assert (src.batch_size, src.seq_len, src.vocab_size, src.source_names) == (8, L, VOCAB, list(SOURCES))
        n_eod = n_boundary = 0
        for step in range(6):
            rows = src.lineage(step)
            batch = src.next_batch()
            check_batch(batch, 8, L, VOCAB)
            for r in rows:
                b = r["row"]
                rec = expected_record(r["pieces"])
                assert batch["inputs"][b].tolist() == rec[:L].tolist()
                tgt = rec[1:L + 1].tolist() + ([PAD] if L == S else [])
                assert batch["targets"][b].tolist() == tgt
                assert (batch["source_ids"][b] == src.source_names.index(r["source"])).all()
                seg = np.zeros(S, int)
                pos = np.zeros(S, int)
                mask = np.zeros(S, int)
                for k, p in enumerate(r["pieces"], 1):
                    seg[p.start:p.start + p.length] = k
                    pos[p.start:p.start + p.length] = np.arange(p.length)
                    mask[p.start:p.start + p.length - 1] = 1      # the piece's last token predicts outside it
                assert batch["segment_ids"][b].tolist() == seg[:L].tolist()
                assert batch["positions"][b].tolist() == pos[:L].tolist()
                assert batch["loss_mask"][b].tolist() == mask[:L].tolist()
                eod = batch["inputs"][b] == EOD
                assert not batch["loss_mask"][b][eod].any()          # EOD never predicts the next document
                n_eod += int(eod.sum())
                n_boundary += len(r["pieces"]) - 1
        assert n_eod > 10 and n_boundary > 10                      # the data do exercise boundaries


def test_interleave_is_exact_even_and_monotone():
    rng = np.random.default_rng(1)
    for _ in range(60):
        counts = [int(x) for x in rng.integers(0, 40, size=int(rng.integers(1, 6)))]
        if not sum(counts):
            counts[0] = 3
        m = sum(counts)
        seq = [interleave(k, counts) for k in range(m)]
        for i, c in enumerate(counts):
            ranks = [r for s, r in seq if s == i]
            assert ranks == list(range(c))                           # exact counts, ranks in order
        p = np.array(counts) / m
        for k in range(1, m + 1):
            got = np.bincount([s for s, _ in seq[:k]], minlength=len(counts))
            assert np.all(np.abs(got - k * p) <= len(counts))       # evenly spread
    with pytest.raises(IndexError):
        interleave(10, [4, 6])


def test_realised_proportions_within_the_stated_bound(tmp_path, packed):
    """Every batch prefix of j examples of a stage: |count - j p| <= 5 sigma + 3 K,
    sigma the hypergeometric sd of the position inside its mixing window (K
    sources); window starts within K; stage totals equal the plan exactly."""
    path = mixture(tmp_path, packed, default_max_epochs=1000, sources={k: {} for k in SOURCES}, mixing_window=256,
                   stages=[
        {"name": "main", "tokens": 3000 * S, "weights": {"web": 0.45, "wiki": 0.2, "books": 0.3, "code": 0.05}},
        {"name": "anneal", "tokens": 1500 * S, "weights": {"web": 0.1, "wiki": 0.3, "books": 0.3, "code": 0.3}}])
    src = MixtureSource.from_config(path, 16)
    names = src.source_names
    K = len(names)
    n_train = {n: src.plan.data.sources[n].train_sequences for n in names}
    # the window shrinks to one epoch of the source that would wrap first
    main, anneal = src.plan.stages
    assert main.window == 256
    assert anneal.window == min(n_train[n] * 1500 // anneal.counts[n] for n in names) < 256

    def within(counts, j, p, m, w):
        a = (j // w) * w if j < m else j
        t, size = j - a, min(w, m - a)
        sigma = np.sqrt(t * p * (1 - p) * (size - t) / max(size - 1, 1))
        return np.abs(counts - j * p) <= 5 * sigma + 3 * K

    for st in src.plan.stages:
        where = [src.locate(e) for e in range(st.start, st.end)]
        seq = np.array([names.index(w["source"]) for w in where])
        p = np.array([st.weights[n] for n in names])
        for j in range(16, st.sequences + 1, 16):                  # every batch boundary
            assert within(np.bincount(seq[:j], minlength=K), j, p, st.sequences, st.window).all(), (st.name, j)
        for a in range(st.window, st.sequences, st.window):
            assert np.all(np.abs(np.bincount(seq[:a], minlength=K) - a * p) <= K)
        total = np.bincount(seq, minlength=K)
        assert total.tolist() == [st.counts[n] for n in names]
        assert np.all(np.abs(total - p * st.sequences) < 1)
        # inside a window the order is random, not the interleaving itself
        inter = np.array([interleave(k, [st.counts[n] for n in names])[0] for k in range(st.window)])
        assert (seq[:st.window] != inter).mean() > 0.3
        # the check can fail: the stage read in source order breaks it at once
        assert not within(np.bincount(np.sort(seq)[:160], minlength=K), 160, p, st.sequences, st.window).all()
        # a window reads at most about one epoch of a source: a record at most twice
        for a in range(0, st.sequences, st.window):
            for n in names:
                recs = [w["sequence"] for w in where[a:a + st.window] if w["source"] == n]
                assert max(np.bincount(recs), default=0) <= 2


def test_stage_two_starts_exactly_at_the_token_boundary_whatever_the_batch_size(tmp_path, packed):
    boundary = 45 * S                                              # 45 sequences: a batch straddles it
    path = mixture(tmp_path, packed, stages=[
        {"name": "one", "tokens": boundary, "weights": {"web": 0.5, "wiki": 0.5}},
        {"name": "two", "tokens": 30 * S, "weights": {"code": 1}}])
    streams = {}
    for bs in (1, 3, 4, 7, 16):
        src = MixtureSource.from_config(path, bs)
        code = src.source_names.index("code")
        rows = []
        while src.example + bs <= src.total_examples:
            rows.append(src.next_batch())
        ids = np.concatenate([b["source_ids"][:, 0] for b in rows])
        first = int(np.argmax(ids == code))
        assert first * S == boundary                               # the first stage-2 row is token 1,440
        assert (ids[first:] == code).all() and (ids[:first] != code).all()
        step, row = divmod(first, bs)
        assert src.lineage(step)[row]["stage"] == "two"
        if row:
            assert src.lineage(step)[row - 1]["stage"] == "one"     # the same batch holds both stages
        c = src.consumed()
        assert c["one"]["web"]["sequences"] + c["one"]["wiki"]["sequences"] == 45
        streams[bs] = np.concatenate([b["inputs"] for b in rows])
    n = min(len(v) for v in streams.values())
    for v in streams.values():                                     # one example stream, cut differently
        assert (v[:n] == streams[1][:n]).all()


def test_resume_at_any_step_continues_identically(tmp_path, packed):
    path = mixture(tmp_path, packed)
    ref = MixtureSource.from_config(path, 6)
    states, batches = [], []
    for _ in range(40):
        states.append(json.loads(json.dumps(ref.get_state())))   # through JSON, like a checkpoint
        batches.append(ref.next_batch())
    assert len(json.dumps(states[-1])) < 1000
    for k in list(range(0, 40, 3)) + [39]:
        src = MixtureSource.from_config(path, 6)
        src.set_state(states[k])
        for j in range(k, min(k + 4, 40)):
            got = src.next_batch()
            assert all((got[key] == batches[j][key]).all() for key in got), (k, j)
    # counters restore too, and a resumed run ends with the same counters
    src = MixtureSource.from_config(path, 6)
    src.set_state(states[17])
    for _ in range(17, 40):
        src.next_batch()
    assert src.get_state() == ref.get_state()
    # the state counts examples: another batch size resumes the same example stream
    other = MixtureSource.from_config(path, 4)
    other.set_state(states[10])
    a = np.concatenate([other.next_batch()["inputs"] for _ in range(3)])
    assert (a == np.concatenate([batches[10]["inputs"], batches[11]["inputs"]])).all()


def test_fingerprint_mismatch_at_resume_is_a_clear_error(tmp_path, packed):
    path = mixture(tmp_path, packed)
    src = MixtureSource.from_config(path, 4)
    src.next_batch()
    state = src.get_state()
    changed = MixtureSource.from_config(path, 4, overrides=["stages.1.weights.code=0.9"])
    with pytest.raises(LoaderError, match=r"the mixture plan .* changed since it was saved"):
        changed.set_state(state)
    with pytest.raises(LoaderError, match="split"):
        MixtureSource.from_config(path, 4, split="validation").set_state(state)
    with pytest.raises(LoaderError, match=r"seq_len \(32 -> 31\)"):
        MixtureSource.from_config(path, 4, seq_len=S - 1).set_state(state)
    with pytest.raises(LoaderError, match="mixture plan"):
        MixtureSource.from_config(path, 4, seed=99).set_state(state)
    # the same sources re-packed with one more document: the data changed
    d2 = tmp_path / "repacked"
    write_pack(d2, {**SOURCES, "web": SOURCES["web"] + make_docs("webx", 1, 50, 50)}, S)
    with pytest.raises(LoaderError, match=r"the packed data \(token manifest fingerprints\)"):
        MixtureSource.from_config(path, 4, tokens_dir=str(d2)).set_state(state)
    with pytest.raises(LoaderError, match="not a mixture loader state"):
        src.set_state({"batches": 3})
    bad = dict(state, consumed={"main": {"web": "lots"}})
    with pytest.raises(LoaderError, match="malformed consumed"):
        src.set_state(bad)


def test_repetition_follows_epochs_and_never_touches_validation(tmp_path, packed):
    path = mixture(tmp_path, packed, stages=[
        {"name": "a", "tokens": 40 * S, "weights": {"code": 1}},
        {"name": "b", "tokens": 40 * S, "weights": {"code": 0.5, "web": 0.5}}], sources={"web": {}, "code": {}})
    src = MixtureSource.from_config(path, 1)
    sd = src.plan.data.sources["code"]
    n = sd.train_sequences
    code = sorted(((w := src.locate(e))["stream_position"], w["sequence"], w["epoch"])
                  for e in range(80) if src.locate(e)["source"] == "code")
    assert [q for q, _, _ in code] == list(range(len(code)))       # the stream runs on across stages
    assert len(code) > n
    first, second = [r for q, r, _ in code if q < n], [r for q, r, _ in code if q >= n]
    assert sorted(first) == list(range(n))                         # every record once before any repeat
    assert len(set(second)) == len(second) and all(ep == q // n for q, _, ep in code)
    assert max(r for _, r, _ in code) < sd.train_sequences          # held-out sequences never trained on


def test_validation_split(tmp_path, packed):
    path = mixture(tmp_path, packed)
    val = MixtureSource.from_config(path, 8, split="validation")
    assert val.total_examples is None
    rows = [w for step in range(3) for w in val.lineage(step)]
    srcs = [w["source"] for w in rows]
    assert srcs[:8] == ["web", "wiki", "books", "code"] * 2           # round robin over sources
    for w in rows:
        sd = val.plan.data.sources[w["source"]]
        assert sd.train_sequences <= w["sequence"] < sd.sequences
    # a fresh validation source starts over: evaluations are comparable
    b1 = val.next_batch()
    b2 = MixtureSource.from_config(path, 8, split="validation").next_batch()
    assert all((b1[k] == b2[k]).all() for k in b1)
    # a document cut by the train/validation boundary is not scored in validation
    for w in rows:
        sd = val.plan.data.sources[w["source"]]
        if w["sequence"] != sd.train_sequences or w["pieces"][0].starts_doc:
            continue
        batch = val.examples(w["example"], 1)[0]
        first = w["pieces"][0]
        assert not batch["loss_mask"][0][:first.length].any()
        if len(w["pieces"]) > 1:
            assert batch["loss_mask"][0][first.length:].any()
        break
    else:
        pytest.fail("no source's validation range starts inside a document (test data too regular)")


def test_exhausted_mixture_is_a_clear_error(tmp_path, packed):
    path = mixture(tmp_path, packed, stages=[{"name": "a", "tokens": 10 * S, "weights": {"web": 1}}])
    src = MixtureSource.from_config(path, 4)
    src.next_batch()
    src.next_batch()
    with pytest.raises(LoaderError, match=r"batch needs examples 8..11 but the stages plan 10 \(320 tokens\)"):
        src.next_batch()
    with pytest.raises(LoaderError, match="seq_len must be 32 .* or 31"):
        MixtureSource.from_config(path, 4, seq_len=16)


def test_shuffled_range_is_grains_shuffle():
    import grain

    for n in (1, 5, 300, (1 << 16) + 3):
        plain = grain.MapDataset.range(n).shuffle(seed=11).repeat()
        cached = ShuffledRange(n, 11).repeat()
        idx = list(range(0, 3 * n, max(1, n // 97))) + [3 * n - 1]
        assert [cached[i] for i in idx] == [plain[i] for i in idx]


# ---- inspection -----------------------------------------------------------------------------
def test_inspect_lineage_and_planned_vs_actual(tmp_path, packed, capsys):
    from mixtures.inspect import main

    path = mixture(tmp_path, packed)
    src = MixtureSource.from_config(path, 8)
    rows = src.lineage(3)
    assert main([path, "--step", "3", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "batch 3 = examples [24, 32) = tokens [768, 1,024)" in out
    for r in rows:
        assert r["pieces"][0].doc_id in out
    # planned vs actual from a saved state equals the replayed index
    for _ in range(30):
        src.next_batch()
    state_file = tmp_path / "ckpt" / "30" / "data"
    state_file.mkdir(parents=True)
    (state_file / "metadata").write_text(json.dumps({"train": {"fingerprint": src.fingerprint, "state": src.get_state()}}))
    assert src.replay_consumed(240) == src.get_state()["consumed"]
    assert main([path, "--report", "--state", str(tmp_path / "ckpt")]) == 0
    from_state = capsys.readouterr().out
    assert main([path, "--report", "--step", "30", "--batch-size", "8"]) == 0
    replayed = capsys.readouterr().out
    assert from_state.split("planned vs actual", 1)[1] == replayed.split("planned vs actual", 1)[1]
    assert "stage 1 main: 200 of 200 sequences consumed (complete)" in replayed
    assert "stage 2 anneal: 40 of 64 sequences consumed (in progress)" in replayed
    web = [ln.split() for ln in replayed.splitlines() if ln.split()[:1] == ["web"]][0]
    assert web[3:] == ["100", "3,200", "100", "3,200", "+0"]
    assert main([path, "--step", "99", "--batch-size", "8"]) == 2
    assert "batch needs examples 792..799" in capsys.readouterr().err


def test_budget_capacity_of_a_mixture(tmp_path, packed, capsys):
    from mixtures.budget import main, mixture_capacity

    path = mixture(tmp_path, packed)
    plan = plan_mixture(path)
    cap = mixture_capacity(plan)
    # scaled to the capacity, the limiting source sits exactly at its cap, the others below theirs
    scale = cap.tokens / plan.total_tokens
    eps = {n: plan.epochs(None, n) * scale for n in plan.data.sources}
    assert eps[cap.limited_by] == pytest.approx(plan.data.sources[cap.limited_by].max_epochs)
    assert all(eps[n] <= plan.data.sources[n].max_epochs + 1e-9 for n in eps)
    assert cap.limited_by == "code"                                  # small source, max_epochs 2
    assert main(["--params", "1e5", "--mixture", path]) == 0         # 2M tokens: far beyond this corpus
    out = capsys.readouterr().out
    assert "cannot supply the Chinchilla budget" in out and "limited by code" in out
