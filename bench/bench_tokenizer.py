"""Encode throughput: our Beam encode+pack job vs SentencePiece alone vs HF `tokenizers`,
tokens/s per core on the same text with the same vocabulary.

    python bench/bench_tokenizer.py [--corpus DIR] [--tokenizer DIR] [--vocab 32000]

Without ``--corpus`` the corpus is built from ../shared/dev_corpus with
``pipelines/build_corpus.py``; without ``--tokenizer`` one is trained on it with
``tokenizer.train`` (``--no-compare``).  HF ``tokenizers`` (the ``bench`` extra,
never imported by the toolkit) gets the *same* unigram vocabulary and scores,
byte fallback and user-defined pieces, so both encode the same text into (nearly)
the same tokens; the table says how many documents tokenize identically.

Rows (all single-threaded, so tokens/s is per core):
* ``tokenizer.pack (Beam job)``: the whole job — read Parquet, encode, place,
  pack, write ArrayRecord shards — DirectRunner, one worker; per wall second and
  per CPU second of the job process.
* ``Tokenizer.encode``: our lossless wrapper, one document at a time.
* ``SentencePiece batch``: ``SentencePieceProcessor.encode(list, num_threads=1)``.
* ``HF tokenizers batch``: ``Tokenizer.encode_batch`` with RAYON_NUM_THREADS=1.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"          # HF tokenizers: one core
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEV = os.path.join(os.path.dirname(ROOT), "shared", "dev_corpus", "text", "corpus.jsonl")
ENV = dict(os.environ, PYTHONPATH=ROOT)


def sh(args: list[str]) -> tuple[float, float]:
    """Run a command; (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env=ENV, cwd=ROOT)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def hf_from_sp(tok):
    """An HF `tokenizers` Unigram model with the SentencePiece model's pieces and scores."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    sp = tok.sp
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    hf = Tokenizer(models.Unigram(vocab, unk_id=tok.unk_id, byte_fallback=True))
    # split=False: one Viterbi pass over the whole text like SentencePiece (split=True
    # would cut at every space and lose SentencePiece's whitespace-run pieces).
    hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=False)
    hf.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    user = tok.meta.get("config", {}).get("train", {}).get("user_defined_symbols", [])
    hf.add_tokens([AddedToken(u, normalized=False, special=False) for u in user])
    return hf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", help="built corpus dir (default: build one from ../shared/dev_corpus)")
    ap.add_argument("--tokenizer", help="tokenizer dir (default: train one on the corpus)")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq-len", type=int, default=1024)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench_tok_")
    corpus = args.corpus
    if not corpus:
        if not os.path.exists(DEV):
            print("no --corpus and ../shared/dev_corpus is absent: nothing to measure")
            return 0
        corpus = os.path.join(work, "corpus")
        sh([sys.executable, "pipelines/build_corpus.py", "--input", f"dev={DEV}", "--output", corpus, "--no-report"])
    tok_dir = args.tokenizer
    if not tok_dir:
        tok_dir = os.path.join(work, "tokenizer")
        wall, _ = sh([sys.executable, "-m", "tokenizer.train", "--corpus", corpus, "--output", tok_dir, "--no-compare",
                      "--set", f"train.vocab_size={args.vocab}"])
        print(f"(trained a {args.vocab}-piece unigram tokenizer in {wall:.0f}s)")

    import pyarrow.parquet as pq

    from tokenizer.sp import Tokenizer

    tok = Tokenizer.load(tok_dir)
    texts = []
    for f in sorted(os.listdir(os.path.join(corpus, "text"))):
        texts += pq.read_table(os.path.join(corpus, "text", f), columns=["text"]).column("text").to_pylist()
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    rows = []

    # the Beam job, end to end, one worker
    packed = os.path.join(work, "packed")
    wall, cpu = sh([sys.executable, "-m", "tokenizer.pack", "--corpus", corpus, "--tokenizer", tok_dir, "--output",
                    packed, "--seq-len", str(args.seq_len), "--allow-corpus-mismatch", "--direct_num_workers=1",
                    "--direct_running_mode=in_memory"])
    tm = json.load(open(os.path.join(packed, "token_manifest.json")))
    job_tokens = tm["totals"]["tokens"] - tm["totals"]["documents"]  # text tokens (EOD excluded)
    rows.append(("tokenizer.pack (Beam job), per wall s", job_tokens, wall))
    rows.append(("tokenizer.pack (Beam job), per CPU s", job_tokens, cpu))

    t = time.perf_counter()
    ours = [tok.encode(x) for x in texts]
    rows.append(("Tokenizer.encode (ours, lossless)", sum(map(len, ours)), time.perf_counter() - t))

    t = time.perf_counter()
    raw = tok.sp.encode(texts, num_threads=1)
    rows.append(("SentencePiece batch, 1 thread", sum(map(len, raw)), time.perf_counter() - t))

    try:
        hf = hf_from_sp(tok)
    except ImportError:
        print("HF tokenizers is not installed (pip install '.[bench]'): its row is skipped")
        hf = None
    same = None
    if hf is not None:
        t = time.perf_counter()
        enc = hf.encode_batch(texts, add_special_tokens=False)
        rows.append(("HF tokenizers encode_batch, 1 thread", sum(len(e.ids) for e in enc), time.perf_counter() - t))
        same = sum(1 for a, e in zip(ours, enc) if a == e.ids)

    print(f"\ncorpus: {len(texts):,} documents, {nbytes / 1e6:.1f} MB; tokenizer {tok.vocab_size:,} pieces "
          f"({tok.sha256[:12]}); 1 core each\n")
    print(f"{'encoder':<42} {'tokens':>12} {'seconds':>8} {'tokens/s/core':>14} {'MB/s':>6}")
    for name, n, secs in rows:
        print(f"{name:<42} {n:>12,} {secs:>8.2f} {n / secs:>14,.0f} {nbytes / 1e6 / secs:>6.2f}")
    if same is not None:
        print(f"\nHF tokenizers gives the same ids as SentencePiece for {same:,} of {len(texts):,} documents "
              f"(tokens: HF {rows[-1][1]:,} vs SentencePiece {rows[-2][1]:,}).")
    print(f"Beam job share of SentencePiece's own speed: {rows[0][1] / rows[0][2] / (rows[3][1] / rows[3][2]):.0%} "
          f"(wall), {rows[1][1] / rows[1][2] / (rows[3][1] / rows[3][2]):.0%} (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
