"""The balancing trade-off: bytes per token of balanced vs proportional tokenizers
for several script temperatures / max_repeat values, on held-out documents and on
the UDHR parallel text.

    python bench/eval_tokenizer_balance.py [--corpus DIR] [--vocab 32000] \\
        [--settings 1.25,2 1.43,2 2,2] [--max-chars N]

Same sampling code as ``tokenizer.sample`` (units, groups, plan, per-unit coins,
hold-out rule, line order), run in one process so that a sweep does not re-run the
Beam job (SentencePiece's result depends on the order of its input lines, by a
few percent: the order here is the sample job's);
without ``--corpus`` the corpus is built from ../shared/dev_corpus.  Prints one
table row per setting (change of bytes/token vs the proportional tokenizer).
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEV = os.path.join(os.path.dirname(ROOT), "shared", "dev_corpus", "text", "corpus.jsonl")
LANGS = ["en", "zh", "ja", "ko", "ru", "ar", "hi"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--settings", nargs="+", default=["1.25,2", "1.43,2", "2,2"],
                    help="script_temperature,max_repeat pairs")
    ap.add_argument("--max-chars", type=int, default=None, help="sample budget (default: the config's)")
    ap.add_argument("--threads", type=int, default=None, help="train.num_threads (default: the config's)")
    args = ap.parse_args()
    corpus = args.corpus
    if not corpus:
        if not os.path.exists(DEV):
            print("no --corpus and ../shared/dev_corpus is absent: nothing to measure")
            return 0
        corpus = os.path.join(tempfile.mkdtemp(prefix="bench_bal_"), "corpus")
        subprocess.run([sys.executable, "pipelines/build_corpus.py", "--input", f"dev={DEV}", "--output", corpus,
                        "--no-report"], check=True, capture_output=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))

    import pyarrow.parquet as pq
    import sentencepiece as spm

    from tokenizer.config import load_config
    from tokenizer.corpus import doc_rank
    from tokenizer.report import evaluate, udhr_rows
    from tokenizer.sample import _light, _UnitsFn, copies, group_key, holdout_count, holdout_key, plan_sample
    from tokenizer.sp import Tokenizer, spm_options

    sets = [f"train.vocab_size={args.vocab}"]
    if args.max_chars:
        sets.append(f"sample.max_chars={args.max_chars}")
    if args.threads:
        sets.append(f"train.num_threads={args.threads}")
    cfg = load_config(None, sets)
    docs = []
    for f in sorted(os.listdir(os.path.join(corpus, "text"))):
        docs += [_light(d, cfg.sample) for d in pq.read_table(os.path.join(corpus, "text", f)).to_pylist()]
    by_key: dict[str, list] = {}
    for d in docs:
        by_key.setdefault(holdout_key(d), []).append((doc_rank(cfg.sample.seed, d["id"]), d["id"]))
    held = {i for v in by_key.values() for _, i in sorted(v)[:holdout_count(len(v), cfg.sample.holdout)]}
    heldout = [dict(d, text=d["text"][:cfg.sample.holdout.max_chars_per_doc]) for d in docs if d["id"] in held]
    units_fn = _UnitsFn(cfg.sample)
    units = [u for d in docs if d["id"] not in held for u in units_fn(d)]
    stats: dict = {}
    for g, _, _, text in units:
        n, c = stats.get(g, (0, 0))
        stats[g] = (n + 1, c + len(text))
    udhr = udhr_rows()

    def train(variant: str, plan) -> Tokenizer:
        import math

        from filters.schema import stable_hash
        from pipelines.outputs import shard_of
        from tokenizer.sample import unit_uniform

        groups = plan["variants"][variant]["groups"]
        picked = []
        for g, doc_id, i, text in units:
            n = copies(groups[group_key(g)]["rate"], unit_uniform(cfg.sample.seed, doc_id, i))
            picked += [(f"{doc_id}\0{i}\0{c}", text) for c in range(n)]
        # the sample job's line order (shard, then hash inside a shard): SentencePiece's
        # result depends on the order of its input sentences
        n_shards = max(1, math.ceil(sum(len(t.encode()) + 1 for _, t in picked) / cfg.sample.shard_target_bytes))
        picked.sort(key=lambda kt: (shard_of(kt[0], n_shards), stable_hash(kt[0], size=8), kt[1]))
        lines = [t for _, t in picked]
        buf = io.BytesIO()
        opts = spm_options(cfg.train, cfg.sample.max_unit_bytes)
        opts["minloglevel"] = 2
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, **opts)
        return Tokenizer(buf.getvalue())

    print(f"corpus {corpus}: {len(docs):,} documents, {len(heldout)} held out, {sum(c for _, c in stats.values()):,} "
          f"sample characters; {args.vocab:,}-piece {cfg.train.model_type}", flush=True)
    base_plan = plan_sample(sorted(stats.items()), cfg.sample)
    t = time.time()
    prop = train("proportional", base_plan)
    print(f"(proportional trained in {time.time() - t:.0f}s)", flush=True)
    ref_held = evaluate({"p": prop}, heldout)["by_lang"]
    ref_udhr = evaluate({"p": prop}, udhr)["by_lang"]
    rows = []
    for s in args.settings:
        temp, rep = (float(x) for x in s.split(","))
        c = cfg.sample.model_copy(update={"script_temperature": temp, "max_repeat": rep})
        t = time.time()
        tok = train("balanced", plan_sample(sorted(stats.items()), c))
        print(f"(T={temp:g}, max_repeat={rep:g} trained in {time.time() - t:.0f}s)", flush=True)
        eh = evaluate({"b": tok}, heldout)["by_lang"]
        eu = evaluate({"b": tok}, udhr)["by_lang"]
        for name, ev, ref in (("UDHR", eu, ref_udhr), ("held-out", eh, ref_held)):
            cells = []
            for lang in LANGS:
                if lang in ev and lang in ref:
                    cells.append(f"{100 * (ev[lang]['bytes_per_token']['b'] / ref[lang]['bytes_per_token']['p'] - 1):+6.1f}%")
                else:
                    cells.append(f"{'n/a':>7}")
            rows.append((f"T={temp:g} repeat={rep:g}", name, cells))
    print(f"\nbytes/token change vs proportional (higher is better)\n{'setting':<22} {'eval':<9} "
          + " ".join(f"{lang:>7}" for lang in LANGS))
    for setting, name, cells in rows:
        print(f"{setting:<22} {name:<9} " + " ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
