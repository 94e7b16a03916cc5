"""Precision and recall of the ``near_dup`` stage against the planted labels of
``../shared/dev_corpus`` (``near_dup`` and ``natural_near_dup`` pairs carry their
measured 5-gram Jaccard), per Jaccard bucket.

    python bench/neardup_eval.py                     # build ../shared/dev_corpus, evaluate
    python bench/neardup_eval.py --output DIR        # evaluate an existing build of it

Definitions (documented here because every number depends on them):

* truth measure ``true_jaccard``: Jaccard of the sets of whitespace-token 5-grams
  (case kept) — the labels' own measure; for text in scripts without spaces
  (the Shingler's ``char`` unit) character 5-grams of the non-space characters.
* recall, per bucket of the label's Jaccard: a labelled pair counts as found
  when both documents end in the same near-dup cluster.  Pairs are mapped
  through exact dedup first (a document dropped as an exact copy stands for its
  survivor); pairs whose two ends collapse into one document are not counted.
* precision: each document dropped by ``near_dup`` is a predicted pair with its
  nearest verified neighbour (``detail.nearest_id``).  It is correct when the
  true Jaccard of that pair is ≥ 0.7 (the labels' own near-duplicate floor:
  ``natural_near_dup`` lists every pair ≥ 0.7) or the labels connect the two.
* F1 at J ≥ 0.8: recall over labelled pairs with J ≥ 0.8; precision with
  predicted pairs of true J ≥ 0.8 as true positives, < 0.7 as false positives
  and the grey zone [0.7, 0.8) left out.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "dev_corpus"
BUCKETS = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0001)]


def ngram_set(text: str, n: int = 5, unit: str = "word") -> set:
    if unit == "word":
        w = text.split()
        return {tuple(w[i:i + n]) for i in range(max(1, len(w) - n + 1))} if w else set()
    c = "".join(text.split())
    return {c[i:i + n] for i in range(max(1, len(c) - n + 1))} if c else set()


def true_jaccard(a: str, b: str, unit: str = "word") -> float:
    sa, sb = ngram_set(a, unit=unit), ngram_set(b, unit=unit)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def _unit(text: str) -> str:
    from filters.minhash import Shingler

    sh = Shingler()
    return sh.unit_for(sh.codepoints(text.lower()))


def bucket_of(j: float) -> str:
    for lo, hi in BUCKETS:
        if lo <= j < hi:
            return f"{lo:.1f}-{min(hi, 1.0):.1f}"
    return "?"


class _UF:
    def __init__(self):
        self.p: dict[str, str] = {}

    def find(self, x):
        self.p.setdefault(x, x)
        while self.p[x] != x:
            self.p[x] = self.p[self.p[x]]
            x = self.p[x]
        return x

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.p[max(ra, rb)] = min(ra, rb)


def evaluate(out_dir: str, dev_dir: str | os.PathLike = DEV, threshold: float = 0.8, grey: float = 0.7) -> dict:
    import pyarrow.parquet as pq

    dev_dir = pathlib.Path(dev_dir)
    texts = {}
    with open(dev_dir / "text" / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            texts[d["id"]] = d["text"]
    labels = [json.loads(x) for x in open(dev_dir / "text" / "labels.jsonl", encoding="utf-8")]

    drops = pq.read_table(os.path.join(out_dir, "dropped")).to_pylist()
    exact = {r["id"]: r["survivor_id"] for r in drops if r["stage"] == "exact_dedup"}
    other_drop = {r["id"] for r in drops if r["stage"] not in ("exact_dedup", "near_dup", "boilerplate")}
    nd = [r for r in drops if r["stage"] == "near_dup"]
    cluster = {}
    for r in nd:
        cluster[r["id"]] = r["cluster_id"]
        cluster[r["survivor_id"]] = r["cluster_id"]

    def canon(x):
        seen = 0
        while x in exact and seen < 10:
            x, seen = exact[x], seen + 1
        return x

    # ---- recall over labelled pairs
    truth = _UF()
    pairs = []
    skipped = 0
    for lab in labels:
        if lab["type"] not in ("near_dup", "natural_near_dup"):
            continue
        a, b = canon(lab["doc_id"]), canon(lab.get("of") or lab.get("other"))
        if a == b or a in other_drop or b in other_drop:
            skipped += 1
            continue
        truth.union(a, b)
        found = a in cluster and cluster.get(a) == cluster.get(b)
        pairs.append((lab["type"], a, b, float(lab["jaccard_5gram"]), found))
    rows = []
    for lo, hi in BUCKETS:
        sel = [p for p in pairs if lo <= p[3] < hi]
        n_found = sum(p[4] for p in sel)
        rows.append({"bucket": bucket_of(lo), "labelled_pairs": len(sel), "found": n_found,
                     "found_rate": (n_found / len(sel)) if sel else None})
    hi_pairs = [p for p in pairs if p[3] >= threshold]
    recall_hi = sum(p[4] for p in hi_pairs) / len(hi_pairs) if hi_pairs else 1.0
    below_found = [p for p in pairs if p[3] < grey and p[4]]

    # ---- precision over predicted pairs (dropped doc, nearest verified neighbour)
    pred = []
    for r in nd:
        det = json.loads(r["detail"] or "{}")
        other = det.get("nearest_id") or r["survivor_id"]
        ta, tb = texts.get(r["id"]), texts.get(other)
        if ta is None or tb is None:
            continue
        unit = "char" if _unit(ta) == "char" and _unit(tb) == "char" else "word"
        j = true_jaccard(ta, tb, unit)
        labelled = truth.find(canon(r["id"])) == truth.find(canon(other))
        pred.append({"id": r["id"], "other": other, "true_jaccard": j, "ours": det.get("nearest_similarity"),
                     "labelled": labelled, "correct": labelled or j >= grey})
    for row in rows:
        lo = float(row["bucket"].split("-")[0])
        hi = [h for l_, h in BUCKETS if l_ == lo][0]
        sel = [q for q in pred if lo <= q["true_jaccard"] < hi]
        row["predicted_pairs"] = len(sel)
        row["predicted_labelled"] = sum(q["labelled"] for q in sel)
        row["precision"] = (sum(q["correct"] for q in sel) / len(sel)) if sel else None
    tp = sum(1 for q in pred if q["true_jaccard"] >= threshold)
    fp = sum(1 for q in pred if q["true_jaccard"] < grey and not q["labelled"])
    prec_hi = tp / (tp + fp) if tp + fp else 1.0
    f1 = 2 * prec_hi * recall_hi / (prec_hi + recall_hi) if prec_hi + recall_hi else 0.0
    precision = sum(q["correct"] for q in pred) / len(pred) if pred else 1.0
    return {
        "buckets": rows,
        "labelled_pairs": len(pairs), "skipped_pairs": skipped,
        "dropped_near_dup": len(nd),
        "recall_at_threshold": recall_hi, "precision_at_threshold": prec_hi, "f1_at_threshold": f1,
        "precision_overall": precision,
        "missed_at_threshold": [p[:4] for p in hi_pairs if not p[4]],
        "labelled_below_grey_found": [p[:4] for p in below_found],
        "false_positives": [q for q in pred if not q["correct"]],
    }


def format_report(res: dict) -> str:
    lines = ["| true Jaccard | labelled pairs | found | recall | predicted pairs | of them labelled | precision |",
             "|---|---|---|---|---|---|---|"]
    for r in res["buckets"]:
        f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {r['bucket']} | {r['labelled_pairs']} | {r['found']} | {f(r['found_rate'])} | "
                     f"{r['predicted_pairs']} | {r['predicted_labelled']} | {f(r['precision'])} |")
    lines.append("")
    lines.append(f"J ≥ 0.8: recall {res['recall_at_threshold']:.3f}, precision {res['precision_at_threshold']:.3f}, "
                 f"F1 {res['f1_at_threshold']:.3f};  overall precision {res['precision_overall']:.3f} "
                 f"({res['dropped_near_dup']} documents dropped as near-duplicates, {res['labelled_pairs']} labelled pairs, "
                 f"{res['skipped_pairs']} collapsed by exact dedup)")
    if res["missed_at_threshold"]:
        lines.append(f"missed (J ≥ 0.8): {res['missed_at_threshold']}")
    if res["false_positives"]:
        lines.append(f"false positives: {res['false_positives']}")
    return "\n".join(lines)


def build(out_dir: str, extra: list[str] | None = None) -> None:
    # near_dup is measured on its own: the content filters (language, quality, safety,
    # PII) would otherwise remove documents of labelled pairs before the stage sees them
    off = [f"--set=stages.{s}=false" for s in ("language", "quality", "safety", "pii")]
    cmd = [sys.executable, str(ROOT / "pipelines" / "build_corpus.py"), "--input",
           f"dev={DEV / 'text' / 'corpus.jsonl'}", "--output", out_dir, "--no-report", *off] + (extra or [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", help="existing build of the dev corpus (default: build one in a temp dir)")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="config override for the build")
    args = ap.parse_args(argv)
    if not (DEV / "text" / "corpus.jsonl").exists():
        print("../shared/dev_corpus is absent", file=sys.stderr)
        return 2
    out = args.output
    if out is None:
        out = tempfile.mkdtemp(prefix="neardup_eval_")
        build(out, [x for o in args.overrides for x in ("--set", o)])
    print(format_report(evaluate(out)))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
