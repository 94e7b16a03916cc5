"""The mixture loader over the real thing: a corpus built by pipelines/build_corpus.py,
a SentencePiece tokenizer trained by tokenizer.train's steps, sequences packed by
tokenizer.pack (Beam) — then every row the loader hands out is checked against the
corpus documents re-encoded with the tokenizer."""
from __future__ import annotations

import importlib
import inspect
import json
import re
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import ALL_FILTERS_OFF

from mixtures.config import plan_mixture
from mixtures.loader import MixtureSource
from tests.mixtures_data import write_mixture

pytestmark = pytest.mark.slow

SEQ = 65                     # packed length; the loader trains on 64 (inputs/targets shifted inside a record)
MODULES = ["argparse", "collections", "json", "csv", "datetime", "decimal", "fractions", "functools", "random",
           "logging", "pathlib", "re", "string", "textwrap", "typing", "statistics", "heapq", "bisect", "calendar",
           "difflib"]


def _members(mods):
    warnings.simplefilter("ignore", DeprecationWarning)
    for m in mods:
        mod = importlib.import_module(m)
        for k, v in sorted(vars(mod).items()):
            if not k.startswith("_") and getattr(v, "__module__", None) == mod.__name__ and inspect.getdoc(v):
                yield m, k, inspect.getdoc(v)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from pipelines.build_corpus import run as build
    from tokenizer.config import load_config
    from tokenizer.corpus import load_corpus_manifest
    from tokenizer.pack import run as pack
    from tokenizer.sample import run_sample
    from tokenizer.train import train_variant

    work = tmp_path_factory.mktemp("mix_e2e")
    raw = work / "raw"
    raw.mkdir()
    docs = {
        "code": [(f"code-{m}", inspect.getsource(importlib.import_module(m))[:6000]) for m in MODULES],
        "books": [(f"book-{m}", (inspect.getdoc(importlib.import_module(m)) or m) * 3) for m in MODULES],
        "web": [(f"web-{m}-{k}", f"{k}\n{d}") for m, k, d in _members(MODULES[:10])][:80],
        "wiki": [(f"wiki-{m}-{k}", f"{k}\n{d}") for m, k, d in _members(MODULES[10:])][:80],
    }
    for src, items in docs.items():
        with open(raw / f"{src}.jsonl", "w", encoding="utf-8") as f:
            for i, t in items:
                f.write(json.dumps({"id": i, "text": t, "lang_hint": "en"}) + "\n")
    corpus = work / "corpus"
    args = []
    for src in docs:
        args += ["--input", f"{src}={raw / (src + '.jsonl')}"]
    build(args + ["--output", str(corpus), "--no-report", *ALL_FILTERS_OFF])
    # tokenizer.train's sampling + training steps (its comparison tokenizer and report are not needed here)
    cfg = load_config(None, ["train.vocab_size=600", "train.num_threads=1"])
    stats = run_sample(str(corpus), str(work / "tok" / "sample"), cfg, [])
    train_variant(str(work / "tok" / "sample"), stats, "balanced", cfg, str(work / "tok"),
                  load_corpus_manifest(str(corpus)))
    pack(["--corpus", str(corpus), "--tokenizer", str(work / "tok"), "--output", str(work / "packed"),
          "--seq-len", str(SEQ), "--set", "pack.shard_target_bytes=20000"])
    mix = write_mixture(work / "mix.yaml", {
        "name": "e2e", "seed": 1, "tokens_dir": str(work / "packed"), "corpus": str(corpus),
        "validation_sequences": 4, "sources": {"web": {}, "wiki": {}, "books": {}, "code": {}},
        "stages": [
            {"name": "main", "tokens": 150 * SEQ, "weights": {"web": 0.4, "wiki": 0.3, "books": 0.2, "code": 0.1}},
            {"name": "anneal", "tokens": 50 * SEQ, "weights": {"web": 0.1, "wiki": 0.1, "books": 0.4, "code": 0.4}},
        ]})
    texts = {}
    for f in sorted((corpus / "text").glob("*.parquet")):
        for r in pq.read_table(f, columns=["id", "text"]).to_pylist():
            texts[r["id"]] = r["text"]
    return {"work": work, "mix": mix, "texts": texts, "tokenizer": str(work / "tok")}


def test_rows_are_the_corpus_documents(built):
    from tokenizer.pack import doc_tokens
    from tokenizer.sp import Tokenizer

    tok = Tokenizer.load(built["tokenizer"])
    plan = plan_mixture(built["mix"])
    assert plan.seq_len == SEQ and plan.data.tokenizer_sha256 == tok.sha256
    src = MixtureSource(plan, 8, seq_len=SEQ - 1)
    assert src.vocab_size == tok.vocab_size
    cache: dict[str, np.ndarray] = {}
    n_docs = n_eod = 0
    for step in range(25):                       # straddles the stage boundary at example 150
        rows = src.lineage(step)
        batch = src.next_batch()
        for r in rows:
            b = r["row"]
            want = []
            for p in r["pieces"]:
                if p.doc_id not in cache:
                    cache[p.doc_id] = doc_tokens(tok, built["texts"][p.doc_id], False)
                full = cache[p.doc_id]
                assert len(full) == p.doc_num_tokens
                want.append(full[p.doc_token_offset: p.doc_token_offset + p.length])
                n_docs += p.starts_doc
            want = np.concatenate(want)
            n = min(len(want), SEQ - 1)
            assert batch["inputs"][b][:n].tolist() == want[:n].tolist()
            assert batch["targets"][b][:len(want) - 1].tolist() == want[1:SEQ].tolist()
            eod = batch["inputs"][b] == tok.eod_id
            n_eod += int(eod.sum())
            assert not batch["loss_mask"][b][eod].any()
            assert r["sequence"] < plan.data.sources[r["source"]].train_sequences
    assert n_docs > 10 and n_eod > 10
    c = src.consumed()
    assert {k: v["sequences"] for k, v in c["main"].items()} == plan.stages[0].counts
    assert sum(v["sequences"] for v in c["anneal"].values()) == 200 - 150


def test_resume_validation_and_trainer_seam(built):
    import mixtures

    a = mixtures.build_batch_source(built["mix"], batch_size=4, seq_len=SEQ, seed=5, split="train")
    for _ in range(7):
        a.next_batch()
    state = json.loads(json.dumps(a.get_state()))
    want = [a.next_batch() for _ in range(5)]
    b = mixtures.build_batch_source(built["mix"], batch_size=4, seq_len=SEQ, seed=5, split="train")
    b.set_state(state)
    for w in want:
        got = b.next_batch()
        assert all((got[k] == w[k]).all() for k in w)
    other_seed = mixtures.build_batch_source(built["mix"], batch_size=4, seq_len=SEQ, seed=6, split="train")
    assert other_seed.fingerprint != a.fingerprint
    val = mixtures.build_batch_source(built["mix"], batch_size=8, seq_len=SEQ, seed=5, split="validation")
    batch = val.next_batch()
    assert set(batch["source_ids"][:, 0].tolist()) == {0, 1, 2, 3}
    for r in val.lineage(0):
        sd = val.plan.data.sources[r["source"]]
        assert sd.train_sequences <= r["sequence"] < sd.sequences


def test_inspect_prints_text(built, capsys):
    from mixtures.inspect import main

    assert main([built["mix"], "--step", "18", "--batch-size", "8", "--tokenizer", built["tokenizer"]]) == 0
    out = capsys.readouterr().out
    assert "main" in out and "anneal" in out                   # batch 18 = examples 144..151 straddles the boundary
    texts = [ln for ln in out.splitlines() if re.match(r"row +\d+: ['\"]", ln)]
    assert len(texts) == 8 and all(len(t) > 20 for t in texts)
