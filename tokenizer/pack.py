"""Encode a corpus and pack it into fixed-length training sequences (Apache Beam).

    python -m tokenizer.pack --corpus out/demo_corpus --tokenizer artifacts/tokenizer \\
        --output artifacts/tokens [--seq-len 1024] [--tfds-dir DIR] [Beam flags]

Per source, documents are put in a fixed order — ascending 64-bit
``blake2b(order_seed, source, id)``, a deterministic shuffle independent of input
files and workers — and their tokens (``[BOS] text EOD``) are concatenated and
cut into sequences of exactly ``seq_len`` tokens; the last sequence of a source is
padded (the pad count is recorded).  Documents longer than a sequence continue in
the next one; every piece keeps its document id and token offset.

Distributed like this (no step holds more than a bucket or a shard):

1. encode every document (one worker per file split) -> (source, key, id, tokens);
2. per source, total tokens -> the number of key-range buckets; per bucket, its
   tokens -> each bucket's start offset (a prefix sum over a few numbers);
3. per bucket (GroupByKey), documents sorted by key get their global offsets and
   are cut into pieces keyed by (source, shard) — shard = a fixed range of
   sequences;
4. per shard (GroupByKey), pieces are assembled into sequences and written to
   ``sequences/<source>/<source>-i-of-n.array_record`` (records: ``tokenizer/format.py``).

``token_manifest.json`` (written last; its presence means the pack is complete)
records per-source token/sequence/pad counts, per-language tokens, shards with
sha256, the tokenizer's sha256 and config hash, the corpus manifest hash, the
pack config and a fingerprint of all of it.  ``docs/<source>-*.parquet`` maps
each document to its token range and sequences.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import sys
import tempfile
import time
from typing import Any

import apache_beam as beam
import numpy as np

from tokenizer.cli import UsageError, check_beam_flags, ensure_importable, main_wrapper, setup_logging
from tokenizer.config import TokenizerConfig, load_config
from tokenizer.corpus import TEXT_COLUMNS, join, language_key, load_corpus_manifest, text_shards
from tokenizer.format import (
    MANIFEST_FORMAT,
    RECORD_FORMAT,
    TOKEN_MANIFEST,
    FingerprintMismatch,
    Segment,
    encode_record,
    manifest_fingerprint,
    token_width,
)
from tokenizer.sp import Tokenizer

log = logging.getLogger("tokenizer.pack")

OUTPUT_ENTRIES = ("sequences", "docs", TOKEN_MANIFEST, "pack_errors.json")
ORDER_DOC = "ascending blake2b-64(str(order_seed), source, id) >> 1, ties by id"


def doc_key(seed: int, source: str, doc_id: str) -> int:
    from filters.schema import stable_hash

    return int(stable_hash(str(seed), source, doc_id, size=8), 16) >> 1  # 63 bits: Beam's int coder is signed


def doc_tokens(tok: Tokenizer, text: str, add_bos: bool) -> np.ndarray:
    """The token stream of one document: ``[BOS] encode(text) EOD`` as uint32."""
    ids = tok.encode(text)
    head = [tok.bos_id] if add_bos else []
    return np.asarray(head + ids + [tok.eod_id], dtype=np.uint32)


def bucket_of(key: int, n_buckets: int) -> int:
    """Key-range bucket: keys in bucket b all precede keys in bucket b + 1."""
    return (key * n_buckets) >> 63


def seqs_per_shard(seq_len: int, width: int, target_bytes: int) -> int:
    return max(1, target_bytes // (seq_len * width + 64))


def _sum_tuples(values):
    acc = None
    for v in values:
        acc = list(v) if acc is None else [a + b for a, b in zip(acc, v)]
    return tuple(acc) if acc is not None else ()


# ----------------------------------------------------------------- DoFns
class EncodeFn(beam.DoFn):
    """doc -> (source, key, id, uint32 token bytes); stats tagged 'stats'."""

    def __init__(self, tok: Tokenizer, cfg: TokenizerConfig):
        self._tok = tok
        self._cfg = cfg

    def setup(self):
        from tokenizer.cli import Progress

        self._progress = Progress("encode (this worker)")

    def process(self, doc):
        toks = doc_tokens(self._tok, doc["text"], self._cfg.pack.add_bos)
        self._progress.add(documents=1, tokens=len(toks))
        src = doc["source"]
        lang = language_key(doc, self._cfg.sample.lang_metadata_keys, self._cfg.sample.base_language)
        yield beam.pvalue.TaggedOutput(
            "stats", ((src, lang), (1, len(toks), len(doc["text"].encode("utf-8", "surrogatepass")))))
        yield src, doc_key(self._cfg.pack.order_seed, src, doc["id"]), doc["id"], toks.tobytes()


def place_bucket(kv, starts, seq_len: int, spsh: int):
    """One bucket's documents in key order -> doc-index rows (tag 'docs') and
    sequence pieces keyed by (source, shard)."""
    (src, b), items = kv
    off = starts[(src, b)]
    for _, _, doc_id, tb in sorted(items, key=lambda e: (e[1], e[2])):
        n = len(tb) // 4
        first, last = off // seq_len, (off + n - 1) // seq_len
        yield beam.pvalue.TaggedOutput("docs", {
            "id": doc_id, "source": src, "token_start": off, "num_tokens": n,
            "first_sequence": first, "last_sequence": last})
        for s in range(first, last + 1):
            a = max(0, s * seq_len - off)
            z = min(n, (s + 1) * seq_len - off)
            yield (src, s // spsh), (s, off + a - s * seq_len, a, n, doc_id, tb[4 * a: 4 * z])
        off += n


class WriteSequencesFn(beam.DoFn):
    """((source, shard), pieces) -> one ArrayRecord shard; yields its description."""

    def __init__(self, out_dir: str, seq_len: int, spsh: int, width: int, pad_id: int, options: str):
        self._out, self._s, self._spsh, self._w = out_dir, seq_len, spsh, width
        self._pad, self._options = pad_id, options

    def process(self, kv, totals):
        from array_record.python.array_record_module import ArrayRecordWriter

        from pipelines.outputs import write_bytes

        (src, shard), pieces = kv
        S, spsh = self._s, self._spsh
        n_tokens = totals[src][1]
        n_seqs = math.ceil(n_tokens / S)
        n_shards = math.ceil(n_seqs / spsh)
        lo, hi = shard * spsh, min((shard + 1) * spsh, n_seqs)
        by_seq: dict[int, list] = {}
        for p in pieces:
            by_seq.setdefault(p[0], []).append(p)
        if set(by_seq) != set(range(lo, hi)):
            raise RuntimeError(f"{src} shard {shard}: sequences {sorted(set(range(lo, hi)) ^ set(by_seq))[:5]} "
                               f"are missing or unexpected (packing bug)")
        rel = f"sequences/{src}/{src}-{shard:05d}-of-{n_shards:05d}.array_record"
        fd, tmp = tempfile.mkstemp(suffix=".array_record")
        os.close(fd)
        real = 0
        try:
            writer = ArrayRecordWriter(tmp, self._options)
            for s in range(lo, hi):
                parts = sorted(by_seq[s], key=lambda p: p[1])
                segs, chunks, pos = [], [], 0
                for _, start, doc_off, doc_n, doc_id, tb in parts:
                    length = len(tb) // 4
                    segs.append(Segment(start, length, doc_off, doc_n, doc_id))
                    chunks.append(np.frombuffer(tb, dtype=np.uint32))
                    pos += length
                n_pad = S - pos
                if n_pad and s != n_seqs - 1:
                    raise RuntimeError(f"{src} sequence {s}: {n_pad} tokens missing (packing bug)")
                toks = np.concatenate(chunks + [np.full(n_pad, self._pad, np.uint32)])
                writer.write(encode_record(toks, segs, num_pad=n_pad, width=self._w))
                real += pos
            writer.close()
            with open(tmp, "rb") as f:
                data = f.read()
        finally:
            os.unlink(tmp)
        path = join(self._out, rel)
        if "://" not in path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        else:  # object stores need no directories
            write_bytes(path, data)
        yield {"source": src, "index": shard, "path": rel, "first_sequence": lo, "sequences": hi - lo,
               "tokens": real, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _doc_index_schema():
    import pyarrow as pa

    return pa.schema([
        pa.field("id", pa.string(), nullable=False), pa.field("source", pa.string(), nullable=False),
        pa.field("token_start", pa.int64(), nullable=False), pa.field("num_tokens", pa.int64(), nullable=False),
        pa.field("first_sequence", pa.int64(), nullable=False), pa.field("last_sequence", pa.int64(), nullable=False)])


def _check_shard_sha(item, corpus_dir):
    """Corpus text shard -> problem string or nothing (sha256 from the corpus manifest)."""
    from apache_beam.io.filesystems import FileSystems

    rel, want = item
    h = hashlib.sha256()
    with FileSystems.open(join(corpus_dir, rel)) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != want:
        yield f"corpus shard {rel}: sha256 differs from manifest.json (the corpus was modified after it was built)"


# ----------------------------------------------------------------- pipeline
def build_pack_pipeline(p, corpus_dir: str, manifest: dict[str, Any], tok: Tokenizer, cfg: TokenizerConfig,
                        out_dir: str, base: dict[str, Any]) -> None:
    from apache_beam.pvalue import AsDict, AsList, AsSingleton

    from pipelines.outputs import WriteShards, write_json

    pc = cfg.pack
    S = pc.seq_len
    width = token_width(tok.vocab_size, pc.token_dtype)
    spsh = seqs_per_shard(S, width, pc.shard_target_bytes)
    bucket_tokens = pc.bucket_tokens
    files = [join(corpus_dir, rel) for rel in text_shards(manifest)]
    sha_items = sorted((sh["path"], sh["sha256"]) for s in manifest["sources"].values() for sh in s.get("shards", []))

    problems = p | "CorpusShards" >> beam.Create(sha_items) | "VerifyShards" >> beam.FlatMap(_check_shard_sha, corpus_dir)
    enc = (
        p
        | "Files" >> beam.Create(files)
        | "ReadText" >> beam.io.ReadAllFromParquet(columns=TEXT_COLUMNS)
        | "Encode" >> beam.ParDo(EncodeFn(tok, cfg)).with_outputs("stats", main="docs")
    )
    docs, lang_stats = enc.docs, enc.stats
    lang_stats = lang_stats | "SumLang" >> beam.CombinePerKey(_sum_tuples)
    totals = (
        docs
        | "DocLen" >> beam.Map(lambda e: (e[0], (1, len(e[3]) // 4)))
        | "SumSource" >> beam.CombinePerKey(_sum_tuples)
    )

    def to_bucket(e, tot):
        nb = max(1, math.ceil(tot[e[0]][1] / bucket_tokens))
        return (e[0], bucket_of(e[1], nb)), e

    bucketed = docs | "Bucket" >> beam.Map(to_bucket, AsDict(totals))

    def starts_of(sizes):
        out, run = {}, {}
        for (src, b), n in sorted(sizes):
            out[(src, b)] = run.get(src, 0)
            run[src] = run.get(src, 0) + n
        return out

    starts = (
        bucketed
        | "BucketLen" >> beam.Map(lambda kv: (kv[0], len(kv[1][3]) // 4))
        | "SumBucket" >> beam.CombinePerKey(sum)
        | "BucketList" >> beam.combiners.ToList()
        | "Starts" >> beam.Map(starts_of)
    )
    placed = (
        bucketed
        | "GroupBucket" >> beam.GroupByKey()
        | "Place" >> beam.FlatMap(place_bucket, AsSingleton(starts), S, spsh).with_outputs("docs", main="pieces")
    )
    shards = (
        placed.pieces
        | "GroupShard" >> beam.GroupByKey()
        | "WriteShard" >> beam.ParDo(WriteSequencesFn(out_dir, S, spsh, width, tok.pad_id, pc.array_record_options),
                                     AsDict(totals))
    )
    doc_index = placed.docs | "WriteDocIndex" >> WriteShards(
        out_dir, "docs", _doc_index_schema(), prefix_fn=lambda r: r["source"], size_fn=lambda r: 64,
        target=64 * 1024 * 1024, compression="zstd", label="WriteDocIndex")

    def summary(_, totals_v, lang_v, shards_v, index_v, problems_v):
        problems = list(problems_v)
        sources: dict[str, Any] = {}
        for src, (n_docs, n_tok) in sorted(totals_v):
            n_seqs = math.ceil(n_tok / S)
            want = manifest["sources"].get(src, {}).get("documents")
            if want != n_docs:
                problems.append(f"source {src}: packed {n_docs} documents, the corpus manifest lists {want}")
            sh = sorted((x for x in shards_v if x["source"] == src), key=lambda x: x["index"])
            sources[src] = {
                "documents": n_docs, "tokens": n_tok, "sequences": n_seqs, "pad_tokens": n_seqs * S - n_tok,
                "sequences_per_shard": spsh,
                "shards": [{k: x[k] for k in ("path", "first_sequence", "sequences", "tokens", "bytes", "sha256")}
                           for x in sh],
                "doc_index": sorted(x["path"] for x in index_v if x["prefix"] == src),
                "languages": {}, "bytes": 0,
            }
            if sum(x["tokens"] for x in sh) != n_tok or sum(x["sequences"] for x in sh) != n_seqs:
                problems.append(f"source {src}: shards hold {sum(x['tokens'] for x in sh)} tokens in "
                                f"{sum(x['sequences'] for x in sh)} sequences, expected {n_tok} in {n_seqs}")
        for src in manifest["sources"]:
            if manifest["sources"][src].get("documents") and src not in sources:
                problems.append(f"source {src}: in the corpus manifest but nothing was packed")
        for (src, lang), (n_docs, n_tok, n_bytes) in sorted(lang_v):
            sources[src]["languages"][lang] = {"documents": n_docs, "tokens": n_tok, "bytes": n_bytes}
            sources[src]["bytes"] += n_bytes
        if problems:
            write_json(join(out_dir, "pack_errors.json"), {"problems": sorted(problems)})
            yield problems
            return
        tm = dict(base)
        tm["sources"] = sources
        tm["totals"] = {k: sum(v[k] for v in sources.values())
                        for k in ("documents", "tokens", "sequences", "pad_tokens", "bytes")}
        tm["fingerprint"] = manifest_fingerprint(tm)
        write_json(join(out_dir, TOKEN_MANIFEST), tm)
        yield []

    (
        p
        | "SummaryTrigger" >> beam.Create([None])
        | "WriteManifest" >> beam.FlatMap(summary, AsList(totals), AsList(lang_stats), AsList(shards),
                                          AsList(doc_index), AsList(problems))
    )


def clear_outputs(out: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    for entry in OUTPUT_ENTRIES:
        path = join(out, entry)
        if FileSystems.exists(path):
            FileSystems.delete([path])


def manifest_base(tok: Tokenizer, corpus_manifest: dict[str, Any], cfg: TokenizerConfig, allow_mismatch: bool) -> dict[str, Any]:
    width = token_width(tok.vocab_size, cfg.pack.token_dtype)
    return {
        "format": MANIFEST_FORMAT,
        "record_format": RECORD_FORMAT,
        "seq_len": cfg.pack.seq_len,
        "token_dtype": "uint16" if width == 2 else "uint32",
        "add_bos": cfg.pack.add_bos,
        "special_ids": {"pad": tok.pad_id, "eod": tok.eod_id, "bos": tok.bos_id, "unk": tok.unk_id},
        "order": ORDER_DOC,
        "pack_config": cfg.pack.output_settings(),
        "pack_config_hash": cfg.section_hash("pack"),
        "tokenizer": {
            "model_sha256": tok.sha256,
            "vocab_size": tok.vocab_size,
            "config_hash": tok.meta.get("config_hash"),
            "corpus_manifest_hash": tok.meta.get("corpus_manifest_hash"),
        },
        "corpus": {"manifest_hash": corpus_manifest["manifest_hash"],
                   "config_hash": corpus_manifest.get("config_hash")},
        "corpus_mismatch_allowed": bool(allow_mismatch),
    }


def run_pack(corpus_dir: str, tokenizer_path: str, out_dir: str, cfg: TokenizerConfig, *,
             beam_flags: list[str] | None = None, allow_corpus_mismatch: bool = False) -> dict[str, Any]:
    from apache_beam.options.pipeline_options import PipelineOptions

    from tokenizer.corpus import exists, read_json

    ensure_importable()
    manifest = load_corpus_manifest(corpus_dir)
    tok = Tokenizer.load(tokenizer_path)
    if tok.eod_id < 0 or (cfg.pack.add_bos and tok.bos_id < 0) or tok.pad_id < 0:
        raise UsageError(f"{tokenizer_path}: the model needs eos (end of document), pad{' and bos' if cfg.pack.add_bos else ''} pieces")
    made_from = tok.meta.get("corpus_manifest_hash")
    if made_from != manifest["manifest_hash"] and not allow_corpus_mismatch:
        what = f"corpus manifest {made_from}" if made_from else "an unknown corpus (no tokenizer.json)"
        raise FingerprintMismatch(
            f"tokenizer {tokenizer_path} was trained on {what}, but {corpus_dir} has manifest "
            f"{manifest['manifest_hash']}; retrain it, or pass --allow-corpus-mismatch to pack anyway (recorded)")
    base = manifest_base(tok, manifest, cfg, allow_corpus_mismatch)
    if "://" not in out_dir:
        os.makedirs(out_dir, exist_ok=True)
    clear_outputs(out_dir)
    t0 = time.time()
    log.info("packing %s with tokenizer %s (vocab %s, sha %s) into %s-token sequences -> %s", corpus_dir,
             tokenizer_path, f"{tok.vocab_size:,}", tok.sha256[:12], f"{cfg.pack.seq_len:,}", out_dir)
    with beam.Pipeline(options=PipelineOptions(beam_flags or [])) as p:
        build_pack_pipeline(p, corpus_dir, manifest, tok, cfg, out_dir, base)
    errors = join(out_dir, "pack_errors.json")
    if exists(errors):
        raise FingerprintMismatch("packing failed: " + "; ".join(read_json(errors)["problems"]))
    tm = read_json(join(out_dir, TOKEN_MANIFEST))
    secs = time.time() - t0
    log.info("packed %s documents, %s tokens into %s sequences in %.1fs (%s tokens/s)",
             f"{tm['totals']['documents']:,}", f"{tm['totals']['tokens']:,}", f"{tm['totals']['sequences']:,}",
             secs, f"{tm['totals']['tokens'] / max(secs, 1e-9):,.0f}")
    for src, s in tm["sources"].items():
        log.info("  %-16s %8s docs %12s tokens %8s sequences %4d shards  (%.2f bytes/token)", src,
                 f"{s['documents']:,}", f"{s['tokens']:,}", f"{s['sequences']:,}", len(s["shards"]),
                 s["bytes"] / max(s["tokens"] - s["documents"], 1))
    return tm


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m tokenizer.pack",
        description="Tokenize a corpus and pack it into fixed-length sequences in ArrayRecord shards, per "
                    "source (Apache Beam). Unknown --flags go to Beam (--runner, --direct_num_workers, ...).")
    p.add_argument("--corpus", required=True, metavar="DIR", help="corpus directory (text/*.parquet + manifest.json)")
    p.add_argument("--tokenizer", required=True, metavar="MODEL",
                   help="tokenizer directory (tokenizer.json + spm.model) or a .model file")
    p.add_argument("--output", required=True, metavar="DIR", help="output directory for the packed shards")
    p.add_argument("--seq-len", type=int, default=None, metavar="N", help="tokens per sequence (default: pack.seq_len)")
    p.add_argument("--config", default=None, metavar="FILE", help="tokenizer config (default configs/tokenizer.yaml)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set pack.add_bos=true")
    p.add_argument("--allow-corpus-mismatch", action="store_true",
                   help="pack even if the tokenizer was trained on another corpus (recorded in the manifest)")
    p.add_argument("--tfds-dir", default=None, metavar="DIR",
                   help="also prepare a tensorflow-datasets copy there (tfds.data_source works without TensorFlow)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_known_args(argv)


def run(argv=None) -> dict[str, Any]:
    args, beam_flags = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose)
    check_beam_flags(beam_flags)
    overrides = list(args.overrides)
    if args.seq_len is not None:
        overrides.append(f"pack.seq_len={args.seq_len}")
    cfg = load_config(args.config, overrides)
    out = args.output.rstrip("/")
    tm = run_pack(args.corpus, args.tokenizer, out, cfg, beam_flags=beam_flags,
                  allow_corpus_mismatch=args.allow_corpus_mismatch)
    print(f"\npacked: {join(out, 'sequences')}/<source>/*.array_record  ({tm['totals']['sequences']:,} sequences of "
          f"{tm['seq_len']:,} tokens)")
    print(f"manifest: {join(out, TOKEN_MANIFEST)}  (fingerprint {tm['fingerprint']})")
    if args.tfds_dir:
        from tokenizer.tfds_builder import prepare

        prepare(out, args.tfds_dir)
        print(f"tfds: tfds.data_source('{'corpusforge_packed'}', data_dir='{args.tfds_dir}')")
    return tm


def main(argv=None) -> int:
    return main_wrapper(run, "tokenizer.pack", argv)


if __name__ == "__main__":
    from tokenizer.pack import main as _main  # pickle functions by module, not __main__

    sys.exit(_main())
