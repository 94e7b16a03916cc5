"""Runs datatrove's Gopher quality + Gopher repetition + C4 quality filters over a
JSONL of documents and prints one JSON line per document (keep/drop + reason)
and a timing line.  Executed by bench/bench_quality.py with the interpreter of
the venv that has datatrove (``--datatrove-python``); never imported by the
toolkit."""
import json
import sys
import time

from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter


def main(path: str, out: str) -> None:
    docs = [json.loads(line) for line in open(path, encoding="utf-8")]
    filters = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter()]
    # warm up (spaCy tokenizer construction) outside the timed loop
    for f in filters:
        f.filter(Document(text="Warm up. " * 60, id="w"))
    results = []
    t0 = time.process_time()
    for d in docs:
        reason = None
        for f in filters:
            doc = Document(text=d["text"], id=d["id"])
            r = f.filter(doc)
            ok, why = (r, None) if isinstance(r, bool) else (r[0], r[1])
            if not ok:
                reason = f"{f.name}:{why}"
                break
        results.append({"id": d["id"], "keep": reason is None, "reason": reason})
    cpu = time.process_time() - t0
    with open(out, "w", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps(r) + "\n")
    print(json.dumps({"cpu_seconds": cpu, "docs": len(docs)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
