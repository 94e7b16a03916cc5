"""Trainer: config, schedules, learning, 1 vs 8 devices, kill -9 + resume bitwise, outputs.

The runs use the ``tiny`` preset through the real CLI in subprocesses (XLA flags must be
set before JAX starts, and kill -9 needs a process).  They are compile-dominated, so they
pass ``--xla_backend_optimization_level=0`` (LLVM -O0: about half the compile time; the
same flags for every run that is compared).
"""
from __future__ import annotations

import os

# These tests are dominated by XLA compile time; LLVM -O0 halves it (results agree to float
# rounding, and every pair of runs that is compared bitwise uses the same flags).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from model.config import ConfigError
from train.config import OptimConfig, resolve
from train.metrics import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
O0 = "--xla_backend_optimization_level=0"
COMMON = ["--preset", "tiny", "--steps", "20", "--set", "checkpoint.every=5", "--set", "eval.every=5",
          "--set", "log.peak_flops=1e11", "--set", "log.every=5"]
DETERMINISTIC = ("kind", "step", "loss", "grad_norm", "lr", "tokens")


def cli(run_dir, *extra, xla_flags=O0, wait=True):
    env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": xla_flags, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "train", *COMMON, "--run-dir", str(run_dir), *extra]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def records(run_dir, kinds=("train", "eval")):
    """The training record without timing fields (those differ between any two runs)."""
    out = []
    for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")):
        if r.get("kind") in kinds:
            out.append({k: v for k, v in r.items() if k in DETERMINISTIC or k.startswith("loss")})
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted 20-step run on 1 device (probes, TensorBoard and plots on)."""
    run_dir = tmp_path_factory.mktemp("reference")
    out = cli(run_dir)
    return run_dir, out


# ---- config and schedules (no compilation) --------------------------------------------

def test_schedules():
    from train.trainer import make_schedule
    o = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    cos = make_schedule(o, 100)
    assert float(cos(0)) == 0.0 and abs(float(cos(10)) - 1.0) < 1e-6 and abs(float(cos(100)) - 0.1) < 1e-6
    assert float(cos(30)) > float(cos(60)) > float(cos(90))
    wsd = make_schedule(o.model_copy(update={"schedule": "wsd", "decay_frac": 0.2}), 100)
    assert [round(float(wsd(s)), 6) for s in (5, 10, 50, 80)] == [0.5, 1.0, 1.0, 1.0]
    assert abs(float(wsd(90)) - 0.55) < 1e-6 and abs(float(wsd(100)) - 0.1) < 1e-6
    const = make_schedule(o.model_copy(update={"schedule": "constant"}), 100)
    assert float(const(50)) == 1.0 == float(const(99))


def test_config_precedence_and_one_line_errors(tmp_path):
    # preset run defaults < training YAML < --set / flags
    cfg, model, preset, why = resolve(None, ["optim.lr=0.5"], {"preset": "tiny", "steps": 7})
    assert (cfg.steps, cfg.optim.lr, cfg.batch_size, cfg.optim.warmup_steps) == (7, 0.5, 8, 5)
    assert cfg.run_dir == "runs/tiny" and model.d_model == 128 and why == "requested"
    y = tmp_path / "t.yaml"
    y.write_text("preset: tiny\nbatch_size: 4\nmodel: {n_kv_heads: 2}\n")
    cfg, model, _, _ = resolve(str(y))
    assert cfg.batch_size == 4 and model.n_kv_heads == 2 and cfg.seq_len == 64
    assert cfg.fingerprint() != resolve(str(y), ["optim.lr=0.1"])[0].fingerprint()
    assert cfg.fingerprint() == resolve(str(y), ["steps=99", "log.every=3"])[0].fingerprint()
    for sets, msg in ((["optim.bogus=1"], "optim.bogus: unknown key"), (["optim.lr=-1"], "optim.lr"),
                      (["seq_len=4096"], "exceeds the preset's max_seq_len"), (["grad_accum=3"], "multiple of grad_accum"),
                      (["mesh.data=-1"], "at most one mesh axis"), (["optim"], "expected key.path=value")):
        with pytest.raises(ConfigError, match=msg) as e:
            resolve(None, sets, {"preset": "tiny"})
        assert "\n" not in str(e.value)
    y.write_text("preset: tiny\nsteps: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve(str(y))


def test_cli_reports_bad_flags_in_one_line(capsys):
    from train.cli import main
    assert main(["--preset", "tiny", "--set", "optim.schedule=linear", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "optim.schedule" in err and "\n" not in err
    assert main(["--preset", "tiny", "--dry-run"]) == 0
    assert "410.24K params" in capsys.readouterr().out
    assert main(["--list-presets"]) == 0
    assert "nano-1" in capsys.readouterr().out


# ---- runs ------------------------------------------------------------------------------

def test_loss_decreases_and_outputs_are_written(reference):
    run_dir, out = reference
    evals = [r for r in records(run_dir) if r["kind"] == "eval"]
    train = [r for r in records(run_dir) if r["kind"] == "train"]
    assert [r["step"] for r in evals] == [0, 5, 10, 15, 20] and len(train) == 20
    assert evals[-1]["loss"] < evals[0]["loss"] - 0.2, evals
    assert np.mean([r["loss"] for r in train[-5:]]) < np.mean([r["loss"] for r in train[:5]]) - 0.1
    assert evals[-1]["loss/markov"] < evals[0]["loss/markov"] - 0.5          # per-source validation loss
    recs = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    timed = [r for r in recs if r.get("kind") == "train" and r.get("tokens_per_s")]
    assert len(timed) >= 15 and all(0 < r["mfu"] for r in timed)
    nll = next(r for r in recs if r.get("kind") == "probe_nll")
    assert nll["bucket_start"][0] == 0 and sum(nll["count"]) > 0 and all(np.isfinite(nll["nll"]))
    kv = next(r for r in recs if r.get("kind") == "probe_kv")
    assert kv["lengths"] == [32, 64, 128] and all(0 <= a <= 1 for a in kv["accuracy"])
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["final_step"] == 20 and summary["eval"]["loss"] == evals[-1]["loss"]
    for f in ("report.md", "plots/training.png", "plots/nll_by_position.png", "plots/kv_retrieval.png"):
        assert os.path.getsize(os.path.join(run_dir, f)) > 0, f
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(os.path.join(run_dir, "tb")))
    assert "410.24K params" in out and "MFU" in out and "step     20/20" in out


def test_kill_9_and_resume_is_bitwise_identical(reference, tmp_path):
    ref_dir, _ = reference
    run_dir = tmp_path / "killed"
    extra = ("--set", "probes.enabled=false", "--set", "log.tensorboard=false")
    kill_at = random.randint(6, 18)
    proc = cli(run_dir, *extra, wait=False)
    metrics, ckpts = run_dir / "metrics.jsonl", run_dir / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        have_ckpt = ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir())
        steps = [r.get("step", 0) for r in read_jsonl(str(metrics)) if r.get("kind") == "train"]
        if have_ckpt and steps and max(steps) >= kill_at:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"run finished before the kill at step {kill_at}: " + proc.stdout.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(r["step"] for r in read_jsonl(str(metrics)) if r.get("kind") == "train")
    out = cli(run_dir, *extra)                                       # the same command again
    assert "resumed from checkpoint step" in out, out
    assert records(run_dir) == records(ref_dir), f"killed at step {killed_at}"
    # a changed config or changed data is refused instead of silently continuing
    assert subprocess.run([sys.executable, "-m", "train", *COMMON, "--run-dir", str(run_dir), *extra,
                           "--set", "optim.lr=0.1"], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                          capture_output=True, text=True).stderr.count("different config") == 1


def test_8_simulated_devices_match_1_device(reference, tmp_path):
    ref_dir, _ = reference
    run_dir = tmp_path / "mesh8"
    out = cli(run_dir, "--set", "mesh.data=4", "--set", "mesh.tensor=2", "--set", "mesh.fsdp=1",
              "--set", "probes.enabled=false", "--set", "log.tensorboard=false",
              xla_flags=f"--xla_force_host_platform_device_count=8 {O0}")
    assert "8 x cpu" in out and "data=4 x fsdp=1 x tensor=2" in out
    start = next(r for r in read_jsonl(str(run_dir / "metrics.jsonl")) if r.get("kind") == "run")
    layout = start["param_layout"]
    assert "'tensor'" in layout["['layers']['wq']"] and "'tensor'" in layout["['layers']['w_down']"]
    assert "'tensor'" not in layout["['layers']['wk']"]          # the single MQA key head is replicated
    a, b = records(ref_dir), records(run_dir)
    assert [(r["kind"], r["step"]) for r in a] == [(r["kind"], r["step"]) for r in b]
    for x, y in zip(a, b):
        for k in x:
            if k.startswith("loss") or k == "grad_norm":
                assert abs(x[k] - y[k]) <= 1e-4 * max(1.0, abs(x[k])), (x["kind"], x["step"], k, x[k], y[k])


def test_token_file_training_with_gradient_accumulation(tmp_path):
    """In-process: byte tokens of this repo's own sources, 2 micro-batches per step."""
    from train.data import write_byte_tokens
    from train.trainer import Trainer
    files = [os.path.join(ROOT, d, f) for d in ("model", "train") for f in sorted(os.listdir(os.path.join(ROOT, d)))
             if f.endswith(".py")]
    info = write_byte_tokens(files, str(tmp_path / "bytes.npy"))
    cfg, model, _, _ = resolve(None, ["data.kind=tokens", f"data.options.path={tmp_path / 'bytes.npy'}",
                                      f"data.options.eos_id={info['eos_id']}", "grad_accum=2", "steps=25",
                                      "eval.every=25", "checkpoint.every=25", "probes.enabled=false",
                                      "log.tensorboard=false", "log.plots=false", "log.peak_flops=1e11",
                                      f"run_dir={tmp_path / 'run'}", "optim.lr=1e-2"],
                               {"preset": "tiny"})
    model = model.model_copy(update={"vocab_size": 257})
    Trainer(cfg, model).run()
    evals = [r for r in read_jsonl(str(tmp_path / "run" / "metrics.jsonl")) if r.get("kind") == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 25
    assert evals[-1]["loss"] < evals[0]["loss"] - 1.0, evals            # bytes: unigram stats are learnt fast


def test_cudnn_attention_falls_back_when_unavailable(tmp_path, capsys):
    """``attention: auto`` picks cuDNN on GPUs; where cuDNN refuses (here: no GPU at all)
    the trainer compiles the XLA path instead of failing."""
    from train.trainer import Trainer
    cfg, model, _, _ = resolve(None, [f"run_dir={tmp_path}", "log.tensorboard=false"], {"preset": "tiny"})
    t = Trainer(cfg, model)
    t.init_or_restore()
    t.attn_impl = "cudnn"                      # what resolve_attention returns on a GPU in bf16
    assert t.compile_step() is not None and t.attn_impl == "xla"
    assert "cuDNN attention unavailable" in capsys.readouterr().out
