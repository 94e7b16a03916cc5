"""Mixture loader throughput on one core, side by side with plain Grain reading the
same shards, against what the trainer's CPU preset consumes.

    PYTHONPATH=. python bench/bench_loader.py [--quick]

Packed data are synthetic (documents of 50..3000 tokens, packed like
tokenizer.pack, written with tokenizer.format.encode_record into ArrayRecord
shards with group_size:1), four sources.  Rows:

* ``mixture``: ``MixtureSource.next_batch()`` — a two-stage mixture, inputs /
  targets / segment_ids / positions / loss_mask / source_ids, counters;
* ``grain``: ``MapDataset.source(PackedSource).shuffle().batch()`` over one source —
  the same reads and decoding without stages, weights or row assembly (a baseline);
* ``large``: the mixture with stages of > 2^16 examples and a source of > 2^16
  sequences, where Grain's index_shuffle is used directly for every lookup (small
  ranges are memoised per epoch, see mixtures/loader.py).

The process is pinned to one core.  The trainer's CPU preset (configs/presets/cpu.yaml:
batch 16 x seq 256, a ~6M-parameter model) consumes roughly 5-20k tokens/s on this
class of machine; the ratio column assumes 10k tokens/s (goal: >= 20x).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TRAINER_TOKENS_PER_S = 10_000.0
SOURCES = {"web": 0.45, "wiki": 0.25, "books": 0.15, "code": 0.15}


def write_pack(root: str, seq_len: int, sequences: dict[str, int], seed: int = 0) -> None:
    import hashlib
    import json

    from array_record.python.array_record_module import ArrayRecordWriter

    from tokenizer.format import TOKEN_MANIFEST, Segment, encode_record, manifest_fingerprint

    rng = np.random.default_rng(seed)
    S = seq_len
    m = {"format": "corpusforge-packed/1", "record_format": "CFPK/1", "seq_len": S, "token_dtype": "uint16",
         "add_bos": False, "special_ids": {"pad": 0, "eod": 1, "bos": 2, "unk": 3},
         "tokenizer": {"model_sha256": "b" * 64, "vocab_size": 32000}, "corpus": {"manifest_hash": "bench"},
         "sources": {}}
    for src, n_seq in sequences.items():
        n_tok = n_seq * S
        lengths = []
        while sum(lengths) < n_tok:
            lengths.append(int(rng.integers(50, 3001)))
        lengths[-1] -= sum(lengths) - n_tok
        if lengths[-1] < 2:
            lengths[-2] += lengths.pop()
        stream = rng.integers(4, 32000, size=n_tok).astype(np.uint32)
        ends = np.cumsum(lengths)
        stream[ends - 1] = 1                                     # EOD
        starts = ends - np.asarray(lengths)
        rel = f"sequences/{src}/{src}-00000-of-00001.array_record"
        os.makedirs(os.path.join(root, "sequences", src), exist_ok=True)
        w = ArrayRecordWriter(os.path.join(root, rel), "group_size:1")
        d = 0
        for s in range(n_seq):
            lo, hi = s * S, (s + 1) * S
            segs, pos = [], 0
            while lo + pos < hi:
                off = lo + pos - starts[d]
                length = int(min(lengths[d] - off, hi - lo - pos))
                segs.append(Segment(pos, length, int(off), lengths[d], f"{src}-{d}"))
                pos += length
                if off + length == lengths[d]:
                    d += 1
            w.write(encode_record(stream[lo:hi], segs, width=2))
        w.close()
        data = open(os.path.join(root, rel), "rb").read()
        m["sources"][src] = {"documents": len(lengths), "tokens": n_tok, "sequences": n_seq, "pad_tokens": 0,
                             "shards": [{"path": rel, "first_sequence": 0, "sequences": n_seq, "tokens": n_tok,
                                         "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}],
                             "doc_index": []}
    m["fingerprint"] = manifest_fingerprint(m)
    with open(os.path.join(root, TOKEN_MANIFEST), "w") as f:
        json.dump(m, f)


def write_mixture(path: str, tokens_dir: str, seq_len: int, stage_sequences: tuple[int, int]) -> str:
    import yaml

    cfg = {"name": "bench", "seed": 0, "tokens_dir": tokens_dir, "validation_sequences": 8,
           "default_max_epochs": 1000,
           "sources": {s: {} for s in SOURCES},
           "stages": [{"name": "main", "tokens": stage_sequences[0] * seq_len, "weights": SOURCES},
                      {"name": "anneal", "tokens": stage_sequences[1] * seq_len,
                       "weights": {"web": 0.2, "wiki": 0.2, "books": 0.3, "code": 0.3}}]}
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def time_it(fn, tokens_per_call: int, min_seconds: float, warm_calls: int = 20, min_calls: int = 5):
    """(first call seconds, steady tokens/s, calls).  The first calls fill the memoised
    permutations (mixing windows, epochs of small sources) and open the shards."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(warm_calls):
        fn()
    n, t0 = 0, time.perf_counter()
    while n < min_calls or time.perf_counter() - t0 < min_seconds:
        fn()
        n += 1
    return first, n * tokens_per_call / (time.perf_counter() - t0), n


def main(argv=None) -> int:
    import grain

    from mixtures.loader import MixtureSource
    from tokenizer.format import PackedSource

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller data, shorter timings")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    secs = 0.5 if args.quick else 3.0
    shapes = [(16, 256), (8, 512), (16, 1024)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b, L in shapes:
            S = L + 1                                            # packed at seq_len + 1: inputs/targets shifted
            d = os.path.join(tmp, f"p{S}")
            n = 400 if args.quick else 3000
            t = time.time()
            write_pack(d, S, {s: int(n * w) + 16 for s, w in SOURCES.items()})
            print(f"packed {n:,} x {S} tokens in {time.time() - t:.1f}s", file=sys.stderr)
            mix = write_mixture(os.path.join(tmp, f"m{S}.yaml"), d, S, (40_000, 10_000))
            t = time.perf_counter()
            src = MixtureSource.from_config(mix, b, seq_len=L)
            build = time.perf_counter() - t
            first, tps, calls = time_it(src.next_batch, b * L, secs)
            rows.append(("mixture", f"{b} x {L}", tps, calls, build + first))
            ds = grain.MapDataset.source(PackedSource(d, "web")).shuffle(seed=0).repeat().batch(b)
            it = iter(range(10**9))
            first, tps, calls = time_it(lambda: ds[next(it)], b * L, secs)
            rows.append(("grain", f"{b} x {L}", tps, calls, first))
        # large index domains: Grain's index_shuffle on every lookup
        b, L = 16, 256
        S = L + 1
        d = os.path.join(tmp, "large")
        big = 70_000 if not args.quick else (1 << 16) + 100
        t = time.time()
        write_pack(d, S, {"web": big, "wiki": 2000, "books": 2000, "code": 2000})
        print(f"packed {big + 6000:,} x {S} tokens in {time.time() - t:.1f}s", file=sys.stderr)
        mix = write_mixture(os.path.join(tmp, "large.yaml"), d, S, (200_000, 100_000))
        t = time.perf_counter()
        src = MixtureSource.from_config(mix, b, seq_len=L)
        build = time.perf_counter() - t
        first, tps, calls = time_it(src.next_batch, b * L, secs)
        rows.append(("large", f"{b} x {L}", tps, calls, build + first))

    print(f"loader throughput on one core (process pinned): steady tokens/s of next_batch() after 20 warm-up "
          f"batches; trainer CPU preset assumed to consume {TRAINER_TOKENS_PER_S:,.0f} tokens/s")
    hdr = ("loader", "batch x seq", "tokens/s", "batches", "vs grain", "vs trainer", "startup s")
    print(f"{hdr[0]:<8} {hdr[1]:>11} {hdr[2]:>12} {hdr[3]:>8} {hdr[4]:>9} {hdr[5]:>10} {hdr[6]:>9}")
    grain_tps = {shape: tps for name, shape, tps, _, _ in rows if name == "grain"}
    for name, shape, tps, calls, start in rows:
        vs_grain = f"{tps / grain_tps[shape]:.2f}x" if shape in grain_tps else "-"
        print(f"{name:<8} {shape:>11} {tps:>12,.0f} {calls:>8} {vs_grain:>9} {tps / TRAINER_TOKENS_PER_S:>9.0f}x "
              f"{start:>9.2f}")
    worst = min(tps for name, _, tps, _, _ in rows if name != "grain")
    print(f"slowest mixture row: {worst / TRAINER_TOKENS_PER_S:.0f}x the assumed trainer consumption "
          f"({'meets' if worst >= 20 * TRAINER_TOKENS_PER_S else 'MISSES'} the 20x goal); startup = building the "
          "loader + its first batch (grain: first batch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
