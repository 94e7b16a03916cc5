"""Near-duplicate removal: ours (Beam) vs datatrove's 4-stage MinHash dedup vs a
plain single-process datasketch MinHashLSH loop, on the same corpus with the
same shingles (lower-cased 5-word shingles) and the same bands × rows (14 × 8,
112 hashes); then a scaling run of ours at ×1, ×4, ×16 corpus sizes.

    python bench/bench_neardup.py                      # everything (≈ 10–15 min on 2 cores)
    python bench/bench_neardup.py --size-mb 20 --scales 1,2,4 --skip-datatrove   # quick

The corpus is built here, deterministically, from text on this machine: the dev
corpus (``../shared/dev_corpus``, when present), the Python standard library's
sources and the system's man pages, with planted copies: 5 % of documents get
a word-edited copy (edit rates 0.5 %–10 %: Jaccard ≈ 0.97 down to ≈ 0.45, the
last ones hard negatives) and 3 % an exact copy.

Truth: the exact Jaccard of lower-cased whitespace 5-gram sets (plain Python
sets, independent of every tool's hashing) for all pairs found by a
deliberately permissive LSH (250 hashes, 50 × 5: P(candidate) > 0.999 for
J ≥ 0.7).  Document-level scores, the same for every tool:

* recall: per component of the J ≥ 0.8 graph, min(removed members, size − 1),
  summed, over the sum of (size − 1);
* precision: per component of the J ≥ 0.7 graph, removals up to size − 1 are
  correct; every other removal (a document with no J ≥ 0.7 partner, or the
  last copy of a group) is a false positive.

Throughput is reported per core: documents / wall second / worker processes,
and documents per CPU second (user + system of the tool's process tree).
datatrove runs from ``/work/bench-venv`` (``--datatrove-python``) in a subprocess;
its 4 stages run one after the other with one worker, as its example does.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import sysconfig
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEV = os.path.join(os.path.dirname(ROOT), "shared", "dev_corpus", "text", "corpus.jsonl")
NGRAM, NUM_PERM, BANDS, ROWS, THRESHOLD = 5, 112, 14, 8, 0.8
_TOKEN = re.compile(r"(\s+)")


# ============================================================================ corpus
def _pool():
    """Real documents from this machine, in a fixed order."""
    if os.path.exists(DEV):
        with open(DEV, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                yield d["id"], d["text"]
    stdlib = sysconfig.get_paths()["stdlib"]
    man = "/usr/share/man"
    for base, ext in ((stdlib, ".py"), (man, ".gz")):
        paths = []
        for root, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__"))
            paths += [os.path.join(root, f) for f in sorted(files) if f.endswith(ext)]
        for p in paths:
            try:
                if os.path.islink(p) or not (1000 <= os.path.getsize(p) <= 1_000_000):
                    continue
                raw = gzip.open(p).read() if ext == ".gz" else open(p, "rb").read()
                text = raw.decode("utf-8")
            except (OSError, UnicodeDecodeError, EOFError):
                continue
            if len(text) >= 500:
                yield os.path.relpath(p, base), text


def _edit(text: str, rate: float, rng: random.Random) -> str:
    parts = _TOKEN.split(text)
    words = [i for i in range(0, len(parts), 2) if parts[i]]
    vocab = [parts[i] for i in words] or ["x"]
    for i in words:
        if rng.random() < rate:
            op = rng.random()
            if op < 0.5:
                parts[i] = rng.choice(vocab)
            elif op < 0.75:
                parts[i] = ""
            else:
                parts[i] = parts[i] + " " + rng.choice(vocab)
    return "".join(parts)


def build_corpus(path: str, target_mb: float, seed: int = 7, sample: float = 1.0) -> dict:
    """Write ``path`` (JSONL id/text) of about ``target_mb`` MB; returns its
    description.  ``sample`` < 1: the first ``target_mb / sample`` MB of the pool,
    each document kept with that probability (same composition at every size)."""
    meta_path = path + ".meta.json"
    if os.path.exists(path) and os.path.exists(meta_path):
        meta = json.load(open(meta_path))
        if meta.get("target_mb") == target_mb and meta.get("seed") == seed and meta.get("sample", 1.0) == sample:
            return meta
    rng = random.Random(seed)
    pick = random.Random(seed + 1)
    docs, size, pool_size = [], 0, 0
    for i, (origin, text) in enumerate(_pool()):
        pool_size += len(text.encode("utf-8"))
        if pick.random() < sample:
            docs.append((f"b{i:07d}", text))
            size += len(text.encode("utf-8"))
        if pool_size >= target_mb / sample * 1e6 / 1.09:
            break
    n = len(docs)
    planted = []
    for j, idx in enumerate(sorted(rng.sample(range(n), int(0.05 * n)))):
        rate = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1)[j % 6]
        planted.append((f"{docs[idx][0]}-nd{rate}", _edit(docs[idx][1], rate, rng)))
    for idx in sorted(rng.sample(range(n), int(0.03 * n))):
        planted.append((f"{docs[idx][0]}-copy", docs[idx][1]))
    all_docs = docs + planted
    rng.shuffle(all_docs)
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, text in all_docs:
            f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    meta = {"target_mb": target_mb, "seed": seed, "sample": sample, "documents": len(all_docs), "bytes": os.path.getsize(path),
            "pool_documents": n, "planted_near": int(0.05 * n), "planted_exact": int(0.03 * n),
            "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]}
    json.dump(meta, open(meta_path, "w"))
    return meta


# ============================================================================= truth
def _ngrams(text: str) -> set:
    w = text.lower().split()
    return {" ".join(w[i:i + NGRAM]) for i in range(max(1, len(w) - NGRAM + 1))} if w else set()


def compute_truth(corpus: str) -> dict:
    """All pairs with exact Jaccard ≥ 0.5 among permissive-LSH candidates (cached)."""
    cache = corpus + ".truth.json"
    if os.path.exists(cache):
        return json.load(open(cache))
    sys.path.insert(0, ROOT)
    import numpy as np

    from filters.minhash import MinHasher, ShingleConfig, Shingler, band_keys

    ids, texts = [], []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            ids.append(d["id"])
            texts.append(d["text"])
    sh, mh = Shingler(ShingleConfig(unit="word")), MinHasher(250, 99)
    keys = np.concatenate([band_keys(mh.signatures([sh.hashes(t) for t in texts[s:s + 512]]), 50, 5)
                           for s in range(0, len(texts), 512)])
    cand = set()
    for b in range(keys.shape[1]):
        order = np.argsort(keys[:, b], kind="stable")
        col = keys[order, b]
        starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
        ends = np.r_[starts[1:], len(col)]
        for s, e in zip(starts, ends):
            if e - s < 2:
                continue
            members = sorted(order[s:e].tolist())
            if len(members) <= 30:
                cand.update((members[i], members[j]) for i in range(len(members)) for j in range(i + 1, len(members)))
            else:  # a big bucket: star + chain keeps it connected
                cand.update((members[0], m) for m in members[1:])
                cand.update(zip(members, members[1:]))
    sets: dict[int, set] = {}
    pairs = []
    for a, b in sorted(cand):
        for x in (a, b):
            if x not in sets:
                sets[x] = _ngrams(texts[x])
        sa, sb = sets[a], sets[b]
        j = len(sa & sb) / len(sa | sb) if sa or sb else 1.0
        if j >= 0.5:
            pairs.append((ids[a], ids[b], round(j, 6)))
    truth = {"documents": len(ids), "candidates": len(cand), "pairs": pairs}
    json.dump(truth, open(cache, "w"))
    return truth


def _components(pairs, min_j):
    parent: dict[str, str] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, j in pairs:
        if j >= min_j:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    comps: dict[str, list] = {}
    for x in parent:
        comps.setdefault(find(x), []).append(x)
    return list(comps.values())


def score(removed: set, truth: dict, threshold: float = THRESHOLD, grey: float = 0.7) -> dict:
    hi = _components(truth["pairs"], threshold)
    want = sum(len(c) - 1 for c in hi)
    got = sum(min(len(removed.intersection(c)), len(c) - 1) for c in hi)
    lo = _components(truth["pairs"], grey)
    correct = sum(min(len(removed.intersection(c)), len(c) - 1) for c in lo)
    precision = correct / len(removed) if removed else 1.0
    recall = got / want if want else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"removed": len(removed), "should_remove": want, "precision": precision, "recall": recall, "f1": f1,
            "false_positives": len(removed) - correct}


# ============================================================================ tools
def _timed(cmd, env=None) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"{cmd[:3]} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _read_ids(path: str) -> set:
    out = set()
    if os.path.isdir(path):
        files = [os.path.join(path, f) for f in sorted(os.listdir(path))]
    else:
        files = [path]
    for p in files:
        opener = gzip.open if p.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    out.add(json.loads(line)["id"] if line.startswith("{") else line)
    return out


def run_ours(corpus: str, work: str, workers: int) -> tuple[float, float, set]:
    out = os.path.join(work, f"ours_w{workers}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    cmd = [sys.executable, __file__, "--_run-ours", corpus, out, str(workers)]
    wall, cpu = _timed(cmd, env={**os.environ, "PYTHONPATH": ROOT})
    return wall, cpu, _read_ids(os.path.join(out, "removed.txt"))


def _ours_main(corpus: str, out: str, workers: int) -> None:
    sys.path.insert(0, ROOT)
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from filters.minhash import NearDupConfig, ShingleConfig
    from pipelines.neardup import NearDup

    flags = ["--direct_num_workers", str(workers), "--direct_running_mode", "multi_processing"] if workers > 1 else []
    # the same shingles as the other tools: lower-cased whitespace 5-grams for every script
    cfg = NearDupConfig(num_perm=NUM_PERM, bands=BANDS, rows=ROWS, threshold=THRESHOLD, sample_pairs_per_bucket=0,
                        shingle=ShingleConfig(unit="word", word_ngram=NGRAM))

    def record(line):
        d = json.loads(line)
        return {"id": d["id"], "text": d["text"], "source": "bench", "url": None, "content_hash": None, "scores": {}}

    with beam.Pipeline(options=PipelineOptions(flags)) as p:
        res = p | beam.io.ReadFromText(corpus) | "Parse" >> beam.Map(record) | NearDup(cfg)
        (res.kept | "Kept" >> beam.Map(lambda d: json.dumps({"id": d["id"], "text": d["text"]}, ensure_ascii=False))
         | "WriteKept" >> beam.io.WriteToText(os.path.join(out, "kept"), file_name_suffix=".jsonl"))
        (res.dropped | "Ids" >> beam.Map(lambda r: r["id"])
         | "WriteRemoved" >> beam.io.WriteToText(os.path.join(out, "removed"), file_name_suffix=".txt",
                                                 shard_name_template=""))


def run_datasketch(corpus: str, work: str) -> tuple[float, float, set]:
    out = os.path.join(work, "datasketch")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    wall, cpu = _timed([sys.executable, __file__, "--_run-datasketch", corpus, out])
    return wall, cpu, _read_ids(os.path.join(out, "removed.txt"))


def _datasketch_main(corpus: str, out: str) -> None:
    """The plain loop: MinHash each document, query the index, keep or drop."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=(BANDS, ROWS))
    with open(corpus, encoding="utf-8") as f, open(os.path.join(out, "kept.jsonl"), "w") as kept, \
            open(os.path.join(out, "removed.txt"), "w") as removed:
        for line in f:
            d = json.loads(line)
            m = MinHash(num_perm=NUM_PERM, seed=1)
            m.update_batch([s.encode("utf-8") for s in _ngrams(d["text"])])
            if lsh.query(m):
                removed.write(d["id"] + "\n")
            else:
                lsh.insert(d["id"], m)
                kept.write(line)


def run_datatrove(corpus: str, work: str, python: str) -> tuple[float, float, set]:
    out = os.path.join(work, "datatrove")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    wall, cpu = _timed([python, __file__, "--_run-datatrove", corpus, out])
    return wall, cpu, _read_ids(os.path.join(out, "removed"))


def _datatrove_main(corpus: str, out: str) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    cfg = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS, hash_config=HashConfig(precision=64))
    folder, name = os.path.dirname(corpus), os.path.basename(corpus)

    def reader():
        return JsonlReader(folder, glob_pattern=name, text_key="text", id_key="id")

    stages = [
        LocalPipelineExecutor(pipeline=[reader(), MinhashDedupSignature(output_folder=f"{out}/sigs", config=cfg)],
                              tasks=1, workers=1, logging_dir=f"{out}/logs/1"),
        LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=f"{out}/sigs", output_folder=f"{out}/buckets", config=cfg)],
                              tasks=cfg.num_buckets, workers=1, logging_dir=f"{out}/logs/2"),
        LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=f"{out}/buckets", output_folder=f"{out}/remove_ids", config=cfg)],
                              tasks=1, workers=1, logging_dir=f"{out}/logs/3"),
        LocalPipelineExecutor(pipeline=[reader(), MinhashDedupFilter(input_folder=f"{out}/remove_ids",
                                                                     exclusion_writer=JsonlWriter(f"{out}/removed", compression=None)),
                                        JsonlWriter(f"{out}/kept", compression=None)],
                              tasks=1, workers=1, logging_dir=f"{out}/logs/4"),
    ]
    for st in stages:
        st.run()


# ============================================================================= main
def _table(headers, rows) -> str:
    w = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w[i]) for i, c in enumerate(cells)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(r) for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="near-dup benchmark: ours vs datatrove vs plain datasketch")
    ap.add_argument("--size-mb", type=float, default=68)
    ap.add_argument("--scale-base-mb", type=float, default=8)
    ap.add_argument("--scales", default="1,4,16", help="comma-separated multiples of --scale-base-mb ('' to skip)")
    ap.add_argument("--workers", default="1,2", help="worker counts for ours (DirectRunner)")
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--only-scaling", action="store_true")
    ap.add_argument("--datatrove-python", default="/work/bench-venv/bin/python")
    ap.add_argument("--work", default="/tmp/bench_neardup")
    args = ap.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)

    if not args.only_scaling:
        compare(args)
    scaling(args)
    return 0


def compare(args) -> None:
    corpus = os.path.join(args.work, f"corpus_{args.size_mb:g}mb.jsonl")
    print(f"building corpus ({args.size_mb:g} MB) ...", flush=True)
    meta = build_corpus(corpus, args.size_mb)
    n = meta["documents"]
    print(f"  {n:,} documents, {meta['bytes'] / 1e6:.1f} MB, sha256 {meta['sha256']}; computing truth ...", flush=True)
    truth = compute_truth(corpus)
    print(f"  {len(truth['pairs']):,} pairs with J ≥ 0.5 among {truth['candidates']:,} permissive candidates", flush=True)

    results = []
    for w in [int(x) for x in args.workers.split(",") if x]:
        print(f"ours, {w} worker(s) ...", flush=True)
        wall, cpu, removed = run_ours(corpus, args.work, w)
        results.append((f"ours (Beam DirectRunner, {w} worker{'s' if w > 1 else ''})", w, wall, cpu, removed))
    print("plain datasketch loop ...", flush=True)
    wall, cpu, removed = run_datasketch(corpus, args.work)
    results.append(("plain datasketch MinHashLSH loop", 1, wall, cpu, removed))
    if not args.skip_datatrove:
        if os.path.exists(args.datatrove_python):
            print("datatrove 4-stage MinHash ...", flush=True)
            wall, cpu, removed = run_datatrove(corpus, args.work, args.datatrove_python)
            results.append(("datatrove MinHash (4 stages)", 1, wall, cpu, removed))
        else:
            print(f"  (datatrove skipped: {args.datatrove_python} not found)")

    dt = next((r for r in results if r[0].startswith("datatrove")), None)
    rows = []
    for name, w, wall, cpu, removed in results:
        s = score(removed, truth)
        per_core = n / wall / w
        vs = f"{per_core / (n / dt[2] / dt[1]):.1f}×" if dt else "—"
        rows.append([name, w, f"{wall:.1f}", f"{cpu:.1f}", f"{per_core:.0f}", f"{n / cpu:.0f}", vs, s["removed"],
                     s["false_positives"], f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}"])
    print(f"\nNear-dup removal on {n:,} documents ({meta['bytes'] / 1e6:.1f} MB), {NGRAM}-word shingles, "
          f"{BANDS} bands × {ROWS} rows, threshold {THRESHOLD}; truth: {sum(len(c) - 1 for c in _components(truth['pairs'], THRESHOLD)):,} "
          f"documents to remove at J ≥ {THRESHOLD}")
    print(_table(["tool", "workers", "wall s", "CPU s", "docs/s/core", "docs/CPU-s", "per core vs datatrove",
                  "removed", "false pos.", "precision", "recall", "F1"], rows))



def scaling(args) -> None:
    scales = [int(x) for x in args.scales.split(",") if x]
    if scales:
        srows, prev = [], None
        top = max(scales)
        for sc in scales:
            path = os.path.join(args.work, f"scale_{args.scale_base_mb * sc:g}mb.jsonl")
            # every size samples the same pool (the first top × base MB), so composition is equal
            m = build_corpus(path, args.scale_base_mb * sc, seed=11, sample=sc / top)
            print(f"scaling ×{sc}: {m['documents']:,} documents ...", flush=True)
            wall, cpu, removed = run_ours(path, args.work, 1)
            mb = m["bytes"] / 1e6
            inc = f"{(cpu - prev[1]) / (mb - prev[0]):.3f}" if prev else "—"
            prev = (mb, cpu)
            srows.append([f"×{sc}", f"{mb:.1f}", m["documents"], len(removed), f"{wall:.1f}", f"{cpu:.1f}",
                          f"{cpu / mb:.3f}", inc])
        print("\nScaling of ours (1 worker). Same composition at every size (random samples of one pool); "
              "incremental cost = extra CPU s per extra MB over the previous size (constant = linear; the "
              "difference to CPU s/MB is the fixed start-up and graph cost)")
        print(_table(["size", "MB", "docs", "removed", "wall s", "CPU s", "CPU s/MB", "incremental CPU s/MB"], srows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_run-ours":
        _ours_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--_run-datasketch":
        _datasketch_main(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--_run-datatrove":
        _datatrove_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
