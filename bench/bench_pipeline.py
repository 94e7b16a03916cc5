"""Corpus pipeline throughput: docs/s and MB/s per core.

    python bench/bench_pipeline.py [--target-mb 100] [--modes in_memory,multi_processing]

Builds a ≥ target-MB JSONL from ../shared/dev_corpus (each copy gets fresh ids and
a per-copy marker line, so exact dedup does not collapse the copies), then runs
``build_corpus.py`` on it with the DirectRunner in each mode, plus a plain Python
loop over the same operators as the no-framework floor, and prints a table.
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
DEV = os.path.join(os.path.dirname(ROOT), "shared", "dev_corpus", "text", "corpus.jsonl")


def make_input(path: str, target_mb: float) -> tuple[int, int]:
    docs = [json.loads(line) for line in open(DEV, encoding="utf-8")]
    n = nbytes = copy = 0
    with open(path, "w", encoding="utf-8") as f:
        while nbytes < target_mb * 1e6:
            for d in docs:
                rec = {"id": f"{d['id']}-c{copy}", "text": f"[copy {copy}]\n" + d["text"], "url": d["url"]}
                line = json.dumps(rec, ensure_ascii=False) + "\n"
                f.write(line)
                n += 1
                nbytes += len(line.encode())
            copy += 1
    return n, nbytes


def run_pipeline(inp: str, out: str, extra: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(ROOT, "pipelines", "build_corpus.py"), "--input", f"bench={inp}",
                    "--output", out, "--no-report", *extra], check=True, capture_output=True)
    return time.perf_counter() - t


def plain_loop(inp: str) -> float:
    """Read + the same per-doc operators + an in-memory hash dedup, no Beam."""
    from pipelines.build_corpus import resolve_sources  # noqa: F401 (import cost outside timing)
    from pipelines.config import load_config
    from pipelines.operators import build_operators
    from pipelines.readers import read_file
    from filters.base import DocFilter, run_filter, run_transform

    cfg = load_config()
    src = cfg.sources[0] if cfg.sources else None
    from pipelines.config import SourceConfig

    src = SourceConfig(name="bench", input=[inp])
    t = time.perf_counter()
    ops = build_operators(cfg)
    seen = set()
    kept = 0
    for kind, doc in read_file(inp, "jsonl", "bench", src, cfg.read, "bench.jsonl"):
        if kind != "doc":
            continue
        for op in ops:
            if isinstance(op, DocFilter):
                res = run_filter(op, doc)
                doc = None if res.reason else res.doc
            else:
                r = run_transform(op, doc)
                doc = r.doc
            if doc is None:
                break
        if doc is not None and doc["content_hash"] not in seen:
            seen.add(doc["content_hash"])
            kept += 1
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target-mb", type=float, default=100)
    ap.add_argument("--modes", default="in_memory,multi_processing")
    a = ap.parse_args()
    if not os.path.exists(DEV):
        sys.exit("bench_pipeline: needs ../shared/dev_corpus")
    tmp = tempfile.mkdtemp(prefix="bench_pipeline_")
    inp = os.path.join(tmp, "bench.jsonl")
    n, nbytes = make_input(inp, a.target_mb)
    mb = nbytes / 1e6
    print(f"input: {n:,} docs, {mb:.1f} MB ({inp})")
    rows = []
    t = plain_loop(inp)
    rows.append(("plain Python loop (same operators, 1 core)", 1, t))
    for mode in a.modes.split(","):
        if mode == "in_memory":
            extra, cores = ["--direct_running_mode=in_memory"], 1
        else:
            extra, cores = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"], 2
        t = run_pipeline(inp, os.path.join(tmp, f"out_{mode}"), extra)
        rows.append((f"build_corpus.py DirectRunner {mode}", cores, t))
    print()
    print(f"| run | cores | seconds | docs/s | MB/s | docs/s/core | MB/s/core | vs plain loop |")
    print("|---|---|---|---|---|---|---|---|")
    base = rows[0][2]
    for name, cores, t in rows:
        print(f"| {name} | {cores} | {t:.1f} | {n / t:,.0f} | {mb / t:.2f} | {n / t / cores:,.0f} | {mb / t / cores:.2f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
