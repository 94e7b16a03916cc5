"""Run every benchmark in bench/ (or those named) and print their tables.

    python bench/run_all.py                 # all bench_*.py
    python bench/run_all.py pipeline mfu    # bench_pipeline.py, bench_mfu.py

Each benchmark is a standalone script that prints a side-by-side table; results
are also saved to bench/results/<name>.txt.
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    names = sys.argv[1:]
    scripts = sorted(f for f in os.listdir(HERE) if f.startswith("bench_") and f.endswith(".py"))
    if names:
        scripts = [s for s in scripts if s[len("bench_"):-3] in names]
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    failed = []
    for s in scripts:
        print(f"\n===== {s} =====", flush=True)
        t = time.time()
        r = subprocess.run([sys.executable, os.path.join(HERE, s)], capture_output=True, text=True)
        out = r.stdout + (f"\n[stderr]\n{r.stderr[-3000:]}" if r.returncode else "")
        print(out, flush=True)
        print(f"({s}: {time.time() - t:.0f}s, exit {r.returncode})")
        with open(os.path.join(HERE, "results", s[:-3] + ".txt"), "w") as f:
            f.write(out)
        if r.returncode:
            failed.append(s)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
