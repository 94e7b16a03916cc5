"""How to run sweep proxies on a small CPU box: processes x XLA threads, compile cache.

    PYTHONPATH=. python bench/bench_sweep.py [--quick] [--proxies N] [--steps N]

N identical tiny proxies (the sweep's settings: preset tiny, batch 8 x 128, a synthetic
packed corpus of three sources, vocabulary 3000) are trained with
``mixtures.sweep.run_jobs`` — exactly how ``python -m mixtures.sweep`` runs them — under:

* ``2 procs x 1 thread``: two processes at a time, XLA:CPU single-threaded (the default
  of configs/sweeps/*.yaml, ``proxy.threads: 1``);
* ``1 proc x all threads``: one process at a time, XLA's own thread pool;
* ``2 procs x all threads``: two processes, each with XLA's thread pool (oversubscribed);
* ``2 procs x 1 thread, no cache``: as the first, without the persistent compilation cache.

Every row starts from an empty compilation cache, so its first proxies compile.  Columns:
wall time for all proxies, CPU time (user+sys of the proxy processes, from ``wait4``), and
wall time relative to the best row.  On a shared machine wall time depends on the other
load: compare rows of one run only.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SEQ = 129


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 proxies of 40 steps")
    ap.add_argument("--proxies", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    n, steps = (2, 40) if args.quick else (args.proxies, args.steps)

    import yaml

    from mixtures.sweep import Job, ProxySpec, proxy_env, proxy_train_args, run_jobs
    from tests.mixtures_data import VOCAB, make_docs, write_pack

    work = tempfile.mkdtemp(prefix="bench_sweep_")
    write_pack(os.path.join(work, "tokens"), {"a": make_docs("a", 400, 50, 400), "b": make_docs("b", 200, 50, 400),
                                              "c": make_docs("c", 100, 50, 400)}, SEQ)
    mix = os.path.join(work, "mix.yaml")
    with open(mix, "w") as f:
        yaml.safe_dump({"name": "bench", "tokens_dir": os.path.join(work, "tokens"), "validation_sequences": 8,
                        "sources": {"a": {}, "b": {}, "c": {}},
                        "stages": [{"name": "main", "tokens": steps * 8 * SEQ,
                                    "weights": {"a": 0.5, "b": 0.3, "c": 0.2}}]}, f)
    rows = []
    configs = [("2 procs x 1 thread", 2, 1, True), ("1 proc x all threads", 1, 0, True),
               ("2 procs x all threads", 2, 0, True), ("2 procs x 1 thread, no cache", 2, 1, False)]
    for label, jobs, threads, cache in configs:
        out = os.path.join(work, label.replace(" ", "_").replace(",", ""))
        pr = ProxySpec(preset="tiny", steps=steps, batch_size=8, threads=threads,
                       overrides={"optim.warmup_steps": 5, "log.peak_flops": 5e10})
        env = proxy_env(pr, out)
        if not cache:
            env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
        js = []
        for i in range(n):
            d = os.path.join(out, f"p{i}")
            js.append(Job(f"p{i}", d, proxy_train_args(pr, steps=steps, run_dir=d, mixture=mix, vocab=VOCAB,
                                                       seq_len=SEQ - 1, seed=i, eval_sequences=24),
                          steps, lambda d=d: _done(d, steps)))
        t = time.time()
        timing = run_jobs(js, env, jobs, label)
        rows.append((label, time.time() - t, timing["cpu_s"], os.getloadavg()[0]))
    best = min(r[1] for r in rows)
    print(f"\n{n} proxies x {steps} steps (batch 8 x {SEQ - 1}, preset tiny, vocab {VOCAB}), {os.cpu_count()} cores")
    print(f"{'configuration':<30} {'wall s':>8} {'CPU s':>8} {'wall / best':>12} {'load avg':>9}")
    print("-" * 71)
    for label, wall, cpu, load in rows:
        print(f"{label:<30} {wall:8.1f} {cpu:8.1f} {wall / best:12.2f} {load:9.1f}")
    return 0


def _done(run_dir: str, steps: int):
    import json
    p = os.path.join(run_dir, "summary.json")
    if not os.path.exists(p):
        return None
    s = json.load(open(p))
    return s if s.get("final_step") == steps else None


if __name__ == "__main__":
    sys.exit(main())
