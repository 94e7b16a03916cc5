"""Test data for the mixture tests: packed directories written directly with
``tokenizer.format.encode_record`` (the same packing rule as ``tokenizer.pack``:
documents concatenated per source, cut into ``seq_len`` sequences, the last one
padded), a corpus manifest with media token counts, and mixture YAML files."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import yaml

from tokenizer.format import TOKEN_MANIFEST, Segment, encode_record, manifest_fingerprint

PAD, EOD = 0, 1
VOCAB = 3000


def make_docs(source: str, n: int, lo: int, hi: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """``n`` documents of ``lo..hi`` tokens (EOD included) with ids ``<source>-<i>``."""
    rng = np.random.default_rng([seed, sum(source.encode())])
    out = []
    for i in range(n):
        k = int(rng.integers(lo, hi + 1))
        toks = np.concatenate([rng.integers(4, VOCAB, size=k - 1), [EOD]]).astype(np.uint32)
        out.append((f"{source}-{i}", toks))
    return out


def write_pack(root, sources: dict[str, list[tuple[str, np.ndarray]]], seq_len: int, *, per_shard: int = 7,
               corpus_hash: str = "corpus-0", tokenizer_sha: str = "t" * 64) -> dict[str, Any]:
    from array_record.python.array_record_module import ArrayRecordWriter

    root = str(root)
    S = seq_len
    m: dict[str, Any] = {
        "format": "corpusforge-packed/1", "record_format": "CFPK/1", "seq_len": S, "token_dtype": "uint16",
        "add_bos": False, "special_ids": {"pad": PAD, "eod": EOD, "bos": 2, "unk": 3},
        "tokenizer": {"model_sha256": tokenizer_sha, "vocab_size": VOCAB},
        "corpus": {"manifest_hash": corpus_hash}, "sources": {},
    }
    for src, docs in sources.items():
        stream = np.concatenate([t for _, t in docs])
        starts = np.cumsum([0] + [len(t) for _, t in docs])
        n_tok = len(stream)
        n_seq = -(-n_tok // S)
        recs = []
        for s in range(n_seq):
            lo, hi = s * S, min((s + 1) * S, n_tok)
            segs, pos = [], 0
            d = int(np.searchsorted(starts, lo, side="right")) - 1
            while lo + pos < hi:
                doc_id, toks = docs[d]
                off = lo + pos - starts[d]
                length = int(min(len(toks) - off, hi - lo - pos))
                segs.append(Segment(pos, length, int(off), len(toks), doc_id))
                pos += length
                d += 1
            pad = S - (hi - lo)
            toks = np.concatenate([stream[lo:hi], np.full(pad, PAD, np.uint32)])
            recs.append(encode_record(toks, segs, num_pad=pad, width=2))
        shards = []
        os.makedirs(os.path.join(root, "sequences", src), exist_ok=True)
        n_sh = -(-n_seq // per_shard)
        for j in range(n_sh):
            a, b = j * per_shard, min((j + 1) * per_shard, n_seq)
            rel = f"sequences/{src}/{src}-{j:05d}-of-{n_sh:05d}.array_record"
            w = ArrayRecordWriter(os.path.join(root, rel), "group_size:1")
            for r in recs[a:b]:
                w.write(r)
            w.close()
            data = open(os.path.join(root, rel), "rb").read()
            shards.append({"path": rel, "first_sequence": a, "sequences": b - a,
                           "tokens": int(min(b * S, n_tok) - a * S), "bytes": len(data),
                           "sha256": hashlib.sha256(data).hexdigest()})
        m["sources"][src] = {"documents": len(docs), "tokens": int(n_tok), "sequences": n_seq,
                             "pad_tokens": n_seq * S - n_tok, "shards": shards, "doc_index": []}
    m["fingerprint"] = manifest_fingerprint(m)
    with open(os.path.join(root, TOKEN_MANIFEST), "w") as f:
        json.dump(m, f)
    return m


def write_corpus_manifest(root, manifest_hash: str = "corpus-0", media: dict[str, dict[str, dict]] | None = None):
    """``media``: modality -> source -> {samples, tokens}."""
    os.makedirs(root, exist_ok=True)
    m: dict[str, Any] = {"format": "corpus-manifest/1", "manifest_hash": manifest_hash, "sources": {}}
    if media:
        m["media"] = {"format": "corpusforge-media/1",
                      "modalities": {mod: {"sources": srcs, "tokens": sum(s["tokens"] for s in srcs.values())}
                                     for mod, srcs in media.items()}}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(m, f)


def write_mixture(path, cfg: dict[str, Any]) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return str(path)


def doc_tokens(sources: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    return {i: t for docs in sources.values() for i, t in docs}
