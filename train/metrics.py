"""Metrics: JSONL (the record of truth), TensorBoard, accelerator peaks for MFU, plots.

``metrics.jsonl`` holds one JSON object per line with a ``kind``:
  train: step, loss, grad_norm, lr, tokens, step_time_s, tokens_per_s, mfu, peak_flops, loss/<source>
  eval:  step, loss, loss/<source>
  probe_nll / probe_kv: the long-context probes (train/probes.py)
  run:   start/resume events (not part of the training record)
On resume from checkpoint step c, records of steps after c (written before a crash) are
dropped, so the file always reads as one uninterrupted run.  Timing fields (step_time_s,
tokens_per_s, mfu) naturally differ between runs; everything else is bitwise repeatable.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from typing import Any

import numpy as np

# Dense bf16 peak per device, FLOP/s (vendor datasheets; SXM parts for NVIDIA).
PEAK_BF16 = {
    "h100": 989e12, "h200": 989e12, "h800": 989e12, "gh200": 989e12, "b200": 2250e12, "a100": 312e12,
    "l4": 121e12, "a10": 125e12, "tpu v4": 275e12, "tpu v5 lite": 197e12, "tpu v5e": 197e12,
    "tpu v5p": 459e12, "tpu v5": 459e12, "tpu v6 lite": 918e12, "tpu v6e": 918e12,
}


def measure_cpu_matmul_peak(n: int = 2048, repeats: int = 8) -> float:
    """Best-of-N FLOP/s of a jitted float32 n x n matmul on this machine's CPU."""
    import jax
    import jax.numpy as jnp
    a = jnp.ones((n, n), jnp.float32)
    b = jnp.ones((n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def peak_flops_per_device(override: float = 0.0) -> tuple[float, str]:
    """(FLOP/s, how it was obtained) for one device of the default backend."""
    import jax
    if override:
        return override, "configured"
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return (measure_cpu_matmul_peak(repeats=12),
                "best float32 2048x2048 jnp.dot on this CPU, re-measured at every eval/checkpoint; "
                "on a shared machine MFU is approximate")
    kind = dev.device_kind.lower()
    for key in sorted(PEAK_BF16, key=len, reverse=True):
        if key in kind:
            return PEAK_BF16[key], f"{dev.device_kind} bf16 dense datasheet peak"
    return 0.0, f"unknown peak for {dev.device_kind} (set log.peak_flops)"


class MetricsLog:
    """Append-only JSONL + TensorBoard, truncated to ``resume_step`` on resume."""

    def __init__(self, run_dir: str, resume_step: int | None, tensorboard: bool = True):
        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, "metrics.jsonl")
        # keep the training record up to the checkpoint; probes and run events are redone
        keep = [r for r in read_jsonl(self.path) if r.get("kind") in ("train", "eval")
                and r.get("step", 0) <= resume_step] if resume_step is not None else []
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for r in keep:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)
        self.f = open(self.path, "a", encoding="utf-8")
        self.tb = None
        tb_dir = os.path.join(run_dir, "tb")
        if resume_step is None and os.path.isdir(tb_dir):
            shutil.rmtree(tb_dir)                     # a fresh start: no stale curves
        if tensorboard:
            from tensorboardX import SummaryWriter
            # purge_step hides events a crashed run wrote after the checkpoint we resume from
            self.tb = SummaryWriter(tb_dir,
                                    purge_step=(resume_step + 1) if resume_step is not None else None)

    def write(self, record: dict[str, Any]) -> None:
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()
        if self.tb is not None and "step" in record and record.get("kind") in ("train", "eval"):
            for k, v in record.items():
                if k not in ("kind", "step") and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def close(self) -> None:
        self.f.close()
        if self.tb is not None:
            self.tb.close()


def read_jsonl(path: str) -> list[dict]:
    """Records of a metrics file; a torn last line (kill -9 mid-write) is skipped."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def plot_run(run_dir: str) -> list[str]:
    """PNG plots of the curves in metrics.jsonl; returns the file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    train = [r for r in recs if r.get("kind") == "train"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    out_dir = os.path.join(run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    files = []
    if train:
        fig, ax = plt.subplots(1, 3, figsize=(15, 4))
        ax[0].plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, label="train")
        if evals:
            ax[0].plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="validation")
            for key in sorted({k for r in evals for k in r if k.startswith("loss/")}):
                pts = [(r["step"], r[key]) for r in evals if key in r]
                ax[0].plot(*zip(*pts), "--", lw=0.8, label=f"val {key[5:]}")
        ax[0].set(xlabel="step", ylabel="loss (nats/token)", title="loss")
        ax[0].legend(fontsize=7)
        ax[1].plot([r["step"] for r in train], [r["lr"] for r in train])
        ax[1].set(xlabel="step", title="learning rate")
        timed = [r for r in train if r.get("tokens_per_s")]
        if timed:
            ax[2].plot([r["step"] for r in timed], [r["tokens_per_s"] for r in timed])
        ax[2].set(xlabel="step", title="tokens/s")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "training.png"), dpi=110)
        plt.close(fig)
        files.append("plots/training.png")
    nll = [r for r in recs if r.get("kind") == "probe_nll"]
    if nll:
        r = nll[-1]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(r["positions"], r["nll"], "o-")
        ax.set(xscale="log", xlabel="token position in document", ylabel="mean NLL (nats)",
               title=f"NLL by position (step {r['step']})")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "nll_by_position.png"), dpi=110)
        plt.close(fig)
        files.append("plots/nll_by_position.png")
    kv = [r for r in recs if r.get("kind") == "probe_kv"]
    if kv:
        r = kv[-1]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(r["lengths"], r["accuracy"], "o-", label="model")
        ax.axhline(r["chance"], ls=":", color="gray", label="chance")
        if r.get("train_seq_len"):
            ax.axvline(r["train_seq_len"], ls="--", color="red", lw=0.8, label="training length")
        ax.set(xscale="log", xlabel="context length (tokens)", ylabel="accuracy", ylim=(0, 1.02),
               title=f"key-value retrieval (step {r['step']})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "kv_retrieval.png"), dpi=110)
        plt.close(fig)
        files.append("plots/kv_retrieval.png")
    return files


def summarize(run_dir: str, header: list[str]) -> str:
    """report.md for the run: header lines, final numbers, probes, plots."""
    recs = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    train = [r for r in recs if r.get("kind") == "train"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    lines = ["# Training run", ""] + [f"- {h}" for h in header] + [""]
    if train:
        timed = [r for r in train[1:] if r.get("tokens_per_s")]
        first, last = train[0], train[-1]
        lines += ["## Training", "", "| step | loss | lr |", "|---:|---:|---:|"]
        idx = sorted(set(np.linspace(0, len(train) - 1, min(len(train), 8)).astype(int)))
        lines += [f"| {train[i]['step']} | {train[i]['loss']:.4f} | {train[i]['lr']:.2e} |" for i in idx]
        lines += ["", f"loss {first['loss']:.4f} (step {first['step']}) -> {last['loss']:.4f} (step {last['step']})"]
        if timed:
            tps = float(np.median([r["tokens_per_s"] for r in timed]))
            mfu = [r["mfu"] for r in timed if r.get("mfu") is not None]
            lines.append(f"median throughput {tps:,.0f} tokens/s" +
                         (f", median MFU {100 * float(np.median(mfu)):.1f}%" if mfu else ""))
        lines.append("")
    if evals:
        keys = sorted(k for k in evals[-1] if k.startswith("loss"))
        lines += ["## Validation", "", "| step | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
        lines += [f"| {r['step']} | " + " | ".join(f"{r.get(k, float('nan')):.4f}" for k in keys) + " |" for r in evals]
        lines.append("")
    for r in [r for r in recs if r.get("kind") == "probe_nll"][-1:]:
        lines += ["## NLL by token position (held-out documents)", "", "| positions | mean NLL | tokens |",
                  "|---|---:|---:|"]
        lines += [f"| {a}-{b - 1} | {v:.4f} | {c} |" for a, b, v, c in zip(r["bucket_start"], r["bucket_end"],
                                                                            r["nll"], r["count"])]
        lines.append("")
    for r in [r for r in recs if r.get("kind") == "probe_kv"][-1:]:
        lines += ["## Synthetic key-value retrieval", "",
                  f"{r['pairs']} pairs at the start, filler, one query; {r['trials']} trials per length; "
                  f"chance {r['chance']:.3f}", "", "| context | accuracy |", "|---:|---:|"]
        lines += [f"| {n} | {a:.3f} |" for n, a in zip(r["lengths"], r["accuracy"])]
        lines.append("")
    plots = [p for p in ("plots/training.png", "plots/nll_by_position.png", "plots/kv_retrieval.png")
             if os.path.exists(os.path.join(run_dir, p))]
    lines += [f"![{p}]({p})" for p in plots]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(run_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return text


def run_summary(run_dir: str, final_step: int, config_fingerprint: str) -> dict:
    """summary.json: the numbers a sweep (issue 10) reads back from a finished run."""
    recs = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    train = [r for r in recs if r.get("kind") == "train"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    timed = [r for r in train if r.get("tokens_per_s")]
    out = {"final_step": final_step, "config_fingerprint": config_fingerprint,
           "train_loss": train[-1]["loss"] if train else None,
           "eval": {k: v for k, v in evals[-1].items() if k.startswith("loss")} if evals else {},
           "median_tokens_per_s": float(np.median([r["tokens_per_s"] for r in timed])) if timed else None,
           "median_mfu": float(np.median([r["mfu"] for r in timed if r.get("mfu") is not None]))
           if any(r.get("mfu") is not None for r in timed) else None}
    for kind in ("probe_nll", "probe_kv"):
        last = [r for r in recs if r.get("kind") == kind][-1:]
        if last:
            out[kind] = {k: v for k, v in last[0].items() if k != "kind"}
    with open(os.path.join(run_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    return out
