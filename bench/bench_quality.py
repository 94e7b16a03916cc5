"""Gopher quality + Gopher repetition + C4 rules: ours vs datatrove, same English
documents, same thresholds.  Prints keep/drop agreement and docs/s per core.

    PYTHONPATH=. .venv/bin/python bench/bench_quality.py [--datatrove-python /work/bench-venv/bin/python]
        [--corpus ../shared/dev_corpus/text/corpus.jsonl] [--repeat 3]

datatrove is a peer used only here (the ``bench`` extra); it pins old
trafilatura and pulls ``fasttext-numpy2-wheel``, so it lives in its own venv
(``python3 -m venv /work/bench-venv && /work/bench-venv/bin/pip install
'datatrove[processing]==0.10.1' 'spacy>=3.8,<3.9'``) and runs in a subprocess.

Like-for-like settings on our side: words counted the way datatrove's spaCy
tokenizer counts them (punctuation tokens included,
``count_punctuation_as_words``), C4's English end punctuation
(``terminal_punctuation: c4``).  Both sides are timed with process CPU time,
single process, after a warm-up, so the ratio is per core.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from filters.base import run_filter  # noqa: E402
from filters.heuristics import (  # noqa: E402
    C4Config,
    C4Rules,
    GopherQuality,
    GopherQualityConfig,
    GopherRepetition,
    GopherRepetitionConfig,
)


def english_docs(corpus: str | None) -> list[dict]:
    docs = []
    if corpus and os.path.exists(corpus):
        for line in open(corpus, encoding="utf-8"):
            d = json.loads(line)
            if d.get("lang_hint") == "en":
                docs.append({"id": d["id"], "text": d["text"]})
    if not docs:  # no dev corpus: the standard library's own documentation
        import pydoc
        import pkgutil

        for m in sorted(pkgutil.iter_modules(), key=lambda m: m.name)[:400]:
            if m.name.startswith("_"):
                continue
            try:
                mod = __import__(m.name)
                text = pydoc.plain(pydoc.render_doc(mod))
            except Exception:  # noqa: BLE001
                continue
            docs.append({"id": m.name, "text": text[:200000]})
    return docs


def ours(docs: list[dict]) -> tuple[list[dict], float]:
    ops = [GopherRepetition(GopherRepetitionConfig(spacy_like_tokens=True)),
           GopherQuality(GopherQualityConfig(count_punctuation_as_words=True, stop_words_case_sensitive=True)),
           C4Rules(C4Config(terminal_punctuation="c4"))]
    warm = {"id": "w", "text": "Warm up. " * 60, "lang": "en", "script": "Latin", "source": "b", "scores": {}}
    for op in ops:
        run_filter(op, warm)
    out = []
    t0 = time.process_time()
    for d in docs:
        rec = {"id": d["id"], "text": d["text"], "lang": "en", "script": "Latin", "source": "bench", "scores": {}}
        reason = None
        for op in ops:
            r = run_filter(op, rec)
            rec = r.doc
            if r.reason and reason is None:
                reason = r.reason
        out.append({"id": d["id"], "keep": reason is None, "reason": reason})
    return out, time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datatrove-python", default="/work/bench-venv/bin/python")
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "dev_corpus", "text", "corpus.jsonl"))
    ap.add_argument("--repeat", type=int, default=2, help="copies of the document set (more volume)")
    ap.add_argument("--show-disagreements", type=int, default=10)
    args = ap.parse_args(argv)

    base = english_docs(args.corpus)
    docs = [{"id": f"{d['id']}#{i}", "text": d["text"]} for i in range(args.repeat) for d in base]
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    print(f"{len(docs)} English documents ({len(base)} distinct x {args.repeat}), {mb:.1f} MB", flush=True)

    mine, my_cpu = ours(docs)
    if not os.path.exists(args.datatrove_python):
        print(f"datatrove interpreter {args.datatrove_python} not found: ours only. "
              f"ours: {len(docs) / my_cpu:.1f} docs/s per core")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        inp, outp = os.path.join(tmp, "docs.jsonl"), os.path.join(tmp, "dt.jsonl")
        with open(inp, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        r = subprocess.run([args.datatrove_python, os.path.join(ROOT, "bench", "_datatrove_quality.py"), inp, outp],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr[-2000:])
            return 1
        dt_cpu = json.loads(r.stdout.strip().splitlines()[-1])["cpu_seconds"]
        theirs = [json.loads(x) for x in open(outp, encoding="utf-8")]
    agree = sum(1 for a, b in zip(mine, theirs) if a["keep"] == b["keep"])
    n = len(docs)
    print()
    print(f"{'':24s} {'docs':>6s} {'kept':>6s} {'CPU s':>8s} {'docs/s/core':>12s}")
    for name, res, cpu in (("corpusforge", mine, my_cpu), ("datatrove 0.10.1", theirs, dt_cpu)):
        print(f"{name:24s} {n:6d} {sum(x['keep'] for x in res):6d} {cpu:8.2f} {n / cpu:12.1f}")
    print(f"\nkeep/drop agreement: {agree}/{n} = {agree / n:.2%}")
    print(f"throughput ratio (ours / datatrove, per core): {dt_cpu / my_cpu:.2f}x")
    shown = 0
    for a, b in zip(mine, theirs):
        if a["keep"] != b["keep"] and shown < args.show_disagreements:
            print(f"  differs: {a['id']}: ours {a['reason'] or 'keep'} | datatrove {b['reason'] or 'keep'}")
            shown += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
