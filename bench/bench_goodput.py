"""Goodput under SIGKILLs: recovery from the in-memory replica vs from disk checkpoints only.

    PYTHONPATH=. python bench/bench_goodput.py                 # cpu preset, 300 steps, a kill per 100 steps
    PYTHONPATH=. python bench/bench_goodput.py --quick         # tiny preset, 60 steps, a kill per 20
    PYTHONPATH=. python bench/bench_goodput.py --steps 150 --kill-every 50 --baseline
    PYTHONPATH=. python bench/bench_goodput.py --kill-every 30       # 10 failures: time-to-recover averages

Both modes run the same command on the same machine in one invocation: the same preset,
step count, checkpoint cadence (Orbax, async, every ``--checkpoint-every`` steps), data
and seed, under ``python -m train.supervise --standby`` (a warm spare takes over, the
persistent compilation cache is shared and filled once before timing), with the same
seeded kill schedule: one SIGKILL in every window of ``--kill-every`` steps, at a random
step and a random fraction into the step after it (train/faults.py; a kill already done
is not repeated after the restart).  The only difference:

* ``replica``: resilience.replica.enabled, refreshed every ``--replica-every`` steps (default 1)
  (written in the background, committed once complete) -> restores from memory;
* ``disk``:    no replica -> restores from the newest checkpoint (sha256 + tensor checksums
  verified) and recomputes the steps since.

Reported per mode, from each run's resilience.jsonl (train/goodput.py): goodput (kept
step time / wall time, from the first launch to the end), goodput after the first
start-up and compile (what failures cost in steady state), failures, mean restore time,
mean time-to-recover (death -> back at the step reached before it), mean lost steps, the
biggest lost-time buckets and the final loss (equal in both modes and to an uninterrupted
run: training is bitwise deterministic across kill and resume; ``--baseline`` adds that
uninterrupted run).  Evaluation is off (``eval.batches=0``): the bench measures failure
handling.  Goodput counts a step's wall time as productive however slow it was, so the
cost of the replica's background copies shows in the wall time and the median step
time columns, not in goodput.  Goals: replica time-to-recover >= 5x faster than disk,
replica goodput >= 97% at the chosen fault rate.  The defaults take ~2 x 300 steps of
the cpu preset (about 15-20 minutes on a quiet 2-core machine).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from train.goodput import account, read_events  # noqa: E402
from train.metrics import read_jsonl  # noqa: E402


def run(cmd: list[str], log_path: str, env: dict) -> tuple[int, float]:
    t = time.time()
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in p.stdout:
            log.write(line)
            if line.startswith(("[supervise]", "restored step", "checkpoint", "error", "Traceback")) \
                    or "goodput" in line:
                print("    " + line.rstrip(), flush=True)
        p.wait()
    return p.returncode, time.time() - t


def final_loss(run_dir: str) -> float | None:
    train = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if r.get("kind") == "train"]
    return train[-1]["loss"] if train else None


def median_step(run_dir: str) -> float | None:
    """Median step time of the kept steps (the replica's background copies show up here)."""
    import numpy as np
    dts = {}
    for e in read_events(run_dir):
        if e.get("ev") == "step":
            dts[e["step"]] = e["dt"]
    return float(np.median(list(dts.values()))) if dts else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--kill-every", type=int, default=100)
    ap.add_argument("--checkpoint-every", type=int, default=25)
    ap.add_argument("--replica-every", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", action="store_true", help="also run without faults")
    ap.add_argument("--no-standby", action="store_true", help="cold restarts (no warm spare)")
    ap.add_argument("--quick", action="store_true", help="tiny preset, 60 steps, a kill per 20, checkpoints per 10")
    ap.add_argument("--workdir", default=None, help="keep the runs here (default: a temporary directory)")
    ap.add_argument("--set", action="append", default=[], help="extra trainer overrides for every run")
    a = ap.parse_args()
    if a.quick:
        a.preset, a.steps, a.kill_every, a.checkpoint_every = "tiny", 60, 20, 10
    work = a.workdir or tempfile.mkdtemp(prefix="bench_goodput_")
    os.makedirs(work, exist_ok=True)
    cache = os.path.join(work, "xla_cache")
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONHASHSEED": "0"}
    base = ["--preset", a.preset, "--steps", str(a.steps), "--fresh",
            "--set", f"checkpoint.every={a.checkpoint_every}", "--set", "eval.batches=0",   # no evals: failures only
            "--set", "probes.enabled=false", "--set", "log.plots=false", "--set", "log.tensorboard=false",
            "--set", "log.peak_flops=1e11",            # no CPU matmul peak probe at every pause
            "--set", f"resilience.compile_cache_dir={cache}"] + [x for s in a.set for x in ("--set", s)]
    faults = ["--set", f"resilience.faults.kill_every={a.kill_every}", "--set", f"resilience.faults.seed={a.seed}"]
    replica = ["--set", "resilience.replica.enabled=true", "--set", f"resilience.replica.every={a.replica_every}"]
    sup = [sys.executable, "-m", "train.supervise", "--max-restarts", "100"] + ([] if a.no_standby else ["--standby"])

    print(f"bench_goodput: preset {a.preset}, {a.steps} steps, a SIGKILL in every {a.kill_every} steps "
          f"(seed {a.seed}), checkpoints every {a.checkpoint_every}, replica every {a.replica_every}, "
          f"{'cold restarts' if a.no_standby else 'warm standby'}; runs in {work}", flush=True)
    t = time.time()
    rc = subprocess.run([sys.executable, "-m", "train.supervise", "--compile-only", "--",
                         *base, "--run-dir", os.path.join(work, "warmup"), *replica],
                        cwd=ROOT, env=env, capture_output=True, text=True)
    if rc.returncode:
        print(rc.stdout[-2000:] + rc.stderr[-2000:])
        return 1
    print(f"  compile cache filled in {time.time() - t:.0f}s (not timed)", flush=True)

    modes = [("replica", replica + faults), ("disk", faults)]
    if a.baseline:
        modes.insert(0, ("no faults", replica))
    results = {}
    for name, extra in modes:
        run_dir = os.path.join(work, name.replace(" ", "_"))
        print(f"  [{name}] running ...", flush=True)
        code, secs = run(sup + ["--", *base, "--run-dir", run_dir, *extra], os.path.join(work, f"{name}.log"), env)
        if code:
            print(f"  [{name}] failed (exit {code}); see {os.path.join(work, name + '.log')}")
            return 1
        acc = account(read_events(run_dir))
        results[name] = (acc, final_loss(run_dir), median_step(run_dir))
        print(f"  [{name}] done in {secs:.0f}s", flush=True)

    def f(v, fmt="{:.2f}"):
        return "-" if v is None else fmt.format(v)

    head = ["mode", "goodput", "after 1st start", "wall s", "median step s", "failures", "restore s",
            "time-to-recover s", "lost steps", "top losses", "final loss"]
    rows = []
    for name, (acc, loss, med) in results.items():
        top = sorted(((v, k) for k, v in acc["lost_s"].items() if v > 0), reverse=True)[:3]
        rows.append([name, f"{100 * acc['goodput']:.1f}%", f"{100 * acc['goodput_after_first_start']:.1f}%",
                     f"{acc['wall_s']:.0f}", f(med), str(acc["failures"]), f(acc["mean_restore_s"]),
                     f(acc["mean_time_to_recover_s"]), f(acc["mean_lost_steps"], "{:.1f}"),
                     ", ".join(f"{k} {v:.0f}s" for v, k in top), f(loss, "{:.6f}")])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
    rep, disk = results["replica"][0], results["disk"][0]
    print()
    if rep["mean_time_to_recover_s"] and disk["mean_time_to_recover_s"]:
        print(f"time-to-recover: replica {disk['mean_time_to_recover_s'] / rep['mean_time_to_recover_s']:.1f}x "
              f"faster than disk (goal >= 5x); restore alone {disk['mean_restore_s'] / rep['mean_restore_s']:.1f}x")
    print(f"replica goodput {100 * rep['goodput']:.1f}% ({100 * rep['goodput_after_first_start']:.1f}% after the "
          f"first start-up and compile; goal >= 97%)")
    losses = {name: r[1] for name, r in results.items()}
    same = len(set(losses.values())) == 1
    print("final loss identical in every mode: " + ("yes" if same else f"NO {losses}"))
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
