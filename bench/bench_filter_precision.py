"""Precision of the language/quality/safety defaults on the dev corpus, side by side.

    PYTHONPATH=. .venv/bin/python bench/bench_filter_precision.py [--corpus ../shared/dev_corpus]

Every document of ``dev_corpus/text/corpus.jsonl`` goes through all per-document
operators (as ``--dry-run`` does: a document goes on after a drop, so every rule
is counted).  The planted labels are read only to *measure*: recall on planted
``safety_term`` and ``low_quality`` documents, and the false-drop rate on the
unplanted ones, per source.  Three configurations:

* ``published``: this code with the precision changes switched off where a switch
  exists (web rules and term lists on every format, C4's any-"{" rule, lines as
  they are, no skip for unpunctuated text, lid.176's top label alone, safety
  matches without dictionary word boundaries, no code-switching rule, ordinary
  words weak only in their own language at 0.5).  List hygiene itself (wordfreq
  frequencies, romanised entries, Traditional Chinese) has no switch.
* ``defaults``: configs/corpus.yaml, records read from JSONL (``format: jsonl``,
  a web-like format: the web rules apply), as ``--input dev=corpus.jsonl`` reads them.
* ``as text``: the same records as if each had been read from a text tree
  (``format: text``): what genre scoping does for books, manuals, catalogues.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from filters.base import DocFilter, DocTransform, run_filter, run_transform  # noqa: E402
from filters.schema import new_text_record  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.operators import build_operators  # noqa: E402

PUBLISHED = [
    "quality.gopher_quality.formats=['*']", "quality.c4.formats=['*']", "quality.fineweb.formats=['*']",
    "quality.c4.max_curly_bracket_line_frac=null", "quality.c4.unwrap_lines=false",
    "quality.c4.skip_unpunctuated=false", "quality.fineweb.unwrap_lines=false",
    "quality.fineweb.skip_unpunctuated=false", "language.mixed_languages=1", "language.macrolanguages={}",
    "safety.term_formats=['*']", "safety.dense_word_boundaries=false", "safety.code_switch_languages=[]",
    "safety.weak_everywhere=false", "safety.weak_term_weight=0.5",
]
PLANTED = {"safety_term", "low_quality", "near_dup", "normalized_dup", "contamination"}


def all_drops(ops, rec) -> list[tuple[str, str]]:
    drops = []
    for op in ops:
        if isinstance(op, DocTransform) and not isinstance(op, DocFilter):
            res = run_transform(op, rec)
            if res.doc is None:
                drops.append((op.stage, res.reason))
                continue
            rec = res.doc
        else:
            out = run_filter(op, rec)
            rec = out.doc
            if out.reason:
                drops.append((op.stage, out.reason))
    return drops


def source_of(d: dict) -> str:
    s = d["source"]
    return s.split("/")[0] if s.startswith("debian:gettext") else s


def measure(docs, labels, overrides: list[str], fmt: str) -> dict:
    ops = build_operators(load_config(None, overrides))
    per = collections.defaultdict(lambda: [0, 0, collections.Counter()])
    st = lq = st_hit = lq_hit = 0
    t = time.time()
    for d in docs:
        rec = new_text_record(d["text"], "dev", id=d["id"], url=d.get("url"), metadata={"format": fmt})
        if d["lang_hint"].startswith("code:"):  # what the code reader sets
            rec["lang"], rec["lang_score"] = d["lang_hint"], 1.0
        drops = all_drops(ops, rec)
        lab = labels.get(d["id"], set())
        if "safety_term" in lab:
            st += 1
            st_hit += any(s == "safety" for s, _ in drops)
        if "low_quality" in lab:
            lq += 1
            lq_hit += bool(drops)
        if lab & PLANTED:
            continue
        e = per[source_of(d)]
        e[0] += 1
        if drops:
            e[1] += 1
            e[2][drops[0][1]] += 1
    return {"per": per, "st": (st_hit, st), "lq": (lq_hit, lq), "secs": time.time() - t}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "dev_corpus"))
    ap.add_argument("--min-docs", type=int, default=1, help="sources with fewer unplanted documents are pooled")
    args = ap.parse_args(argv)
    path = os.path.join(args.corpus, "text", "corpus.jsonl")
    if not os.path.exists(path):
        print(f"no dev corpus at {path}: nothing to measure")
        return 0
    docs = [json.loads(x) for x in open(path, encoding="utf-8")]
    labels = collections.defaultdict(set)
    for x in open(os.path.join(args.corpus, "text", "labels.jsonl")):
        y = json.loads(x)
        labels[y["doc_id"]].add(y["type"])
    runs = [("published", measure(docs, labels, PUBLISHED, "jsonl")),
            ("defaults", measure(docs, labels, [], "jsonl")),
            ("as text", measure(docs, labels, [], "text"))]
    names = [n for n, _ in runs]
    print(f"dev corpus: {len(docs)} documents; false drops of unplanted documents per source "
          "(first reason of the defaults)\n")
    head = f"{'source':40s} {'docs':>5s} " + " ".join(f"{n:>15s}" for n in names) + "  why (defaults)"
    print(head)
    print("-" * len(head))
    srcs = sorted(runs[0][1]["per"], key=lambda s: (-runs[1][1]["per"][s][1] / runs[1][1]["per"][s][0], s))
    for s in srcs:
        n = runs[0][1]["per"][s][0]
        cells = []
        for _, r in runs:
            k = r["per"][s][1]
            cells.append(f"{k:4d} {k / n:6.1%}    ")
        why = ", ".join(f"{r} {c}" for r, c in runs[1][1]["per"][s][2].most_common(2))
        print(f"{s[:40]:40s} {n:5d} " + " ".join(f"{c:>15s}" for c in cells) + "  " + why)
    print("-" * len(head))
    tot = sum(e[0] for e in runs[0][1]["per"].values())
    cells = []
    for _, r in runs:
        k = sum(e[1] for e in r["per"].values())
        cells.append(f"{k:4d} {k / tot:6.1%}    ")
    print(f"{'all unplanted':40s} {tot:5d} " + " ".join(f"{c:>15s}" for c in cells))
    for key, what in (("st", "planted safety_term flagged"), ("lq", "planted low_quality dropped")):
        cells = [f"{r[key][0]:3d}/{r[key][1]:<3d} {r[key][0] / max(r[key][1], 1):5.1%}" for _, r in runs]
        print(f"{what:40s} {'':5s} " + " ".join(f"{c:>15s}" for c in cells))
    print(f"{'seconds':40s} {'':5s} " + " ".join(f"{r['secs']:15.1f}" for _, r in runs))
    firsts = collections.Counter()
    for e in runs[1][1]["per"].values():
        firsts.update(e[2])
    print("\nfirst reasons of the false drops (defaults):")
    for r, c in firsts.most_common():
        print(f"  {r:48s} {c:4d} {c / tot:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
