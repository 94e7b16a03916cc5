"""Train the SentencePiece tokenizer on a balanced sample of a built corpus.

    python -m tokenizer.train --corpus out/demo_corpus --output artifacts/tokenizer \\
        [--config configs/tokenizer.yaml] [--set train.vocab_size=64000] [--no-compare] [Beam flags]

1. ``tokenizer.sample`` (Beam): balanced and proportional samples + held-out docs;
2. SentencePiece on the balanced sample (progress from the trainer's log);
3. unless ``--no-compare``: the same training on the proportional sample of the
   same size (``baseline_proportional/``), for the report;
4. ``tokenizer.json`` (model sha256, config + hash, corpus manifest hash, special
   ids, sample sizes) and the report (``report.html``, ``report.md``, ``eval.json``).

Output: ``spm.model``, ``spm.vocab``, ``tokenizer.json``, ``report.*``, ``eval.json``,
``sample/`` (``sample_stats.json`` and held-out docs; the sample text itself only
with ``--keep-sample``), ``baseline_proportional/``.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from typing import Any

from tokenizer.cli import UsageError, check_beam_flags, main_wrapper, setup_logging
from tokenizer.config import TokenizerConfig, load_config
from tokenizer.corpus import join, load_corpus_manifest
from tokenizer.sample import run_sample
from tokenizer.sp import META_FILE, META_FORMAT, MODEL_FILE, Tokenizer, train_model

log = logging.getLogger("tokenizer.train")


def write_vocab(tok: Tokenizer, path: str) -> None:
    sp = tok.sp
    with open(path, "w", encoding="utf-8") as f:
        for i in range(sp.get_piece_size()):
            piece = sp.id_to_piece(i).replace("\n", "\\n").replace("\t", "\\t")
            f.write(f"{piece}\t{sp.get_score(i):g}\n")


def make_meta(tok: Tokenizer, info: dict[str, Any], cfg: TokenizerConfig, manifest: dict[str, Any],
              sample_stats: dict[str, Any], variant: str) -> dict[str, Any]:
    sel = sample_stats["selected"][variant]
    return {
        "format": META_FORMAT,
        "model_file": MODEL_FILE,
        "model_sha256": tok.sha256,
        "variant": variant,
        "vocab_size": tok.vocab_size,
        "requested_vocab_size": info["requested_vocab_size"],
        "note": info.get("note"),
        "lossless": cfg.train.lossless,
        "special_ids": tok.special_ids(),
        "config": {"sample": cfg.sample.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json")},
        "config_hash": cfg.section_hash("sample", "train"),
        "corpus_manifest_hash": manifest["manifest_hash"],
        "sample": {"chars": sel["chars"], "units": sel["units"], "groups": len(sel["groups"]),
                   "heldout_docs": sum(sample_stats["heldout_docs"].values())},
        "training_seconds": info["seconds"],
    }


def train_variant(sample_dir: str, stats: dict[str, Any], variant: str, cfg: TokenizerConfig, out_dir: str,
                  manifest: dict[str, Any], vocab_size: int | None = None) -> Tokenizer:
    from pipelines.outputs import write_json

    files = [join(sample_dir, s["path"]) for s in stats["shards"][variant]]
    if not stats["selected"][variant]["units"]:
        raise UsageError("the corpus has no text to sample (every document is empty or held out)")
    os.makedirs(out_dir, exist_ok=True)
    model_path = join(out_dir, MODEL_FILE)
    info = train_model(files, cfg.train, cfg.sample.max_unit_bytes, model_path, label=variant, vocab_size=vocab_size)
    with open(model_path, "rb") as f:
        tok = Tokenizer(f.read())
    tok.meta = make_meta(tok, info, cfg, manifest, stats, variant)
    write_vocab(tok, join(out_dir, "spm.vocab"))
    write_json(join(out_dir, META_FILE), tok.meta)
    log.info("[%s] %s pieces in %.1fs -> %s", variant, f"{tok.vocab_size:,}", info["seconds"], model_path)
    return tok


def run_train(corpus_dir: str, out_dir: str, cfg: TokenizerConfig, *, beam_flags: list[str] | None = None,
              compare: bool = True, keep_sample: bool = False) -> dict[str, Any]:
    from apache_beam.io.filesystems import FileSystems

    from tokenizer.report import comparison_rows, write_report

    if "://" in out_dir:
        raise UsageError(f"--output {out_dir}: the tokenizer is written to a local directory (copy it afterwards)")
    t0 = time.time()
    manifest = load_corpus_manifest(corpus_dir)
    os.makedirs(out_dir, exist_ok=True)
    for stale in (META_FILE, MODEL_FILE, "eval.json", "report.html", "report.md"):
        if os.path.exists(join(out_dir, stale)):
            os.remove(join(out_dir, stale))
    for stale in ("baseline_proportional", "report"):
        if os.path.isdir(join(out_dir, stale)):
            shutil.rmtree(join(out_dir, stale))
    sample_dir = join(out_dir, "sample")
    log.info("step 1/4: sample the corpus")
    stats = run_sample(corpus_dir, sample_dir, cfg, beam_flags)
    log.info("step 2/4: train the tokenizer on the balanced sample")
    tok = train_variant(sample_dir, stats, "balanced", cfg, out_dir, manifest)
    tokenizers: dict[str, Any] = {"balanced": tok}
    if compare:
        log.info("step 3/4: train the comparison tokenizer on the proportional sample (same size, same vocab)")
        tokenizers["proportional"] = train_variant(sample_dir, stats, "proportional", cfg,
                                                   join(out_dir, "baseline_proportional"), manifest,
                                                   vocab_size=tok.vocab_size)
    else:
        log.info("step 3/4: comparison skipped (--no-compare)")
    tokenizers["bytes"] = None
    log.info("step 4/4: report on %d held-out documents", sum(stats["heldout_docs"].values()))
    ev = write_report(out_dir, sample_dir, tok.meta, stats, tokenizers)
    if not keep_sample:
        paths = [join(sample_dir, s["path"]) for v in stats["shards"].values() for s in v]
        if paths:
            FileSystems.delete(paths)
    rt = ev["roundtrip"]["balanced"]
    if rt["failures"]:
        log.warning("round trip failed on %d held-out documents (config lossless=%s): %s", len(rt["failures"]),
                    cfg.train.lossless, ", ".join(rt["failures"][:5]))
    log.info("done in %.1fs", time.time() - t0)
    return {"meta": tok.meta, "eval": ev, "comparison": comparison_rows(ev),
            "comparison_udhr": comparison_rows(ev, key="udhr")}


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m tokenizer.train",
        description="Train a SentencePiece tokenizer on a temperature-balanced sample of a corpus, with a report "
                    "comparing it to a proportional-sample tokenizer. Unknown --flags go to Beam.")
    p.add_argument("--corpus", required=True, metavar="DIR", help="corpus directory (text/*.parquet + manifest.json)")
    p.add_argument("--output", required=True, metavar="DIR", help="tokenizer directory to write")
    p.add_argument("--config", default=None, metavar="FILE", help="tokenizer config (default configs/tokenizer.yaml)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.vocab_size=64000")
    p.add_argument("--no-compare", action="store_true", help="skip the proportional-sample comparison tokenizer")
    p.add_argument("--keep-sample", action="store_true", help="keep the sample text files under OUTPUT/sample")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_known_args(argv)


def run(argv=None) -> dict[str, Any]:
    args, beam_flags = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose)
    check_beam_flags(beam_flags)
    cfg = load_config(args.config, args.overrides)
    out = args.output.rstrip("/")
    res = run_train(args.corpus, out, cfg, beam_flags=beam_flags, compare=not args.no_compare,
                    keep_sample=args.keep_sample)
    meta = res["meta"]
    print(f"\ntokenizer: {join(out, MODEL_FILE)}  ({meta['vocab_size']:,} pieces, sha256 {meta['model_sha256'][:12]})")
    print(f"report: {join(out, 'report.html')}")
    for title, rows in (("held-out corpus documents", res["comparison"]), ("UDHR parallel text", res["comparison_udhr"])):
        if rows:
            print(f"bytes/token, {title:<26} balanced  proportional  change")
            for lang, b, pr, ch in rows:
                print(f"  {lang:<38} {b:8.3f}  {pr:12.3f}  {ch:+6.1f}%")
    return res


def main(argv=None) -> int:
    return main_wrapper(run, "tokenizer.train", argv)


if __name__ == "__main__":
    from tokenizer.train import main as _main  # pickle functions by module, not __main__

    sys.exit(_main())
