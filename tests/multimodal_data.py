"""Test data for the multimodal tests, built once per session:

* a corpus of the shipped media sample (images, WebDataset pairs, audio, video, one
  interleaved document) through the real media branch of ``build_corpus``, with token
  costs small enough for short test sequences (image_max_tokens 24, 12.5 audio
  tokens/s, 3 video frames; dedup off so every sample stays);
* a small SentencePiece tokenizer (real training, UDHR English + the captions) with the
  modality control symbols;
* packed text (the UDHR in a few languages, written with ``tests/mixtures_data.write_pack``)
  tied to that corpus and tokenizer;
* ``mixture(path, weights)``: a mixture YAML over text + every media modality.
"""
from __future__ import annotations

import json
import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEDIA = os.path.join(ROOT, "data", "sample", "media")
UDHR = os.path.join(ROOT, "tokenizer", "data", "udhr.jsonl")
SEQ = 129                         # packed sequence length (trainer seq_len 128)
COSTS = ["--set=media.tokens.image_max_tokens=24", "--set=media.tokens.audio_tokens_per_s=12.5",
         "--set=media.video.n_frames=3", "--set=media.dedup.enabled=false"]
MEDIA_SOURCES = {"img": ("image", "media"), "pairs": ("image", "media_pairs"), "aud": ("audio", "media"),
                 "vid": ("video", "media"), "doc": ("interleaved", "media")}


def build(base: str) -> dict:
    import numpy as np

    from pipelines import build_corpus
    from tests.conftest import ALL_FILTERS_OFF
    from tests.mixtures_data import write_pack
    from tokenizer.config import load_config
    from tokenizer.format import manifest_fingerprint
    from tokenizer.sp import Tokenizer, train_model

    corpus = os.path.join(base, "corpus")
    text_dir = os.path.join(base, "text_in")
    os.makedirs(text_dir, exist_ok=True)
    with open(os.path.join(text_dir, "note.txt"), "w") as f:
        f.write("A small text document so the corpus has a text part.\n")
    build_corpus.run(["--input", f"media={MEDIA}/manifest.jsonl", "--input", f"media_pairs={MEDIA}/pairs.tar",
                      "--input", f"text={text_dir}", "--output", corpus, *ALL_FILTERS_OFF, *COSTS])
    manifest = json.load(open(os.path.join(corpus, "manifest.json")))

    # tokenizer: English UDHR + every caption of the sample
    lines = []
    for line in open(UDHR, encoding="utf-8"):
        d = json.loads(line)
        if d["lang"] in ("en", "fr", "de"):
            lines += [x for x in d["text"].split("\n") if x.strip()]
    for line in open(os.path.join(MEDIA, "manifest.jsonl")):
        d = json.loads(line)
        lines += [t for t in [d.get("caption"), d.get("transcript")] + list(d.get("texts") or []) if t]
    sample = os.path.join(base, "sample.txt")
    with open(sample, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    tok_dir = os.path.join(base, "tokenizer")
    os.makedirs(tok_dir)
    cfg = load_config(overrides=["train.vocab_size=700", "train.num_threads=1"])
    train_model([sample], cfg.train, 4096, os.path.join(tok_dir, "spm.model"), label="mm-test")
    proto = open(os.path.join(tok_dir, "spm.model"), "rb").read()
    tok = Tokenizer(proto)
    json.dump({"model_sha256": tok.sha256, "vocab_size": tok.vocab_size, "special_ids": tok.special_ids()},
              open(os.path.join(tok_dir, "tokenizer.json"), "w"))

    # packed text from that tokenizer, tied to the corpus
    docs: dict[str, list] = {}
    for line in open(UDHR, encoding="utf-8"):
        d = json.loads(line)
        if d["lang"] in ("en", "fr", "de"):
            out = docs.setdefault(d["lang"], [])
            out.append((f"{d['lang']}-{len(out)}", np.array(tok.encode(d["text"]) + [tok.eod_id], np.uint32)))
    tokens = os.path.join(base, "tokens")
    m = write_pack(tokens, docs, SEQ, corpus_hash=manifest["manifest_hash"], tokenizer_sha=tok.sha256)
    m["tokenizer"]["vocab_size"] = tok.vocab_size
    m["fingerprint"] = manifest_fingerprint(m)
    json.dump(m, open(os.path.join(tokens, "token_manifest.json"), "w"))
    return {"corpus": corpus, "tokenizer": tok_dir, "tokens": tokens, "manifest": manifest, "tok": tok,
            "text_sources": list(docs)}


def mixture(data: dict, path: str, weights: dict[str, float], *, tokens: int = SEQ * 64, max_epochs: float = 1000,
            seed: int = 0, stages: int = 1) -> str:
    sources = {n: {} for n in data["text_sources"]}
    for n, (mod, src) in MEDIA_SOURCES.items():
        sources[n] = {"kind": "media", "modality": mod, "media_source": src, "max_epochs": max_epochs}
    cfg = {"name": "mm-test", "seed": seed, "tokens_dir": data["tokens"], "corpus": data["corpus"],
           "tokenizer": data["tokenizer"], "validation_sequences": 1, "default_max_epochs": max_epochs,
           "sources": sources,
           "stages": [{"name": f"s{i}", "tokens": tokens, "weights": weights} for i in range(stages)]}
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


@pytest.fixture(scope="session")
def mm_data(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("mm_data")))
