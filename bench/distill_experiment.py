"""The Nano experiment (issue 13), end to end on the sample mixture; ``make nano`` runs it.

    python bench/distill_experiment.py            # prepare data if missing, then everything
    python bench/distill_experiment.py --student-steps 100 --teacher-steps 150   # quicker

1. data: the demo corpus -> a 2,048-piece tokenizer -> sequences of 129 tokens ->
   ``configs/mixtures/nano_sample.yaml`` (built with ``--prepare`` when missing);
2. teacher: a larger CPU-sized model (``depth:4``, 3.5M params) trained on the mixture;
3. student ``tiny`` (0.64M) trained twice from the same seed on the same batches for
   the same number of tokens: alone, and distilled from the frozen teacher
   (``distill.alpha``, ``distill.temperature``);
4. the validation loss of all three on the mixture's held-out split (every
   validation sequence once), during and at the end of training;
5. int4 export of the teacher and the distilled student: sizes and the validation
   loss before/after (``train.quantize``);
6. generation: the same greedy continuation with and without the KV cache, float and
   int4 (``train.generate``).

Every run is a ``python -m train`` process; a finished run is reused (rerun with
``--fresh`` to redo).  Prints the tables and writes ``<out>/summary.md`` and
``summary.json``.  A script, not a test: minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MIXTURE = "configs/mixtures/nano_sample.yaml"
PREPARE = [
    ["pipelines/build_corpus.py", "--input", "web=data/sample/web", "--input", "wiki=data/sample/multilingual",
     "--input", "books=data/sample/books", "--input", "code=data/sample/code",
     "--input", "media=data/sample/media/manifest.jsonl", "--output", "out/demo_corpus"],
    ["-m", "tokenizer.train", "--corpus", "out/demo_corpus", "--output", "artifacts/tokenizer",
     "--set", "train.vocab_size=2048", "--set", "train.character_coverage=0.98"],
    ["-m", "tokenizer.pack", "--corpus", "out/demo_corpus", "--tokenizer", "artifacts/tokenizer",
     "--output", "artifacts/tokens", "--seq-len", "129"],
]


def sh(args: list[str], log: str | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, *args]
    print("$ " + " ".join(["python", *args]), flush=True)
    t = time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    out = p.stdout + p.stderr
    if log:
        with open(log, "w") as f:
            f.write(out)
    if p.returncode:
        sys.exit(f"failed ({p.returncode}): {' '.join(args)}\n{out[-3000:]}")
    print(f"  ({time.time() - t:.0f}s)", flush=True)
    return p.stdout


def train_args(preset: str, steps: int, run_dir: str, a, extra: list[str]) -> list[str]:
    every = max(steps // 4, 1)
    return ["-m", "train", "--preset", preset, "--mixture", MIXTURE, "--steps", str(steps), "--run-dir", run_dir,
            "--set", f"model.vocab_size={a.vocab}", "--set", f"seq_len={a.seq_len}", "--set", f"batch_size={a.batch}",
            "--set", f"seed={a.seed}", "--set", f"data.seed={a.seed}",
            "--set", f"eval.every={every}", "--set", f"eval.batches={a.eval_batches}",
            "--set", f"checkpoint.every={every}", "--set", "probes.enabled=false", "--set", "log.plots=false",
            "--set", "log.tensorboard=false", "--set", f"log.every={max(steps // 10, 1)}", *extra]


def evals(run_dir: str) -> list[dict]:
    out = []
    with open(os.path.join(ROOT, run_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r.get("kind") == "eval":
                out.append(r)
    # a resumed run may repeat steps: keep the last record per step
    return sorted({r["step"]: r for r in out}.values(), key=lambda r: r["step"])


def mean_step_time(run_dir: str) -> float | None:
    ts = []
    with open(os.path.join(ROOT, run_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r.get("kind") == "train" and r.get("step_time_s"):
                ts.append(r["step_time_s"])
    ts.sort()
    return ts[len(ts) // 2] if ts else None


def done(run_dir: str, steps: int) -> bool:
    p = os.path.join(ROOT, run_dir, "summary.json")
    if not os.path.exists(p):
        return False
    e = evals(run_dir)
    return bool(e) and e[-1]["step"] == steps


def table(headers, rows) -> str:
    w = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    fmt = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
    return "\n".join([fmt(headers), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [fmt(r) for r in rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/nano")
    ap.add_argument("--teacher-preset", default="depth:4")
    ap.add_argument("--teacher-steps", type=int, default=400)
    ap.add_argument("--teacher-lr", type=float, default=2e-3)
    ap.add_argument("--teacher-dir", default=None, help="use this finished run as the teacher (no teacher training)")
    ap.add_argument("--student-preset", default="tiny")
    ap.add_argument("--student-steps", type=int, default=300)
    ap.add_argument("--student-lr", type=float, default=3e-3)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--eval-batches", type=int, default=9, help="9 x 16 rows = the 144 validation sequences once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt", default="The history of the")
    ap.add_argument("--prepare", action="store_true", help="build corpus/tokenizer/tokens even if present")
    ap.add_argument("--fresh", action="store_true", help="retrain every run")
    a = ap.parse_args()
    t_start = time.time()

    if a.prepare or not os.path.exists(os.path.join(ROOT, "artifacts/tokens/token_manifest.json")):
        for cmd in PREPARE:
            sh(cmd)
    sh(["-m", "mixtures.config", MIXTURE])

    teacher, base, kd = (a.teacher_dir or f"{a.out}/teacher", f"{a.out}/student", f"{a.out}/student_kd")
    warm = ["--set", "optim.warmup_steps=20"]
    runs = {
        teacher: train_args(a.teacher_preset, a.teacher_steps, teacher, a,
                            ["--set", f"optim.lr={a.teacher_lr}", *warm]),
        base: train_args(a.student_preset, a.student_steps, base, a, ["--set", f"optim.lr={a.student_lr}", *warm]),
        kd: train_args(a.student_preset, a.student_steps, kd, a,
                       ["--set", f"optim.lr={a.student_lr}", *warm, "--set", f"distill.teacher={teacher}",
                        "--set", f"distill.alpha={a.alpha}", "--set", f"distill.temperature={a.temperature}"]),
    }
    commands = {}
    for run_dir, args in runs.items():
        steps = a.teacher_steps if run_dir == teacher else a.student_steps
        commands[run_dir] = "python " + " ".join(args)
        if run_dir == a.teacher_dir:
            print(f"teacher: {run_dir} (given)")
            continue
        if not a.fresh and done(run_dir, steps):
            print(f"reusing {run_dir} (finished; --fresh to retrain)")
            continue
        os.makedirs(os.path.join(ROOT, run_dir), exist_ok=True)
        sh(args + ["--fresh"], log=os.path.join(ROOT, run_dir, "train.log"))

    ev = {r: evals(r) for r in runs}
    tokens = a.student_steps * a.batch * a.seq_len
    curve_rows = []
    for i, e in enumerate(ev[base]):
        k = ev[kd][i] if i < len(ev[kd]) else {}
        curve_rows.append([e["step"], f"{e['step'] * a.batch * a.seq_len:,}", f"{e['loss']:.4f}",
                           f"{k.get('loss', float('nan')):.4f}", f"{k.get('loss', float('nan')) - e['loss']:+.4f}"])
    final = {r: ev[r][-1]["loss"] for r in runs}
    from train.model_io import read_meta
    t_meta = read_meta(os.path.join(ROOT, teacher))[2]
    step_t = {r: mean_step_time(r) for r in runs}

    # int4 exports
    from train.quantize import quantize_checkpoint
    q = {}
    for r in (teacher, kd, base):
        for emb in ("bfloat16", "int4"):
            sub = "int4" if emb == "bfloat16" else "int4-emb"
            print(f"$ python -m train.quantize --checkpoint {r} --output {r}/{sub} --set embedding={emb}")
            q[r, emb] = quantize_checkpoint(os.path.join(ROOT, r), os.path.join(ROOT, r, sub),
                                            overrides=[f"embedding={emb}"], log=lambda *_: None)

    # generation: cached vs recomputed greedy, float vs int4
    gen = {}
    for r in (teacher, kd):
        for src in (r, f"{r}/int4"):
            for cache in (True, False):
                args = ["-m", "train.generate", "--checkpoint", src, "--prompt", a.prompt, "--max-new-tokens", "24",
                        "--json"] + ([] if cache else ["--no-cache"])
                gen[(src, cache)] = json.loads(sh(args).strip().splitlines()[-1])

    # ---- report
    lines = [f"# Nano experiment: distillation, int4 export, generation", "",
             f"Sample mixture `{MIXTURE}` (demo corpus, 2,048-piece tokenizer, seq_len {a.seq_len}); batch {a.batch}; "
             f"seed {a.seed}.  Validation: the mixture's held-out split, {a.eval_batches} batches "
             f"({a.eval_batches * a.batch} sequences).", "",
             "## Distillation", "",
             table(["run", "preset", "steps", "train tokens", "final val loss", "median step s"],
                   [["teacher", t_meta["preset"], t_meta["steps"], f"{t_meta['steps'] * a.batch * a.seq_len:,}",
                     f"{final[teacher]:.4f}", f"{step_t[teacher] or 0:.2f}"],
                    ["student alone", a.student_preset, a.student_steps, f"{tokens:,}", f"{final[base]:.4f}",
                     f"{step_t[base] or 0:.2f}"],
                    [f"student + KD (alpha {a.alpha}, T {a.temperature})", a.student_preset, a.student_steps,
                     f"{tokens:,}", f"{final[kd]:.4f}", f"{step_t[kd] or 0:.2f}"]]), "",
             f"Distilled minus alone at the same tokens: **{final[kd] - final[base]:+.4f}** nats/token "
             f"(teacher {final[teacher]:.4f}).", "",
             "Validation loss during training (student):", "",
             table(["step", "tokens", "alone", "+ KD", "KD - alone"], curve_rows), "",
             "## int4 export", "",
             table(["model", "embedding", "params", "fp32 bytes", "bf16 bytes", "int4 matrices: bf16 -> stored",
                    "file bytes", "file vs fp32 / bf16", "val loss float", "val loss int4", "increase"],
                   [[r.split("/")[-1], emb, f"{x['sizes']['all parameters']['params']:,}",
                     f"{x['sizes']['all parameters']['fp32_bytes']:,}", f"{x['sizes']['all parameters']['bf16_bytes']:,}",
                     f"{x['sizes']['int4 matrices']['bf16_bytes']:,} -> {x['sizes']['int4 matrices']['stored_bytes']:,}"
                     f" ({x['sizes']['int4 matrices']['bf16_bytes'] / x['sizes']['int4 matrices']['stored_bytes']:.2f}x)",
                     f"{x['file_bytes']['model.safetensors']:,}",
                     f"{x['sizes']['all parameters']['fp32_bytes'] / x['file_bytes']['model.safetensors']:.2f}x / "
                     f"{x['sizes']['all parameters']['bf16_bytes'] / x['file_bytes']['model.safetensors']:.2f}x",
                     f"{x['validation']['float_loss']:.4f}", f"{x['validation']['int4_loss']:.4f}",
                     f"{x['validation']['increase']:+.4f}"] for (r, emb), x in q.items()]), "",
             f"int4: group {q[teacher, 'int4']['quantization']['group_size']}, "
             f"{q[teacher, 'int4']['quantization']['scheme']}, {q[teacher, 'int4']['quantization']['scale_dtype']} "
             "scales; norm scales float32; the embedding (tied output head) bfloat16 or int4.  File = the "
             "safetensors file on disk (header included); fp32 / bf16 = the same parameters as float.",
             "", "## Generation (greedy, 24 new tokens)", "",
             table(["checkpoint", "KV cache", "completion", "same as no-cache"],
                   [[src, "on" if c else "off (recompute)", json.dumps(gen[(src, c)]["completion"])[:60],
                     "yes" if gen[(src, True)]["ids"] == gen[(src, False)]["ids"] else "NO"]
                    for (src, c) in gen]), "",
             "## Commands", "", "```"] + [commands[r] for r in runs] + ["```", "",
             f"Total wall time {time.time() - t_start:.0f}s."]
    report = "\n".join(lines)
    print("\n" + report)
    with open(os.path.join(ROOT, a.out, "summary.md"), "w") as f:
        f.write(report + "\n")
    with open(os.path.join(ROOT, a.out, "summary.json"), "w") as f:
        json.dump({"final_val_loss": {"teacher": final[teacher], "student": final[base], "student_kd": final[kd]},
                   "kd_minus_alone": final[kd] - final[base], "student_tokens": tokens,
                   "curves": {r: [(e["step"], e["loss"]) for e in ev[r]] for r in runs},
                   "quantization": {f"{r} embedding={e}": v for (r, e), v in q.items()}, "generation": {f"{s} cache={c}": v for (s, c), v in gen.items()},
                   "commands": commands, "args": vars(a)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
