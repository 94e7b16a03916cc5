"""Decontamination cost per document as the eval sets grow ×10 and ×100.

    python bench/bench_decontam.py [--scales 1,10,100] [--modes exact,bloom] [--docs 0] [--no-beam]

Documents: ``../shared/dev_corpus/text/corpus.jsonl`` (1,858 real documents with
planted contamination).  Eval sets: the dev corpus's five sets (4,304 items);
×10 and ×100 add synthetic items made from the real ones (each field's words
shuffled with a fixed seed: same length distribution, new n-grams), so the
index grows like a real registry of more benchmarks would.

Printed side by side, one table: index build time, n-gram entries, memory and
side-input size, per-document scan cost (the pure operator, one process) and
its ratio to ×1 exact (CPU time of this process: timings stay comparable on a busy machine), plus recall on the planted items and false positives on
clean documents at each scale.  ``--no-beam`` skips the second table: the Beam
pipeline (DirectRunner) with and without the decontamination stage.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import pickle
import random
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEV = os.path.join(os.path.dirname(ROOT), "shared", "dev_corpus")


def synthetic(items, copies: int, seed: int = 0):
    """``copies`` shuffled variants of every item (fields keep their length)."""
    from filters.eval_sets import EvalItem

    out = []
    for c in range(1, copies + 1):
        for it in items:
            rng = random.Random(f"{seed}:{c}:{it.id}")

            def shuf(s: str) -> str:
                w = s.split()
                rng.shuffle(w)
                return " ".join(w)

            out.append(EvalItem(set=it.set, id=f"{it.id}#syn{c}", question=shuf(it.question),
                                choices=[shuf(x) for x in it.choices], answer=shuf(it.answer), code=shuf(it.code),
                                passage=shuf(it.passage)))
    return out


def table(headers, rows):
    w = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(str(c).rjust(w[i]) if i else str(c).ljust(w[i]) for i, c in enumerate(r))  # noqa: E731
    print(line(headers))
    print("  ".join("-" * x for x in w))
    for r in rows:
        print(line(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1,10,100")
    ap.add_argument("--modes", default="exact,bloom")
    ap.add_argument("--docs", type=int, default=0, help="documents to scan (0: all)")
    ap.add_argument("--no-beam", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(DEV, "text", "corpus.jsonl")):
        sys.exit(f"needs the dev corpus at {DEV}")
    from filters.decontam import DecontamConfig, Decontaminator, EvalSetConfig, build_index, load_sets

    eval_files = sorted(glob.glob(os.path.join(DEV, "eval", "*.jsonl")))
    cfg = DecontamConfig(eval_sets=[EvalSetConfig(name=os.path.basename(f)[:-6], path=f) for f in eval_files])
    base = load_sets(cfg)
    docs = [json.loads(x) for x in open(os.path.join(DEV, "text", "corpus.jsonl"), encoding="utf-8")]
    if a.docs:
        docs = docs[: a.docs]
    labels = [json.loads(x) for x in open(os.path.join(DEV, "text", "labels.jsonl"))]
    planted = [x for x in labels if x["type"] == "contamination"]
    contaminated = {x["doc_id"] for x in planted}
    doc_ids = {d["id"] for d in docs}
    planted = [x for x in planted if x["doc_id"] in doc_ids]
    n_bytes = sum(len(d["text"].encode()) for d in docs)
    print(f"{len(docs):,} documents ({n_bytes / 1e6:.1f} MB), {sum(len(i) for _, i in base):,} base eval items, "
          f"{len(planted)} planted occurrences")
    rows = []
    ref = None
    for scale in [int(x) for x in a.scales.split(",")]:
        sets = [(spec, items + synthetic(items, scale - 1)) for spec, items in base]
        n_items = sum(len(i) for _, i in sets)
        for mode in a.modes.split(","):
            t0 = time.process_time()
            index = build_index(sets, cfg, mode=mode)
            t_build = time.process_time() - t0
            blob = len(pickle.dumps(index, protocol=5))
            op = Decontaminator(index, cfg)
            t0 = time.process_time()
            found, flagged = set(), set()
            for d in docs:
                dec = op.inspect(d)
                if dec.action:
                    flagged.add(d["id"])
                    found |= {(d["id"], it["item"]) for it in dec.items}
                    if mode == "bloom":  # no item attribution on workers: count by benchmark
                        found |= {(d["id"], s) for s in dec.sets}
            t_scan = (time.process_time() - t0) / len(docs) * 1000
            key = (lambda x: (x["doc_id"], x["item_id"])) if mode == "exact" else (lambda x: (x["doc_id"], x["eval_set"]))
            by_mode = collections.Counter(x["mode"] for x in planted if key(x) in found)
            tot = collections.Counter(x["mode"] for x in planted)
            fp = len([i for i in flagged if i not in contaminated])
            clean = len([d for d in docs if d["id"] not in contaminated])
            ref = ref or t_scan
            rows.append([f"x{scale}", mode, f"{n_items:,}", f"{t_build:.1f}", f"{index.n_entries:,}",
                         f"{index.nbytes / 1e6:.1f}", f"{blob / 1e6:.1f}", f"{t_scan:.2f}", f"{t_scan / ref:.2f}",
                         " ".join(f"{m[:4]} {by_mode[m]}/{tot[m]}" for m in sorted(tot)), f"{fp}/{clean}"])
            print(f"  done x{scale} {mode}: build {t_build:.1f}s, scan {t_scan:.2f} ms/doc", flush=True)
            del index, op
    print()
    print("Decontamination cost per document vs eval-set size (pure operator, one process)")
    table(["eval", "index", "items", "build CPU s", "entries", "index MB", "side input MB", "CPU ms/doc", "× x1",
           "recall (verb/ques/refo/part; bloom: by benchmark)", "FP docs"], rows)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    if a.no_beam:
        return
    print()
    print("Beam pipeline (DirectRunner, in-memory) on the same documents")
    brows = []
    with tempfile.TemporaryDirectory() as tmp:
        flags = [x for f in eval_files for x in ("--eval-set", f"{os.path.basename(f)[:-6]}={f}")]
        for label, extra in (("no decontamination", []), ("decontamination x1 (exact)", flags),
                             ("decontamination x1 (bloom)", flags + ["--set", "decontamination.index=bloom"])):
            cmd = [sys.executable, os.path.join(ROOT, "pipelines", "build_corpus.py"), "--input",
                   f"dev={os.path.join(DEV, 'text', 'corpus.jsonl')}", "--output", os.path.join(tmp, "o"),
                   "--no-report", *extra]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": ROOT})
            brows.append([label, f"{time.perf_counter() - t0:.1f}"])
        base_t = float(brows[0][1])
        for r in brows:
            r.append(f"{float(r[1]) / base_t:.2f}")
    table(["run", "wall s", "× no decontamination"], brows)


if __name__ == "__main__":
    main()
